/* SPDX-License-Identifier: MIT */
/* main.c -- the orrery command line: run a script, -e, repl, test. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lualib.h>
#include <luajit.h>

#include "embed.h"
#include "host.h"

static const char usage[] =
    "usage: orrery [options] script.lua [args...]\n"
    "       orrery run script.lua [args...]\n"
    "       orrery -e 'code' [args...]\n"
    "       orrery repl\n"
    "       orrery attach SOCKET | tcp://HOST:PORT [--token-file FILE]\n"
    "       orrery test [paths...]\n"
    "       orrery saga ls|show|retry|skip JOURNAL [ID] [--json]\n"
    "\n"
    "options:\n"
    "  -e code     run code as the main coroutine\n"
    "  --console SOCKET | tcp://127.0.0.1:PORT\n"
    "              open a console on this unix socket, or on loopback TCP\n"
    "              with a token (orrery attach)\n"
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

/* Puts the script's directory first on package.path and package.cpath, so
 * that `orrery /srv/app/order.lua` finds /srv/app/httpc.lua whatever the
 * working directory, as python does with sys.path[0]. It goes ahead of
 * LUA_PATH / LUA_CPATH (which luaL_openlibs has already read, ";;"
 * expanded to the default) and of "./?.lua". The embedded searcher runs
 * before every path searcher, so a file cannot shadow an orrery.* module.
 * A directory that a template cannot spell (one with ';' or '?') is left
 * out rather than turned into a wrong template. */
static void add_script_dir(lua_State *L, const char *script) {
  const char *slash = strrchr(script, '/');
  size_t n = slash ? (size_t)(slash - script) + 1 : 0; /* keeps the '/' */
  if (memchr(script, ';', n) || memchr(script, '?', n)) return;
  if (n)
    lua_pushlstring(L, script, n);
  else
    lua_pushliteral(L, "./");
  const char *dir = lua_tostring(L, -1);
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s?.lua;%s?/init.lua;", dir, dir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pushfstring(L, "%s?.so;", dir);
  lua_getfield(L, -2, "cpath");
  lua_concat(L, 2);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 2);
}

/* -e code and the REPL have the runtime as the global `orrery`, so that
 * one-liners need no require; a script requires it like any module. */
static void set_orrery_global(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "orrery");
  lua_call(L, 1, 1);
  lua_setglobal(L, "orrery");
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
  if (script)
    add_script_dir(L, argv[first]);
  else if (code || !strcmp(modname, "orrery.repl"))
    set_orrery_global(L);
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

/* Creates the file that holds a TCP console's token: readable by this
 * user only, and never through a link someone else left at the path
 * (O_EXCL, O_NOFOLLOW). A regular file of ours that is there already (a
 * process with the same pid that did not clean up) is replaced. */
static int write_token_file(const char *path, const char *tok) {
  int fd =
      open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  struct stat st;
  if (fd < 0 && errno == EEXIST && lstat(path, &st) == 0 &&
      S_ISREG(st.st_mode) && st.st_uid == getuid() && unlink(path) == 0)
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  size_t n = strlen(tok);
  int ok = write(fd, tok, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
  if (close(fd) != 0 || !ok) {
    unlink(path);
    return -1;
  }
  return 0;
}

/* A TCP console's token: ORRERY_CONSOLE_TOKEN, or 32 random bytes in hex
 * written to ORRERY_CONSOLE_TOKEN_FILE, by default orrery-console-PID.token
 * in $XDG_RUNTIME_DIR (else $TMPDIR, else /tmp); file is then its path,
 * removed at exit. */
static int console_token(char *tok, size_t toksz, char *file, size_t filesz) {
  const char *env = getenv("ORRERY_CONSOLE_TOKEN");
  file[0] = 0;
  if (env && *env) {
    snprintf(tok, toksz, "%s", env);
    return 0;
  }
  unsigned char raw[32];
  if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
    fprintf(stderr, "orrery: cannot make a console token: %s\n",
            strerror(errno));
    return -1;
  }
  for (size_t i = 0; i < sizeof raw && 2 * i + 2 < toksz; i++)
    snprintf(tok + 2 * i, 3, "%02x", raw[i]);
  const char *path = getenv("ORRERY_CONSOLE_TOKEN_FILE");
  if (path && *path) {
    snprintf(file, filesz, "%s", path);
  } else {
    const char *dir = getenv("XDG_RUNTIME_DIR");
    if (!dir || !*dir) dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    snprintf(file, filesz, "%s/orrery-console-%d.token", dir, (int)getpid());
  }
  if (write_token_file(file, tok) != 0) {
    fprintf(stderr, "orrery: cannot write the console token to %s: %s\n", file,
            strerror(errno));
    file[0] = 0;
    return -1;
  }
  return 0;
}

