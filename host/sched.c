/* SPDX-License-Identifier: MIT */
/* sched.c -- the coroutine scheduler: registry, spawn, park, wake, and the
 * run queue. The bottom layer: it calls nothing above it; the layers above
 * register cleanups (sched_undo, sched_on_retire) instead. */
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
double sched_coarse_now(void) {
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
  host_current = h;
  return 0;
}

void sched_on_retire(host_t *h, sched_retire_fn fn) {
  if (h->nretire < SCHED_RETIRE_MAX) h->retire[h->nretire++] = fn;
}

/* After the Lua state is closed (h->L is NULL): frees what is left. */
void sched_close(host_t *h) {
  for (int32_t i = 0; i < h->cos_top; i++)
    if (h->cos[i]) {
      for (int k = 0; k < h->nretire; k++) h->retire[k](h, h->cos[i]);
      free(h->cos[i]);
    }
  free(h->cos);
  free(h->free_slots);
  h->cos = NULL;
  h->cos_top = 0;
}

static void ready_push(host_t *h, co_t *co) {
  co->next_ready = NULL;
  if (h->ready_tail)
    h->ready_tail->next_ready = co;
  else
    h->ready_head = co;
  h->ready_tail = co;
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
  ready_push(h, co);
  return co;
}

co_t *sched_co(host_t *h, int32_t slot) {
  return slot >= 1 && slot <= h->cos_top ? h->cos[slot - 1] : NULL;
}

/* Runs the cleanups the wait registered, newest first. */
static void run_undo(co_t *co) {
  while (co->nundo) {
    co->nundo--;
    sched_undo_fn fn = co->undo[co->nundo].fn;
    fn(co, co->undo[co->nundo].data);
  }
}

static void co_retire(host_t *h, co_t *co) {
  int32_t idx = co->slot - 1;
  run_undo(co);
  co->state = CO_DEAD;
  for (int k = 0; k < h->nretire; k++) h->retire[k](h, co);
  luaL_unref(h->L, LUA_REGISTRYINDEX, co->ref);
  h->cos[idx] = NULL;
  if (h->nfree == h->free_cap) {
    h->free_cap = h->free_cap ? h->free_cap * 2 : 1024;
    h->free_slots = xrealloc(h->free_slots, sizeof(int32_t) * h->free_cap);
  }
  h->free_slots[h->nfree++] = idx;
  h->nlive--;
  if (co == h->main) h->main = NULL;
  free(co);
}

void sched_undo_overflow(void) {
  fprintf(stderr, "orrery: too many cleanups for one wait\n");
  abort();
}

/* What the coroutine waited on (wait_kind, wait_obj, wait_what) is left
 * as it was: it is only read while the coroutine is parked, and the next
 * park sets it anew. */
int sched_wake(host_t *h, co_t *co, int32_t code) {
  if (co->state != CO_PARKED) return 0;
  run_undo(co);
  co->wake = code;
  co->state = CO_READY;
  ready_push(h, co);
  return 1;
}

int sched_wake_token(host_t *h, co_t *co, uint32_t token, int32_t code) {
  if (!co || co->token != token) return 0;
  return sched_wake(h, co, code);
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

void sched_run_ready(host_t *h) {
  co_t *co;
  uint32_t n = 0;
  double start = h->tick = sched_coarse_now();
  while (!h->exiting && (co = h->ready_head)) {
    /* Coroutines that keep each other (or themselves) runnable must not
     * starve timers and I/O: after about a millisecond, return to the
     * loop, which expires timers and polls I/O without blocking. */
    if ((++n & 7) == 0) {
      h->tick = sched_coarse_now();
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
    atomic_store_explicit(&h->beat, ++h->nbeat, memory_order_relaxed);
    int st = lua_resume(co->L, nargs);
    h->current = NULL;
    if (st == LUA_YIELD) {
      if (lua_gettop(co->L)) lua_settop(co->L, 0);
      if (co->state == CO_RUNNING) {
        /* A plain yield: run again after everything already queued. */
        co->state = CO_READY;
        co->wake = 0;
        ready_push(h, co);
      }
      continue;
    }
    alloc_maintain(h->L); /* a coroutine that failed leaves garbage */
    int is_main = co == h->main;
    if (st != 0) {
      report_error(h, co, is_main);
      if (is_main || !h->panic_continue) sched_exit(h, is_main ? 1 : 2);
    } else if (is_main) {
      sched_exit(h, 0);
    }
    co_retire(h, co);
  }
}

/* -- FFI: coroutine identity and wakeups for contexts -- */

int32_t orrery_ffi_co_slot(void) {
  co_t *co = host_current->current;
  return co ? co->slot : 0;
}

uint64_t orrery_ffi_co_id(void) {
  co_t *co = host_current->current;
  return co ? co->id : 0;
}

/* The token of the wait the coroutine in slot is parked in, 0 if it is not
 * parked. Lua code that may wake it later (a context's cancel) keeps it. */
uint32_t orrery_ffi_co_token(int32_t slot) {
  co_t *co = sched_co(host_current, slot);
  return co && co->state == CO_PARKED ? co->token : 0;
}

int orrery_ffi_wake(int32_t slot, uint32_t token, int32_t code) {
  host_t *h = host_current;
  return sched_wake_token(h, sched_co(h, slot), token, code);
}

/* Wakes every parked coroutine bound to the root context itself; those
 * bound to contexts below it are woken by the cancellation of those
 * contexts, and those bound to detached contexts are left alone. */
int32_t orrery_ffi_wake_all(int32_t code) {
  host_t *h = host_current;
  int32_t n = 0;
  for (int32_t i = 0; i < h->cos_top; i++) {
    co_t *co = h->cos[i];
    if (co && co->state == CO_PARKED && !co->unrooted) {
      sched_wake(h, co, code);
      n++;
    }
  }
  return n;
}

/* Records whether the coroutine in slot is bound to the root context
 * (rooted) or to a context of its own, for orrery_ffi_wake_all. */
void orrery_ffi_co_bind(int32_t slot, int rooted) {
  co_t *co = sched_co(host_current, slot);
  if (co) co->unrooted = !rooted;
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
  h->current = sched_co(h, slot);
}
