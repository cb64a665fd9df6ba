/* SPDX-License-Identifier: MIT */
/* repl.c -- non-blocking line input for `orrery repl` (libedit on a tty). */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include <editline/readline.h>

#include "host.h"

/* The REPL coroutine parks in core.readline() while the loop keeps running
 * other coroutines. On a terminal, libedit's blocking readline() runs in a
 * thread of its own that reads one line per request and hands it over
 * through a uv_async (libedit's callback interface loses type-ahead when
 * the handler is swapped between lines). On a pipe, a uv_poll feeds a
 * plain line splitter. Input that cannot be polled, such as a regular
 * file, is read with blocking stdio.
 *
 * Tab completion runs in the reader thread, inside readline(), but the
 * candidates come from Lua, on the loop: the thread hands the text before
 * the cursor over through the same uv_async and waits on a semaphore;
 * core.readline() returns it to the Lua caller (false, text), which
 * computes the candidates (in the REPL, or by asking the service over the
 * console) and passes them with its next call, which posts the
 * semaphore.
 *
 * Ctrl-C at the prompt drops the line being edited: the loop (the REPL's
 * interrupt handler, core.readline(false)) writes to a pipe that the
 * thread's character reader polls next to the terminal; the reader then
 * ends the line as Enter would, and the line is handed over as dropped. */
struct repl_s {
  uv_poll_t poll;
  int polling, tty, eof;
  uv_thread_t thread; /* tty: the reader thread and its handshake */
  uv_sem_t want;
  uv_async_t async;
  int thread_started, async_open;
  int reading; /* the thread is in readline() for the current request */
  char prompt[64];
  char *tline; /* written by the reader thread before uv_async_send */
  int teof, tready, tdropped;
  int wake[2]; /* the pipe that asks the thread to drop the line */
  int in;      /* the terminal, opened again without blocking */
  int dropped; /* the line waiting for core.readline was dropped */
  co_t *waiter;
  char *line; /* a completed line waiting for core.readline */
  int have_line;
  char *tcreq;    /* written by the thread: the text to the cursor */
  char *creq;     /* the loop's copy, once on_async took it over */
  int creq_out;   /* creq was handed to Lua, whose next call answers it */
  uv_sem_t cdone; /* posted when cans holds the answer */
  char **cans;    /* the candidates, NULL-terminated, for the thread */
  char *buf;      /* pipe mode: bytes read but not yet split */
  size_t len, cap;
};

/* libedit's completion callback takes no argument, and its state is the
 * process's anyway: the REPL whose thread is reading, and libedit's
 * variables. Those are found at run time: naming them in the binary would
 * make the linker copy them into its dynamic symbol table, which holds
 * the FFI surface and nothing else (tests/lua/exports_test.lua). */
static struct repl_s *repl_completing;
static struct {
  char **line_buffer;
  int *completion_over, *append_character, *catch_signals;
  const char **basic_breaks;
  char **completer_breaks;
  rl_completion_func_t **attempted;
  int (**getc)(FILE *);
} rl;

static int rl_find(void) {
  rl.line_buffer = dlsym(RTLD_DEFAULT, "rl_line_buffer");
  rl.completion_over = dlsym(RTLD_DEFAULT, "rl_attempted_completion_over");
  rl.append_character = dlsym(RTLD_DEFAULT, "rl_completion_append_character");
  rl.catch_signals = dlsym(RTLD_DEFAULT, "rl_catch_signals");
  rl.basic_breaks = dlsym(RTLD_DEFAULT, "rl_basic_word_break_characters");
  rl.completer_breaks =
      dlsym(RTLD_DEFAULT, "rl_completer_word_break_characters");
  rl.attempted = dlsym(RTLD_DEFAULT, "rl_attempted_completion_function");
  rl.getc = dlsym(RTLD_DEFAULT, "rl_getc_function");
  return rl.line_buffer && rl.completion_over && rl.append_character &&
         rl.catch_signals && rl.basic_breaks && rl.completer_breaks &&
         rl.attempted && rl.getc;
}

static struct repl_s *repl_of(host_t *h) {
  if (!h->repl) {
    h->repl = calloc(1, sizeof(struct repl_s));
    h->repl->wake[0] = h->repl->wake[1] = h->repl->in = -1;
    h->repl->tty = isatty(0);
    if (!h->repl->tty && uv_poll_init(h->loop, &h->repl->poll, 0) == 0) {
      h->repl->polling = 1;
      h->repl->poll.data = h;
    }
  }
  return h->repl;
}

