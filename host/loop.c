/* SPDX-License-Identifier: MIT */
/* loop.c -- one worker's run loop: the scheduler and libuv taking turns,
 * deadlock detection, signals and the shutdown grace period. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "host.h"

/* Signals. SIGINT, SIGTERM and SIGQUIT (and SIGHUP once the Lua side asks
 * for it, loop_watch_hup) are caught by a plain signal handler, not in the
 * loop: a coroutine stuck in `while true do end` never lets the loop run
 * again, and a second SIGINT/SIGTERM must still end the process at once,
 * as in Go. The first one (and every SIGQUIT and SIGHUP) is passed to the
 * loop through an async handle (uv_async_send is async-signal-safe),
 * which starts the graceful shutdown there (or the dump, or "hup").
 *
 * Signal dispositions belong to the process, so the first worker that
 * starts takes them: sig_target is the one process-wide static of the
 * loop, set once and cleared when that worker closes. */
static struct loop_s *_Atomic sig_target;

/* The watchdog thread (see loop_watchdog). */
typedef struct {
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cv;
  int running, stop;
  double timeout;
  int action;
} watchdog_t;

/* What the loop owns besides the scheduler: the signal relay, the grace
 * timer and the watchdog. Allocated by loop_init, freed by loop_close
 * once every handle has been closed and the watchdog has stopped. */
struct loop_s {
  host_t *h;
  uv_async_t relay;
  volatile sig_atomic_t nshutdown; /* SIGINT/SIGTERM received */
  volatile sig_atomic_t first_sig, quit;
  volatile sig_atomic_t interactive, interrupts;
  volatile sig_atomic_t hups; /* SIGHUP received, not yet relayed */
  int hup_caught;             /* our handler is installed for SIGHUP */
  int shutdown_sig; /* the first SIGINT/SIGTERM, once the loop has seen it */
  double grace;
  uv_timer_t grace_timer;
  watchdog_t wd;
  struct sigaction old[3], old_hup;
};

static const int sigs[3] = {SIGINT, SIGTERM, SIGQUIT};

void loop_dump(host_t *h) {
  host_up(h, "dump", 0);
}

static void on_grace(uv_timer_t *t) {
  host_t *h = t->data;
  fprintf(stderr, "orrery: grace period over, exiting\n");
  sched_exit(h, 128 + h->lp->shutdown_sig);
}

/* Runs on the loop after the handler relayed signals. */
static void on_relay(uv_async_t *a) {
  struct loop_s *lp = a->data;
  host_t *h = lp->h;
  if (lp->interrupts) {
    lp->interrupts = 0;
    /* The loop runs, so no Lua code was computing: an interrupt hook set
     * by the handler must not fire in the Lua handler below instead. */
    lua_sethook(h->L, NULL, 0, 0);
    host_up(h, "interrupt", SIGINT);
  }
  if (lp->quit) {
    lp->quit = 0;
    fprintf(stderr, "SIGQUIT: coroutine dump\n\n");
    loop_dump(h);
  }
  if (lp->hups) {
    lp->hups = 0;
    host_up(h, "hup", SIGHUP);
  }
  if (lp->nshutdown && !lp->shutdown_sig) {
    int signum = lp->first_sig;
    lp->shutdown_sig = signum;
    host_up(h, "signal", signum);
    lp->grace_timer.data = h;
    uv_timer_start(&lp->grace_timer, on_grace, (uint64_t)(lp->grace * 1000), 0);
  }
}

static void write_str(const char *s) {
  ssize_t r = write(2, s, strlen(s));
  (void)r;
}

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted");
}

