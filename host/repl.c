/* SPDX-License-Identifier: MIT */
/* repl.c -- non-blocking line input for `orrery repl` (libedit on a tty). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include "host.h"

/* The REPL coroutine parks in core.readline() while the loop keeps running
 * other coroutines. On a terminal, libedit's blocking readline() runs in a
 * thread of its own that reads one line per request and hands it over
 * through a uv_async (libedit's callback interface loses type-ahead when
 * the handler is swapped between lines). On a pipe, a uv_poll feeds a
 * plain line splitter. Input that cannot be polled, such as a regular
 * file, is read with blocking stdio. */
struct repl_s {
  uv_poll_t poll;
  int polling, tty, eof;
  uv_thread_t thread; /* tty: the reader thread and its handshake */
  uv_sem_t want;
  uv_async_t async;
  int thread_started, async_open;
  char prompt[64];
  char *tline; /* written by the reader thread before uv_async_send */
  int teof;
  co_t *waiter;
  char *line; /* a completed line waiting for core.readline */
  int have_line;
  char *buf; /* pipe mode: bytes read but not yet split */
  size_t len, cap;
};

static struct repl_s *repl_of(host_t *h) {
  if (!h->repl) {
    h->repl = calloc(1, sizeof(struct repl_s));
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

static void reader_thread(void *arg) {
  struct repl_s *r = arg;
  for (;;) {
    uv_sem_wait(&r->want);
    char *line = readline(r->prompt);
    if (line && *line) add_history(line);
    r->tline = line;
    r->teof = line == NULL;
    uv_async_send(&r->async);
    if (!line) return;
  }
}

static void on_async(uv_async_t *a) {
  host_t *h = a->data;
  struct repl_s *r = h->repl;
  char *line = r->tline;
  r->tline = NULL;
  deliver(h, line, r->teof);
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

/* core.readline(prompt) -> line | nil at end of input | ORRERY_PARKED,
 * slot: the caller waits (sched.await in lua/orrery/repl.lua) and calls
 * again. */
int repl_readline(lua_State *L) {
  host_t *h = host_current;
  const char *prompt = luaL_optstring(L, 1, "> ");
  struct repl_s *r = repl_of(h);
  if (r->have_line) {
    r->have_line = 0;
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
    }
    if (!r->thread_started) {
      uv_thread_create(&r->thread, reader_thread, r);
      r->thread_started = 1;
    }
    uv_sem_post(&r->want);
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
  free(h->repl->buf);
  free(h->repl->line);
  /* The poll handle lives inside the struct: free it once closed. */
  uv_run(h->loop, UV_RUN_NOWAIT);
  free(h->repl);
  h->repl = NULL;
}