static void deliver(host_t *h, char *line, int eof) {
  struct repl_s *r = h->repl;
  r->line = line;
  r->have_line = 1;
  r->eof = eof;
  if (r->polling) uv_poll_stop(&r->poll);
  if (r->waiter) {
    co_t *co = r->waiter;
    r->waiter = NULL;
    sched_wake(h, co, 0);
  }
}

/* The longest common prefix of the candidates, what Tab inserts. */
static char *common_prefix(char **c) {
  size_t n = strlen(c[0]);
  for (int i = 1; c[i]; i++) {
    size_t k = 0;
    while (k < n && c[i][k] == c[0][k]) k++;
    n = k;
  }
  char *p = malloc(n + 1);
  if (p) {
    memcpy(p, c[0], n);
    p[n] = 0;
  }
  return p;
}

/* Runs in the reader thread, inside readline(). Returns libedit's matches:
 * the replacement for the word, then the candidates, NULL-terminated, all
 * malloc'ed (libedit frees them); NULL when there are none. */
static char **complete(const char *text, int start, int end) {
  struct repl_s *r = repl_completing;
  (void)text;
  (void)start;
  *rl.completion_over = 1; /* no file names instead */
  /* Only the reader thread asks the loop; a blocking readline() on the
   * loop's own thread (outside a coroutine) would wait for itself. */
  uv_thread_t self = uv_thread_self();
  if (!r || end < 0 || !uv_thread_equal(&self, &r->thread)) return NULL;
  r->tcreq = strndup(*rl.line_buffer, (size_t)end);
  if (!r->tcreq) return NULL;
  uv_async_send(&r->async);
  uv_sem_wait(&r->cdone);
  char **c = r->cans;
  r->cans = NULL;
  if (!c || !c[0]) {
    free(c);
    return NULL;
  }
  int n = 0;
  while (c[n]) n++;
  char **m = malloc(sizeof(char *) * (size_t)(n + 2));
  char *lcp = common_prefix(c);
  if (!m || !lcp) {
    for (int i = 0; i < n; i++) free(c[i]);
    free(c);
    free(m);
    free(lcp);
    return NULL;
  }
  m[0] = lcp;
  if (n == 1) { /* one candidate: it is the replacement */
    free(c[0]);
    m[1] = NULL;
  } else {
    memcpy(m + 1, c, sizeof(char *) * (size_t)n);
    m[n + 1] = NULL;
  }
  free(c);
  return m;
}

/* Every character but those of a name, a field or a method call breaks a
 * word, so that the word libedit completes is what complete() in Lua
 * replaces: `orrery.sl`, `s:up`. */
static char word_breaks[128];

/* libedit's character reader, in the reader thread: one character from
 * the terminal, decoded in the locale as libedit's own reader does; or,
 * when the loop asked to drop the line, the end of the line. */
static int repl_getc(FILE *f) {
  struct repl_s *r = repl_completing;
  int fd = r && r->in >= 0 ? r->in : fileno(f ? f : stdin);
  char mb[MB_LEN_MAX];
  size_t n = 0;
  for (;;) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {r ? r->wake[0] : -1, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return EOF;
    }
    if (p[1].revents & POLLIN) {
      char b[64];
      while (read(r->wake[0], b, sizeof b) > 0) {
      }
      r->tdropped = 1;
      return '\n';
    }
    if (!p[0].revents) continue;
    char c;
    ssize_t k = read(fd, &c, 1);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k <= 0) return EOF;
    mb[n++] = c;
    wchar_t wc;
    mbstate_t st;
    memset(&st, 0, sizeof st);
    size_t m = mbrtowc(&wc, mb, n, &st);
    if (m == (size_t)-2 && n < sizeof mb) continue; /* more bytes to come */
    if (m == (size_t)-1 || m == (size_t)-2) {       /* not a character */
      n = 0;
      continue;
    }
    return (int)wc;
  }
}