/* The token file this process wrote, removed at exit also when a script
 * ends the process with os.exit (the process's, like the signal
 * dispositions). */
static char token_file[PATH_MAX];

static void remove_token_file(void) {
  if (token_file[0]) unlink(token_file);
}

/* Opens the console of --console / ORRERY_CONSOLE (orrery.console): a
 * unix socket, or tcp://host:port with a token (console_token). */
static int open_console(lua_State *L, const char *addr, char *file,
                        size_t filesz) {
  char tok[128];
  int tcp = !strncmp(addr, "tcp://", 6);
  if (tcp && console_token(tok, sizeof tok, file, filesz) != 0) return -1;
  if (file[0]) atexit(remove_token_file);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "orrery.console");
  if (lua_pcall(L, 1, 1, 0) != 0) goto fail;
  lua_getfield(L, -1, "listen");
  lua_pushstring(L, addr);
  if (tcp) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, tok);
    lua_setfield(L, -2, "token");
  } else {
    lua_pushnil(L);
  }
  if (lua_pcall(L, 2, 2, 0) != 0) goto fail;
  if (lua_isnil(L, -2)) {
    fprintf(stderr, "orrery: cannot open the console %s: %s\n", addr,
            lua_tostring(L, -1));
    return -1;
  }
  if (tcp) {
    lua_getfield(L, -2, "url");
    if (file[0])
      fprintf(stderr, "orrery: console on %s, token in %s\n",
              lua_tostring(L, -1), file);
    else
      fprintf(stderr,
              "orrery: console on %s, token from ORRERY_CONSOLE_TOKEN\n",
              lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 3);
  return 0;
fail:
  fprintf(stderr, "orrery: %s\n", lua_tostring(L, -1));
  return -1;
}

int main(int argc, char **argv) {
  const char *code = NULL, *modname = NULL;
  const char *console = getenv("ORRERY_CONSOLE");
  int first = 1;
  while (argc >= 3 && !strcmp(argv[1], "--console")) {
    console = argv[2];
    argv[2] = argv[0];
    argv += 2;
    argc -= 2;
  }
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
  } else if (!strcmp(argv[1], "saga")) {
    modname = "orrery.saga_cli";
    first = 2;
    console = NULL;
  } else if (!strcmp(argv[1], "attach")) {
    modname = "orrery.attach";
    first = 2;
    console = NULL;
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
  host_t *h = host_new();
  if (!h) {
    fputs("orrery: cannot create the runtime (out of memory)\n", stderr);
    return 1;
  }
  lua_State *L = h->L;
  install_searcher(L);

  int rc;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "orrery");
  if (lua_pcall(L, 1, 0, 0) != 0) {
    fprintf(stderr, "orrery: %s\n", lua_tostring(L, -1));
    rc = 1;
  } else if (console && *console &&
             open_console(L, console, token_file, sizeof token_file) != 0) {
    rc = 1;
  } else if (start_main(L, argc, argv, first, code, modname) != 0) {
    rc = 1;
  } else {
    rc = host_run(h);
  }
  fflush(stdout);
  repl_close(h);
  host_free(h);
  return rc;
}