static void on_signal(int signum) {
  struct loop_s *lp = atomic_load(&sig_target);
  if (!lp) return;
  int saved = errno;
  if (signum == SIGHUP) {
    lp->hups = 1;
  } else if (signum == SIGINT && lp->interactive) {
    /* Lua code that computes (rather than waits) is stopped with an
     * error at its next interpreted instruction, as the luajit binary
     * does; waits are ended by the Lua side's "interrupt" handler. */
    host_t *h = lp->h;
    if (!atomic_load(&h->polling)) {
      co_t *co = *(co_t *volatile *)&h->current;
      lua_sethook(co ? co->L : h->L, interrupt_hook,
                  LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    }
    lp->interrupts = 1;
  } else if (signum == SIGQUIT) {
    lp->quit = 1;
  } else if (lp->nshutdown++ == 0) {
    lp->first_sig = signum;
  } else {
    /* A second SIGINT/SIGTERM: stop now, whatever the loop is doing. */
    write_str("orrery: second signal, exiting now\n");
    _exit(128 + signum);
  }
  uv_async_send(&lp->relay);
  errno = saved;
}

static void relay_action(struct sigaction *sa) {
  memset(sa, 0, sizeof(*sa));
  sa->sa_handler = on_signal;
  sigemptyset(&sa->sa_mask);
  sa->sa_flags = SA_RESTART;
}

static void install_signals(struct loop_s *lp) {
  struct loop_s *none = NULL;
  if (!atomic_compare_exchange_strong(&sig_target, &none, lp)) return;
  struct sigaction sa;
  relay_action(&sa);
  for (int i = 0; i < 3; i++) sigaction(sigs[i], &sa, &lp->old[i]);
}

static void remove_signals(struct loop_s *lp) {
  if (atomic_load(&sig_target) != lp) return;
  for (int i = 0; i < 3; i++) sigaction(sigs[i], &lp->old[i], NULL);
  if (lp->hup_caught) sigaction(SIGHUP, &lp->old_hup, NULL);
  lp->hup_caught = 0;
  atomic_store(&sig_target, NULL);
}

/* SIGHUP ends the process (its default) until something asks to be told
 * instead (orrery.on_hup, a TLS listener's certificate reload); from then
 * on it is relayed to Lua as "hup" and the process keeps running. Only
 * the worker that holds the signal dispositions can take it. Returns 0,
 * or -1 when another worker holds them. */
int loop_watch_hup(host_t *h) {
  struct loop_s *lp = h->lp;
  if (atomic_load(&sig_target) != lp) return -1;
  if (lp->hup_caught) return 0;
  struct sigaction sa;
  relay_action(&sa);
  sigaction(SIGHUP, &sa, &lp->old_hup);
  lp->hup_caught = 1;
  return 0;
}

int loop_init(host_t *h) {
  struct loop_s *lp = calloc(1, sizeof(*lp));
  if (!lp) return -1;
  h->lp = lp;
  lp->h = h;
  lp->grace = 5.0;
  uv_timer_init(h->loop, &h->uvtimer);
  uv_unref((uv_handle_t *)&h->uvtimer);
  uv_async_init(h->loop, &lp->relay, on_relay);
  lp->relay.data = lp;
  /* Signals keep the loop alive only once something waits for them. */
  uv_unref((uv_handle_t *)&lp->relay);
  uv_timer_init(h->loop, &lp->grace_timer);
  uv_mutex_init(&lp->wd.mu);
  uv_cond_init(&lp->wd.cv);
  install_signals(lp);
  const char *wd = getenv("ORRERY_WATCHDOG");
  if (wd && *wd) {
    char *end;
    double t = strtod(wd, &end);
    int action = LOOP_WD_REPORT;
    if (*end == ':') {
      if (!strcmp(end + 1, "interrupt"))
        action = LOOP_WD_INTERRUPT;
      else if (!strcmp(end + 1, "exit"))
        action = LOOP_WD_EXIT;
      else if (strcmp(end + 1, "report"))
        t = -1;
    } else if (*end) {
      t = -1;
    }
    if (t > 0)
      loop_watchdog(h, t, action);
    else
      fprintf(stderr,
              "orrery: ignoring ORRERY_WATCHDOG=%s (expected "
              "SECONDS[:report|interrupt|exit])\n",
              wd);
  }
  return 0;
}

/* SIGINT and SIGTERM keep the loop alive from now on, so that a process
 * whose only remaining wait is for a shutdown signal (root:done()) is not
 * reported as deadlocked. */
void loop_watch_signals(host_t *h) {
  uv_ref((uv_handle_t *)&h->lp->relay);
}

void loop_set_grace(host_t *h, double secs) {
  h->lp->grace = secs;
}

void loop_set_interactive(host_t *h, int on) {
  h->lp->interactive = on;
  h->panic_continue = (uint8_t)on;
}

/* -- The watchdog --
 *
 * A thread that looks at the scheduler's beat every quarter of the timeout.
 * When the beat has not moved for the whole timeout while the loop is not
 * blocked in its poll, one coroutine (or a timer callback) has kept the
 * only thread busy that long: every other coroutine, connection and timer
 * is frozen. The thread reports the coroutine on stderr and, as
 * configured, interrupts it or ends the process so that a supervisor
 * restarts it. */

static void wd_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "watchdog: interrupted, the loop was blocked too long");
}