static void setup_completion(struct repl_s *r) {
  if (!rl_find()) return; /* plain line editing */
  int n = 0;
  for (int c = 1; c < 128 && n < (int)sizeof(word_breaks) - 1; c++)
    if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
        !(c >= '0' && c <= '9') && c != '_' && c != '.' && c != ':' && c != 127)
      word_breaks[n++] = (char)c;
  *rl.basic_breaks = word_breaks;
  *rl.completer_breaks = word_breaks;
  *rl.append_character = '\0';
  *rl.attempted = complete;
  /* SIGINT is the loop's (an interrupt, see loop.c); libedit's handler
   * would put the terminal back in line mode behind the editor's back. */
  *rl.catch_signals = 0;
  /* The terminal's characters as its locale encodes them (libedit reads
   * bytes of the "C" locale's as nothing, and drops them). LuaJIT's
   * string functions do not depend on the locale. */
  setlocale(LC_CTYPE, "");
  /* A file description of our own, so that reading never blocks (Ctrl-C
   * flushes the terminal's input between poll() and read(), and a read
   * that blocked would not see the pipe) and the shell's stays as it
   * was. */
  const char *tty = ttyname(0);
  if (tty) r->in = open(tty, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (pipe(r->wake) == 0) {
    fcntl(r->wake[0], F_SETFL, O_NONBLOCK);
    fcntl(r->wake[0], F_SETFD, FD_CLOEXEC);
    fcntl(r->wake[1], F_SETFD, FD_CLOEXEC);
    *rl.getc = repl_getc;
  }
  repl_completing = r;
}

/* Hands the candidates in the table at index idx to the reader thread
 * waiting in complete(); a missing or partly bad list answers with what
 * it holds (strings), so that the thread is never left waiting. */
static void answer(lua_State *L, struct repl_s *r, int idx) {
  int n = lua_istable(L, idx) ? (int)lua_objlen(L, idx) : 0;
  char **c = calloc((size_t)n + 1, sizeof(char *));
  int k = 0;
  for (int i = 1; c && i <= n; i++) {
    lua_rawgeti(L, idx, i);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (s && (c[k] = strdup(s))) k++;
    lua_pop(L, 1);
  }
  r->cans = c;
  free(r->creq);
  r->creq = NULL;
  r->creq_out = 0;
  uv_sem_post(&r->cdone);
}

static void reader_thread(void *arg) {
  struct repl_s *r = arg;
  for (;;) {
    uv_sem_wait(&r->want);
    char *line = readline(r->prompt);
    if (r->tdropped && line) { /* Ctrl-C: the line is not kept */
      free(line);
      line = strdup("");
    } else if (line && *line) {
      add_history(line);
    }
    r->tline = line;
    r->teof = line == NULL;
    r->tready = 1;
    uv_async_send(&r->async);
    if (!line) return;
  }
}

/* A line, or a completion request (libuv may fold two sends into one
 * call, but the thread waits after each, so there is one at a time). */
static void on_async(uv_async_t *a) {
  host_t *h = a->data;
  struct repl_s *r = h->repl;
  if (r->tready) {
    char *line = r->tline;
    r->tline = NULL;
    r->tready = 0;
    r->reading = 0;
    r->dropped = r->tdropped && line;
    r->tdropped = 0;
    deliver(h, line, r->teof);
  } else if (r->tcreq) {
    r->creq = r->tcreq;
    r->tcreq = NULL;
    if (!r->waiter) return; /* core.readline finds it when next called */
    co_t *co = r->waiter;
    r->waiter = NULL;
    sched_wake(h, co, 0);
  }
}

/* Splits one line off the pipe buffer, if a whole one is there. */
static int split_line(struct repl_s *r, char **out) {
  char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
  if (!nl) return 0;
  size_t n = (size_t)(nl - r->buf);
  char *s = malloc(n + 1);
  memcpy(s, r->buf, n);
  s[n] = 0;
  memmove(r->buf, nl + 1, r->len - n - 1);
  r->len -= n + 1;
  *out = s;
  return 1;
}

static void on_poll(uv_poll_t *p, int status, int events) {
  host_t *h = p->data;
  struct repl_s *r = h->repl;
  if (r->cap - r->len < 4096) {
    r->cap = r->cap ? r->cap * 2 : 8192;
    r->buf = realloc(r->buf, r->cap);
  }
  ssize_t n = read(0, r->buf + r->len, r->cap - r->len);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  char *line;
  if (n > 0) {
    r->len += (size_t)n;
    if (split_line(r, &line)) deliver(h, line, 0);
    return;
  }
  if (r->len) { /* last line without a newline */
    line = malloc(r->len + 1);
    memcpy(line, r->buf, r->len);
    line[r->len] = 0;
    r->len = 0;
    deliver(h, line, 0);
    return;
  }
  deliver(h, NULL, 1);
}

static void unpark_repl(co_t *co, void *data) {
  host_t *h = data;
  if (h->repl && h->repl->waiter == co) {
    h->repl->waiter = NULL;
    if (h->repl->polling) uv_poll_stop(&h->repl->poll);
  }
}

/* Asks the reader thread to drop the line being edited (Ctrl-C at the
 * prompt); false when no line is being edited at a terminal. */
