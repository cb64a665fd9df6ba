/* SPDX-License-Identifier: MIT */
/* timer.c -- one binary heap of deadlines behind a single libuv timer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "host.h"

/* Every sleep, operation timeout and Lua timer is a tmr_t in one min-heap
 * keyed by its monotonic deadline, so 100k sleepers cost one heap entry
 * each and libuv only ever sees one timer handle. Deadlines are absolute
 * values of uv_hrtime(), never libuv's cached loop time, so a sleep counts
 * from the moment it was called even after a long stretch of Lua code. */

static inline int before(const tmr_t *a, const tmr_t *b) {
  return a->when < b->when;
}

static void heap_set(host_t *h, uint32_t i, tmr_t *t) {
  h->heap[i] = t;
  t->hidx = i + 1;
}

static void sift_up(host_t *h, uint32_t i) {
  tmr_t *t = h->heap[i];
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!before(t, h->heap[p])) break;
    heap_set(h, i, h->heap[p]);
    i = p;
  }
  heap_set(h, i, t);
}

static void sift_down(host_t *h, uint32_t i) {
  tmr_t *t = h->heap[i];
  for (;;) {
    uint32_t l = 2 * i + 1, m = i;
    const tmr_t *best = t;
    if (l < h->heap_len && before(h->heap[l], best)) m = l, best = h->heap[l];
    if (l + 1 < h->heap_len && before(h->heap[l + 1], best)) m = l + 1;
    if (m == i) break;
    heap_set(h, i, h->heap[m]);
    i = m;
  }
  heap_set(h, i, t);
}

void timer_start(host_t *h, tmr_t *t, double when) {
  if (t->hidx) timer_stop(h, t);
  if (h->heap_len == h->heap_cap) {
    h->heap_cap = h->heap_cap ? h->heap_cap * 2 : 256;
    tmr_t **n = realloc(h->heap, sizeof(tmr_t *) * h->heap_cap);
    if (!n) abort();
    h->heap = n;
  }
  t->when = when;
  heap_set(h, h->heap_len++, t);
  sift_up(h, h->heap_len - 1);
}

/* Returns 1 if the timer was armed. */
int timer_stop(host_t *h, tmr_t *t) {
  if (!t->hidx) return 0;
  uint32_t i = t->hidx - 1;
  t->hidx = 0;
  tmr_t *last = h->heap[--h->heap_len];
  if (i < h->heap_len) {
    heap_set(h, i, last);
    if (i > 0 && before(last, h->heap[(i - 1) / 2]))
      sift_up(h, i);
    else
      sift_down(h, i);
  }
  return 1;
}

/* Fires every timer whose deadline has passed: coroutine timers wake their
 * coroutine with ORRERY_WAKE_TIMEOUT; C timers run their function, which
 * may arm timers again (the walk rereads the top); Lua timers are handed up
 * to Lua after the heap walk, so that a callback that re-arms timers cannot
 * disturb it. */
void timer_expire(host_t *h) {
  if (!h->heap_len) return;
  double now = sched_now();
  h->nfired = 0;
  while (h->heap_len && h->heap[0]->when <= now) {
    tmr_t *t = h->heap[0];
    timer_stop(h, t);
    if (t->kind == TMR_CO) {
      sched_wake(h, t->co, ORRERY_WAKE_TIMEOUT);
    } else if (t->kind == TMR_C) {
      t->fn(t);
    } else {
      if (h->nfired == h->fired_cap) {
        h->fired_cap = h->fired_cap ? h->fired_cap * 2 : 64;
        h->fired = realloc(h->fired, sizeof(int32_t) * h->fired_cap);
        if (!h->fired) abort();
      }
      h->fired[h->nfired++] = t->id;
    }
  }
  for (uint32_t i = 0; i < h->nfired && !h->exiting; i++)
    host_up(h, "timer", h->fired[i]);
  h->nfired = 0;
}

/* loop_run() expires the heap once uv_run() returns; this only has to
 * make sure that it does return. A libuv timer that is already due when
 * uv_run(UV_RUN_ONCE) starts fires before the poll, and without uv_stop()
 * the poll would then block with no timeout while any socket is open. */
static void on_uvtimer(uv_timer_t *t) {
  uv_stop(t->loop);
}

/* Points the libuv timer at the earliest deadline; it keeps the loop alive
 * only while some deadline is pending. */
void timer_arm(host_t *h) {
  if (!h->heap_len) {
    uv_timer_stop(&h->uvtimer);
    return;
  }
  double left = h->heap[0]->when - sched_now();
  uint64_t ms = left <= 0 ? 0 : (uint64_t)ceil(left * 1000.0);
  uv_update_time(h->loop);
  uv_timer_start(&h->uvtimer, on_uvtimer, ms, 0);
  uv_ref((uv_handle_t *)&h->uvtimer);
}

void timer_close(host_t *h) {
  free(h->heap);
  free(h->fired);
  h->heap = NULL;
  h->fired = NULL;
  h->heap_len = h->heap_cap = h->nfired = h->fired_cap = 0;
}

static void undo_timer(co_t *co, void *data) {
  timer_stop(data, &co->tmr);
}

void timer_park_at(host_t *h, co_t *co, double timeout) {
  timer_start(h, &co->tmr, sched_now() + timeout);
  sched_undo(co, undo_timer, h);
}

/* -- FFI: timers owned by Lua objects (after, ticker, context deadlines) -- */

orrery_tmr *orrery_ffi_timer_new(int32_t id) {
  tmr_t *t = calloc(1, sizeof(*t));
  if (t) {
    t->kind = TMR_LUA;
    t->id = id;
  }
  return t;
}

void orrery_ffi_timer_free(orrery_tmr *t) {
  host_t *h = host_current;
  if (h && t->hidx && h->heap) timer_stop(h, t);
  free(t);
}

void orrery_ffi_timer_start(orrery_tmr *t, double secs) {
  if (!(secs > 0)) secs = 0; /* NaN and negatives fire at once */
  timer_start(host_current, t, sched_now() + secs);
}

int orrery_ffi_timer_stop(orrery_tmr *t) {
  return timer_stop(host_current, t);
}

double orrery_ffi_now(void) {
  return sched_now();
}

double orrery_ffi_wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int orrery_ffi_sleep(double secs) {
  host_t *h = host_current;
  co_t *co = h->current;
  if (!co) return ORRERY_DECLINED;
  if (!(secs > 0)) secs = 0;
  sched_park(h, co, WAIT_SLEEP, NULL, NULL);
  timer_park(h, co, secs);
  return ORRERY_PARKED;
}
