/* SPDX-License-Identifier: MIT */
/* sched.c -- the coroutine scheduler: spawn, park, wake, the run loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host.h"

_Thread_local host_t *host_current;

double sched_now(void) {
  return (double)uv_hrtime() * 1e-9;
}

/* A cheap clock for bookkeeping that only a person reads (how long a
 * coroutine has been parked): CLOCK_MONOTONIC_COARSE is a plain memory read
 * in the vDSO, while a precise reading costs as much as a whole channel
 * operation on some virtual machines. */
static double coarse_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t sched_rand(host_t *h) {
  /* xorshift64*: cheap and good enough to pick select cases fairly. */
  uint64_t x = h->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  h->rng = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q) {
    fprintf(stderr, "orrery: out of memory\n");
    abort();
  }
  return q;
}

int sched_init(host_t *h, lua_State *L, uv_loop_t *loop) {
  memset(h, 0, sizeof(*h));
  h->L = L;
  h->loop = loop;
  h->rng = uv_hrtime() | 1;
  h->next_coid = 1;
  h->next_chanid = 1;
  h->dispatch_ref = LUA_NOREF;
  h->tables_ref = LUA_NOREF;
  h->grace = 5.0;
  uv_timer_init(loop, &h->uvtimer);
  uv_unref((uv_handle_t *)&h->uvtimer);
  host_current = h;
  return 0;
}

static void co_free(host_t *h, co_t *co) {
  free(co->ws);
  free(co);
}

void sched_close(host_t *h) {
  for (int32_t i = 0; i < h->cos_top; i++)
    if (h->cos[i]) co_free(h, h->cos[i]);
  free(h->cos);
  free(h->free_slots);
  free(h->heap);
  free(h->fired);
  h->cos = NULL;
}

co_t *sched_spawn(host_t *h, lua_State *T, int ref, int nargs) {
  co_t *co = calloc(1, sizeof(*co));
  if (!co) return NULL;
  int32_t slot;
  if (h->nfree > 0) {
    slot = h->free_slots[--h->nfree];
  } else {
    if (h->cos_top == h->cos_cap) {
      h->cos_cap = h->cos_cap ? h->cos_cap * 2 : 1024;
      h->cos = xrealloc(h->cos, sizeof(co_t *) * (size_t)h->cos_cap);
    }
    slot = h->cos_top++;
  }
  h->cos[slot] = co;
  co->L = T;
  co->ref = ref;
  co->slot = slot + 1; /* Lua-facing slots are 1-based array indices */
  co->id = h->next_coid++;
  co->nargs = nargs;
  co->tmr.kind = TMR_CO;
  co->tmr.co = co;
  co->w1.co = co;
  co->w1.cas = -1;
  co->state = CO_READY;
  h->nlive++;
  if (h->ready_tail)
    h->ready_tail->next_ready = co;
  else
    h->ready_head = co;
  h->ready_tail = co;
  return co;
}

static void co_retire(host_t *h, co_t *co) {
  int32_t idx = co->slot - 1;
  chan_disarm(co);
  timer_stop(h, &co->tmr);
  co->state = CO_DEAD;
  lcore_clear_slot(h, co->slot);
  luaL_unref(h->L, LUA_REGISTRYINDEX, co->ref);
  h->cos[idx] = NULL;
  if (h->nfree == h->free_cap) {
    h->free_cap = h->free_cap ? h->free_cap * 2 : 1024;
    h->free_slots = xrealloc(h->free_slots, sizeof(int32_t) * h->free_cap);
  }
  h->free_slots[h->nfree++] = idx;
  h->nlive--;
  if (co == h->main) h->main = NULL;
  co_free(h, co);
}

/* Marks co as parked. The caller has already linked it wherever it waits;
 * a timeout >= 0 also arms its timer. The coroutine must yield next. */
void sched_park(host_t *h, co_t *co, int kind, double timeout) {
  co->state = CO_PARKED;
  co->wait_kind = (uint8_t)kind;
  co->since = h->tick;
  if (timeout >= 0) timer_start(h, &co->tmr, sched_now() + timeout);
}

/* Wakes a parked coroutine with code: unlinks every other waiter it still
 * has, stops its timer and queues it to run. */