static int drop_line(lua_State *L, struct repl_s *r) {
  int asked = 0;
  if (r->tty && r->reading && r->wake[1] >= 0) {
    char c = 'i';
    asked = write(r->wake[1], &c, 1) == 1;
  }
  lua_pushboolean(L, asked);
  return 1;
}

/* core.readline(prompt [, candidates]) -> line | nil at end of input |
 * true: the line was dropped by Ctrl-C | false, text: Tab was pressed,
 * text is the line up to the cursor, and the next call passes the
 * candidates (a list of strings) | ORRERY_PARKED, slot: the caller waits
 * (sched.await in eval.readline) and calls again.
 * core.readline(false) -> asked: drops the line being edited at the
 * terminal, whose reader then gets true. */
int repl_readline(lua_State *L) {
  host_t *h = host_current;
  struct repl_s *r = repl_of(h);
  if (lua_isboolean(L, 1) && !lua_toboolean(L, 1)) return drop_line(L, r);
  const char *prompt = luaL_optstring(L, 1, "> ");
  if (r->creq_out) answer(L, r, 2);
  if (r->creq) {
    r->creq_out = 1;
    lua_pushboolean(L, 0);
    lua_pushstring(L, r->creq);
    return 2;
  }
  if (r->have_line) {
    r->have_line = 0;
    if (r->dropped) {
      r->dropped = 0;
      free(r->line);
      r->line = NULL;
      lua_pushboolean(L, 1);
      return 1;
    }
    if (r->line) {
      lua_pushstring(L, r->line);
      free(r->line);
      r->line = NULL;
      return 1;
    }
    lua_pushnil(L);
    return 1;
  }
  if (r->eof) {
    lua_pushnil(L);
    return 1;
  }
  char *line;
  if (!r->tty && split_line(r, &line)) {
    lua_pushstring(L, line);
    free(line);
    return 1;
  }
  if ((!r->tty && !r->polling) || !h->current) {
    /* Blocking fallback: a regular file on stdin. */
    char *got = NULL;
    size_t cap = 0;
    if (r->tty) {
      got = readline(prompt);
      if (got && *got) add_history(got);
    } else if (getline(&got, &cap, stdin) < 0) {
      free(got);
      got = NULL;
    }
    if (!got) {
      r->eof = 1;
      lua_pushnil(L);
      return 1;
    }
    size_t n = strlen(got);
    if (n && got[n - 1] == '\n') got[n - 1] = 0;
    lua_pushstring(L, got);
    free(got);
    return 1;
  }
  r->waiter = h->current;
  if (r->tty) {
    snprintf(r->prompt, sizeof(r->prompt), "%s", prompt);
    if (!r->async_open) {
      uv_async_init(h->loop, &r->async, on_async);
      r->async.data = h;
      r->async_open = 1;
      uv_sem_init(&r->want, 0);
      uv_sem_init(&r->cdone, 0);
      setup_completion(r);
    }
    if (!r->thread_started) {
      uv_thread_create(&r->thread, reader_thread, r);
      r->thread_started = 1;
    }
    if (!r->reading) { /* after a completion, readline() goes on */
      r->reading = 1;
      uv_sem_post(&r->want);
    }
  } else {
    uv_poll_start(&r->poll, UV_READABLE | UV_DISCONNECT, on_poll);
  }
  co_t *co = h->current;
  sched_park(h, co, WAIT_IO, "stdin", r);
  sched_undo(co, unpark_repl, h);
  lua_pushinteger(L, ORRERY_PARKED);
  lua_pushinteger(L, co->slot);
  return 2;
}

void repl_close(host_t *h) {
  if (!h->repl) return;
  if (h->repl->polling) uv_close((uv_handle_t *)&h->repl->poll, NULL);
  if (h->repl->async_open) uv_close((uv_handle_t *)&h->repl->async, NULL);
  /* A reader thread blocked in readline() is left to die with the
   * process; one that saw the end of input has returned. */
  if (h->repl->thread_started && h->repl->teof)
    uv_thread_join(&h->repl->thread);
  repl_completing = NULL;
  free(h->repl->buf);
  free(h->repl->line);
  free(h->repl->creq);
  /* The pipe is left open while a reader thread may still poll it. */
  if (h->repl->wake[0] >= 0 && h->repl->teof) {
    close(h->repl->wake[0]);
    close(h->repl->wake[1]);
    if (h->repl->in >= 0) close(h->repl->in);
  }
  /* The poll handle lives inside the struct: free it once closed. */
  uv_run(h->loop, UV_RUN_NOWAIT);
  free(h->repl);
  h->repl = NULL;
}
