/* SPDX-License-Identifier: MIT */
/* main.c -- the orrery command line: run a script, -e, repl, test. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>
#include <luajit.h>

#include "embed.h"
#include "host.h"

static const char usage[] =
    "usage: orrery [options] script.lua [args...]\n"
    "       orrery run script.lua [args...]\n"
    "       orrery -e 'code' [args...]\n"
    "       orrery repl\n"
    "       orrery test [paths...]\n"
    "\n"
    "options:\n"
    "  -e code     run code as the main coroutine\n"
    "  -v          print the version and exit\n"
    "  -h, --help  print this help and exit\n"
    "\n"
    "The script runs as the main coroutine of a scheduler with Go-style\n"
    "channels, select, timers and contexts (require \"orrery\"). The process\n"
    "exits when the main coroutine returns; an error that escapes any\n"
    "coroutine exits non-zero with a traceback. SIGINT/SIGTERM cancel the\n"
    "root context and allow a grace period; SIGQUIT prints every coroutine.\n";

/* package.loaders entry that finds modules embedded from lua/. */
static int embedded_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const embed_t *e = embed_find(name);
  if (!e) {
    lua_pushfstring(L, "\n\tno embedded module '%s'", name);
    return 1;
  }
  lua_pushfstring(L, "=[orrery] %s", e->path);
  if (luaL_loadbuffer(L, e->src, e->len, lua_tostring(L, -1)) != 0)
    return lua_error(L);
  return 1;
}

static void install_searcher(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaders");
  int n = (int)lua_objlen(L, -1);
  for (int i = n; i >= 2; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushcfunction(L, embedded_searcher);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
  modules_preload(L);
}

static void on_grace(uv_timer_t *t) {
  host_t *h = t->data;
  fprintf(stderr, "orrery: grace period over, exiting\n");
  sched_exit(h, 128 + h->shutdown_sig);
}

static void on_signal(uv_signal_t *s, int signum) {
  host_t *h = s->data;
  if (signum == SIGQUIT) {
    fprintf(stderr, "SIGQUIT: coroutine dump\n\n");
    sched_dump(h);
    return;
  }
  if (h->shutdown_sig) {
    sched_exit(h, 128 + signum); /* a second signal: stop now */
    return;
  }
  h->shutdown_sig = signum;
  lcore_dispatch(h, "signal", signum);
  h->grace_timer.data = h;
  uv_timer_start(&h->grace_timer, on_grace, (uint64_t)(h->grace * 1000), 0);
}

static void close_walk(uv_handle_t *hd, void *arg) {
  (void)arg;
  if (!uv_is_closing(hd)) uv_close(hd, NULL);
}

/* Loads the entry chunk and starts it as the main coroutine. */
static int start_main(lua_State *L, int argc, char **argv, int first,
                      const char *code, const char *modname) {
  /* arg: arg[0] is the script, arg[1..] its arguments, as in `lua`. */
  int script = !code && !modname;
  lua_createtable(L, argc - first, 1);
  if (!script) {
    lua_pushstring(L, code ? "-e" : modname);
    lua_rawseti(L, -2, 0);
  }
  for (int i = first; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - first + !script);
  }
  lua_setglobal(L, "arg");
  lua_getglobal(L, "require");
  lua_pushliteral(L, "orrery.core");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "spawn_main");
  lua_remove(L, -2);
  int st;
  if (code) {
    st = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
  } else if (modname) {
    lua_getglobal(L, "require");
    lua_pushstring(L, modname);
    st = lua_pcall(L, 1, 1, 0);
  } else {
    st = luaL_loadfile(L, argv[first]);
  }
  if (st != 0) {
    fprintf(stderr, "orrery: %s\n", lua_tostring(L, -1));
    return 1;
  }
  int nargs = 0;
  for (int i = first + script; i < argc; i++, nargs++)
    lua_pushstring(L, argv[i]);
  lua_call(L, nargs + 1, 0);
  return 0;
}

int main(int argc, char **argv) {
  const char *code = NULL, *modname = NULL;
  int first = 1;
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  if (!strcmp(argv[1], "-v") || !strcmp(argv[1], "--version")) {
    printf("orrery %s (%s)\n", ORRERY_VERSION, LUAJIT_VERSION);
    return 0;
  }
  if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    fputs(usage, stdout);
    return 0;
  }
  if (!strcmp(argv[1], "-e")) {
    if (argc < 3) {
      fputs("orrery: -e needs an argument\n", stderr);
      return 2;
    }
    code = argv[2];
    first = 3;
  } else if (!strcmp(argv[1], "repl")) {
    modname = "orrery.repl";
    first = 2;
  } else if (!strcmp(argv[1], "test")) {
    modname = "orrery.testrunner";
    first = 2;
  } else if (!strcmp(argv[1], "run")) {
    if (argc < 3) {
      fputs(usage, stderr);
      return 2;
    }
    first = 2;
  } else if (argv[1][0] == '-' && argv[1][1]) {
    fprintf(stderr, "orrery: unknown option '%s'\n\n%s", argv[1], usage);
    return 2;
  }

  signal(SIGPIPE, SIG_IGN);
  uv_loop_t loop;
  uv_loop_init(&loop);
  alloc_t *alloc;
  lua_State *L = alloc_newstate(&alloc);
  if (!L) {
    fputs("orrery: cannot create Lua state\n", stderr);
    return 1;
  }
  host_t *h = malloc(sizeof(*h));
  sched_init(h, L, &loop);
  luaL_openlibs(L);
  install_searcher(L);

  static const int sigs[3] = {SIGINT, SIGTERM, SIGQUIT};
  for (int i = 0; i < 3; i++) {
    uv_signal_init(&loop, &h->sig[i]);
    h->sig[i].data = h;
    uv_signal_start(&h->sig[i], on_signal, sigs[i]);
    uv_unref((uv_handle_t *)&h->sig[i]);
  }
  uv_timer_init(&loop, &h->grace_timer);

  int rc;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "orrery");
  if (lua_pcall(L, 1, 0, 0) != 0) {
    fprintf(stderr, "orrery: %s\n", lua_tostring(L, -1));
    rc = 1;
  } else if (start_main(L, argc, argv, first, code, modname) != 0) {
    rc = 1;
  } else {
    rc = sched_run(h);
  }
  fflush(stdout);
  repl_close(h);
  lua_close(L);
  alloc_free(alloc);
  uv_walk(&loop, close_walk, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  sched_close(h);
  free(h);
  return rc;
}
