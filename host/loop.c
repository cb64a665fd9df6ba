/* SPDX-License-Identifier: MIT */
/* loop.c -- one worker's run loop: the scheduler and libuv taking turns,
 * deadlock detection, signals and the shutdown grace period. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "host.h"

/* What the loop owns besides the scheduler: signal handles and the grace
 * timer. Allocated by loop_init, freed by loop_close after every handle
 * has been closed. */
struct loop_s {
  uv_signal_t sig[3];
  int shutdown_sig; /* the first SIGINT/SIGTERM, 0 before it */
  double grace;
  uv_timer_t grace_timer;
};

void loop_dump(host_t *h) {
  host_up(h, "dump", 0);
}

static void on_grace(uv_timer_t *t) {
  host_t *h = t->data;
  fprintf(stderr, "orrery: grace period over, exiting\n");
  sched_exit(h, 128 + h->lp->shutdown_sig);
}

static void on_signal(uv_signal_t *s, int signum) {
  host_t *h = s->data;
  struct loop_s *lp = h->lp;
  if (signum == SIGQUIT) {
    fprintf(stderr, "SIGQUIT: coroutine dump\n\n");
    loop_dump(h);
    return;
  }
  if (lp->shutdown_sig) {
    sched_exit(h, 128 + signum); /* a second signal: stop now */
    return;
  }
  lp->shutdown_sig = signum;
  host_up(h, "signal", signum);
  lp->grace_timer.data = h;
  uv_timer_start(&lp->grace_timer, on_grace, (uint64_t)(lp->grace * 1000), 0);
}

int loop_init(host_t *h) {
  struct loop_s *lp = calloc(1, sizeof(*lp));
  if (!lp) return -1;
  h->lp = lp;
  lp->grace = 5.0;
  uv_timer_init(h->loop, &h->uvtimer);
  uv_unref((uv_handle_t *)&h->uvtimer);
  static const int sigs[3] = {SIGINT, SIGTERM, SIGQUIT};
  for (int i = 0; i < 3; i++) {
    uv_signal_init(h->loop, &lp->sig[i]);
    lp->sig[i].data = h;
    uv_signal_start(&lp->sig[i], on_signal, sigs[i]);
    uv_unref((uv_handle_t *)&lp->sig[i]);
  }
  uv_timer_init(h->loop, &lp->grace_timer);
  return 0;
}

/* SIGINT and SIGTERM keep the loop alive from now on, so that a process
 * whose only remaining wait is for a shutdown signal (root:done()) is not
 * reported as deadlocked. */
void loop_watch_signals(host_t *h) {
  uv_ref((uv_handle_t *)&h->lp->sig[0]);
  uv_ref((uv_handle_t *)&h->lp->sig[1]);
}

void loop_set_grace(host_t *h, double secs) {
  h->lp->grace = secs;
}

int loop_run(host_t *h) {
  for (;;) {
    timer_expire(h);
    sched_run_ready(h);
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
    uv_run(h->loop, UV_RUN_ONCE);
  }
  return h->exit_code;
}

static void close_walk(uv_handle_t *hd, void *arg) {
  (void)arg;
  if (!uv_is_closing(hd)) uv_close(hd, NULL);
}

/* After the Lua state is closed: closes every handle still open (the
 * loop's own included) and lets their close callbacks run. */
void loop_close(host_t *h) {
  uv_walk(h->loop, close_walk, NULL);
  uv_run(h->loop, UV_RUN_DEFAULT);
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
  lua_State *L = alloc_newstate();
  if (!L) {
    uv_loop_close(loop);
    free(loop);
    free(h);
    return NULL;
  }
  sched_init(h, L, loop);
  chan_init(h);
  if (loop_init(h) != 0) {
    lua_close(L);
    alloc_done();
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
  lua_close(h->L);
  h->L = NULL;
  alloc_done();
  loop_close(h);
  uv_loop_close(loop);
  sched_close(h);
  timer_close(h);
  free(loop);
  if (host_current == h) host_current = NULL;
  free(h);
}