void sched_wake(host_t *h, co_t *co, int32_t code) {
  if (co->state != CO_PARKED) return;
  chan_disarm(co);
  if (co->tmr.hidx) timer_stop(h, &co->tmr);
  if (co->unpark) {
    co_unpark_fn fn = co->unpark;
    co->unpark = NULL;
    fn(co);
  }
  co->wake = code;
  co->state = CO_READY;
  co->wait_kind = WAIT_NONE;
  co->wait_ch = NULL;
  co->wait_what = NULL;
  co->next_ready = NULL;
  if (h->ready_tail)
    h->ready_tail->next_ready = co;
  else
    h->ready_head = co;
  h->ready_tail = co;
}

void sched_exit(host_t *h, int code) {
  if (!h->exiting) h->exit_code = code;
  h->exiting = 1;
}

/* Formats an error value that escaped a coroutine, with its traceback. */
static void report_error(host_t *h, co_t *co, int is_main) {
  lua_State *L = h->L;
  const char *msg = lua_tostring(co->L, -1);
  if (!msg) {
    if (luaL_callmeta(co->L, -1, "__tostring") &&
        lua_type(co->L, -1) == LUA_TSTRING)
      msg = lua_tostring(co->L, -1);
    else
      msg = lua_pushfstring(co->L, "(error object is a %s value)",
                            luaL_typename(co->L, -1));
  }
  luaL_traceback(L, co->L, msg, 0);
  if (is_main)
    fprintf(stderr, "orrery: %s\n", lua_tostring(L, -1));
  else
    fprintf(stderr, "panic in coroutine %llu: %s\n", (unsigned long long)co->id,
            lua_tostring(L, -1));
  fflush(stderr);
  lua_pop(L, 1);
}

static void run_ready(host_t *h) {
  co_t *co;
  uint32_t n = 0;
  double start = h->tick = coarse_now();
  while (!h->exiting && (co = h->ready_head)) {
    /* Coroutines that keep each other (or themselves) runnable must not
     * starve timers and I/O: after about a millisecond, return to the
     * loop, which expires timers and polls I/O without blocking. */
    if ((++n & 7) == 0) {
      h->tick = coarse_now();
      if (h->tick - start >= 0.001) return;
    }
    h->ready_head = co->next_ready;
    if (!h->ready_head) h->ready_tail = NULL;
    co->next_ready = NULL;
    int nargs;
    if (co->started) {
      lua_pushinteger(co->L, co->wake);
      nargs = 1;
    } else {
      co->started = 1;
      nargs = co->nargs;
    }
    co->state = CO_RUNNING;
    h->current = co;
    int st = lua_resume(co->L, nargs);
    h->current = NULL;
    if (st == LUA_YIELD) {
      if (lua_gettop(co->L)) lua_settop(co->L, 0);
      if (co->state == CO_RUNNING) {
        /* A plain yield: run again after everything already queued. */
        co->state = CO_READY;
        co->wake = 0;
        if (h->ready_tail)
          h->ready_tail->next_ready = co;
        else
          h->ready_head = co;
        h->ready_tail = co;
      }
      continue;
    }
    alloc_maintain(h->L); /* a coroutine that failed leaves garbage */
    int is_main = co == h->main;
    if (st != 0) {
      report_error(h, co, is_main);
      sched_exit(h, is_main ? 1 : 2);
    } else if (is_main) {
      sched_exit(h, 0);
    }
    co_retire(h, co);
  }
}

/* Runs until the main coroutine ends, a panic, or a deadlock. Returns the
 * process exit status. */
int sched_run(host_t *h) {
  for (;;) {
    timer_expire(h);
    run_ready(h);
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
        sched_dump(h);
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

void sched_dump(host_t *h) {
  lcore_dispatch(h, "dump", 0);
}

/* -- FFI: plain Lua coroutines inside orrery coroutines -- */

/* coroutine.resume and coroutine.wrap (replaced in lua/orrery/sched.lua)
 * bracket the resumed coroutine with these. Inside it there is no current
 * orrery coroutine, so a blocking operation fails with a clear error
 * instead of yielding to the wrong resumer, which would leave the
 * scheduler believing that a running coroutine is parked. */
int32_t orrery_ffi_foreign_enter(void) {
  host_t *h = host_current;
  int32_t slot = h->current ? h->current->slot : 0;
  h->current = NULL;
  return slot;
}

void orrery_ffi_foreign_leave(int32_t slot) {
  host_t *h = host_current;
  h->current = slot > 0 && slot <= h->cos_top ? h->cos[slot - 1] : NULL;
}