static void wd_report(host_t *h, double secs, const char *what) {
  co_t *co = *(co_t *volatile *)&h->current;
  char buf[512];
  if (co)
    snprintf(buf, sizeof buf,
             "orrery: watchdog: the loop has not completed a turn for %.1fs: "
             "coroutine %llu (created at %s) is running; %s\n",
             secs, (unsigned long long)co->id, co->site ? co->site : "?", what);
  else
    snprintf(buf, sizeof buf,
             "orrery: watchdog: the loop has not completed a turn for %.1fs "
             "(outside any coroutine: a timer or signal callback); %s\n",
             secs, what);
  write_str(buf);
}

static void wd_main(void *arg) {
  host_t *h = arg;
  watchdog_t *wd = &h->lp->wd;
  uint32_t last = atomic_load_explicit(&h->beat, memory_order_relaxed);
  uint64_t since = uv_hrtime();
  int reported = 0, interrupted = 0;
  uv_mutex_lock(&wd->mu);
  while (!wd->stop) {
    double timeout = wd->timeout;
    uint64_t step = (uint64_t)(timeout * 1e9 / 4);
    uv_cond_timedwait(&wd->cv, &wd->mu, step > 1000000 ? step : 1000000);
    if (wd->stop) break;
    uint32_t beat = atomic_load_explicit(&h->beat, memory_order_relaxed);
    uint64_t now = uv_hrtime();
    if (beat != last || atomic_load(&h->polling)) {
      last = beat;
      since = now;
      reported = interrupted = 0;
      continue;
    }
    double stuck = (double)(now - since) * 1e-9;
    if (stuck < timeout) continue;
    int action = wd->action;
    if (action == LOOP_WD_EXIT || (interrupted && stuck >= 2 * timeout)) {
      wd_report(h, stuck,
                interrupted ? "the interrupt did not take (a "
                              "compiled loop); exiting"
                            : "exiting");
      _exit(70);
    }
    if (action == LOOP_WD_INTERRUPT && !interrupted) {
      co_t *co = *(co_t *volatile *)&h->current;
      wd_report(h, stuck, "interrupting it");
      /* LuaJIT's way of interrupting running Lua code from outside (its
       * own binary does this for Ctrl-C): the hook raises an error in the
       * running coroutine at its next instruction in the interpreter. */
      lua_sethook(co ? co->L : h->L, wd_hook,
                  LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
      interrupted = 1;
    } else if (!reported) {
      wd_report(h, stuck, "it keeps every other coroutine waiting");
      reported = 1;
    }
  }
  uv_mutex_unlock(&wd->mu);
}

int loop_watchdog(host_t *h, double timeout, int action) {
  watchdog_t *wd = &h->lp->wd;
  if (timeout <= 0) {
    if (wd->running) {
      uv_mutex_lock(&wd->mu);
      wd->stop = 1;
      uv_cond_signal(&wd->cv);
      uv_mutex_unlock(&wd->mu);
      uv_thread_join(&wd->thread);
      wd->running = wd->stop = 0;
    }
    return 0;
  }
  uv_mutex_lock(&wd->mu);
  wd->timeout = timeout;
  wd->action = action;
  uv_cond_signal(&wd->cv);
  uv_mutex_unlock(&wd->mu);
  if (!wd->running) {
    if (uv_thread_create(&wd->thread, wd_main, h) != 0) return -1;
    wd->running = 1;
  }
  return 0;
}

int loop_run(host_t *h) {
  for (;;) {
    timer_expire(h);
    sched_run_ready(h);
    alloc_maintain(h->L);
    if (h->exiting) break;
    if (h->ready_head) {
      uv_run(h->loop, UV_RUN_NOWAIT);
      continue;
    }
    timer_arm(h);
    if (!uv_loop_alive(h->loop)) {
      /* A signal may have arrived without the loop having read it yet:
       * poll once before calling it a deadlock. */
      uv_run(h->loop, UV_RUN_NOWAIT);
      if (h->ready_head || h->heap_len || h->exiting) continue;
    }
    if (!uv_loop_alive(h->loop) && !h->ready_head) {
      if (h->main) {
        fprintf(stderr, "all coroutines are asleep - deadlock!\n\n");
        loop_dump(h);
        sched_exit(h, 2);
      } else {
        sched_exit(h, 0);
      }
      break;
    }
    atomic_store(&h->polling, 1);
    uv_run(h->loop, UV_RUN_ONCE);
    atomic_store(&h->polling, 0);
  }
  /* The last call into a Lua state that is still whole (finalizers run in
   * no particular order once lua_close starts): buffered output such as
   * orrery.log's is written here. */
  host_up(h, "exit", h->exit_code);
  return h->exit_code;
}

static void close_walk(uv_handle_t *hd, void *arg) {
  (void)arg;
  if (!uv_is_closing(hd)) uv_close(hd, NULL);
}

/* After the Lua state is closed: closes every handle still open (the
 * loop's own included) and lets their close callbacks run. */
void loop_close(host_t *h) {
  loop_watchdog(h, 0, 0);
  remove_signals(h->lp);
  uv_walk(h->loop, close_walk, NULL);
  uv_run(h->loop, UV_RUN_DEFAULT);
  uv_mutex_destroy(&h->lp->wd.mu);
  uv_cond_destroy(&h->lp->wd.cv);
  free(h->lp);
  h->lp = NULL;
}

/* -- A worker: one loop, one Lua state, one scheduler -- */

host_t *host_new(void) {
  host_t *h = malloc(sizeof(*h));
  uv_loop_t *loop = malloc(sizeof(*loop));
  if (!h || !loop || uv_loop_init(loop) != 0) {
    free(h);
    free(loop);
    return NULL;
  }
  alloc_t *alloc;
  lua_State *L = alloc_newstate(&alloc);
  if (!L) {
    uv_loop_close(loop);
    free(loop);
    free(h);
    return NULL;
  }
  sched_init(h, L, loop);
  h->alloc = alloc;
  chan_init(h);
  if (loop_init(h) != 0) {
    lua_close(L);
    alloc_free(alloc);
    uv_loop_close(loop);
    free(loop);
    free(h);
    return NULL;
  }
  luaL_openlibs(L);
  return h;
}

int host_run(host_t *h) {
  host_current = h;
  return loop_run(h);
}

/* Closes the Lua state first (its finalizers close the sockets and free
 * the modules' state), then every libuv handle, then the scheduler. */
void host_free(host_t *h) {
  uv_loop_t *loop = h->loop;
  host_current = h;
  loop_watchdog(h, 0, 0); /* it may touch the Lua state */
  lua_close(h->L);
  h->L = NULL;
  alloc_free(h->alloc);
  h->alloc = NULL;
  loop_close(h);
  uv_loop_close(loop);
  sched_close(h);
  timer_close(h);
  free(loop);
  if (host_current == h) host_current = NULL;
  free(h);
}
