/* SPDX-License-Identifier: MIT */
/* host.h -- the per-worker host state and the scheduler's core types. */
#ifndef ORRERY_HOST_H
#define ORRERY_HOST_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>
#include <lua.h>
#include <lauxlib.h>

/* The build hides every symbol by default (-fvisibility=hidden): only the
 * FFI surface is exported, so that ffi.C resolves it in the executable and
 * nothing else (internals, llhttp) leaks into the dynamic symbol table.
 * Definitions inherit the visibility of these declarations. */
#pragma GCC visibility push(default)
#include "ffi_cdef.h"
#pragma GCC visibility pop

#define ORRERY_VERSION "0.1.0"

typedef struct host_s host_t;
typedef struct co_s co_t;
typedef struct orrery_chan chan_t;
typedef struct orrery_tmr tmr_t;
typedef struct waiter_s waiter_t;

/* Coroutine states. */
enum { CO_READY = 1, CO_RUNNING, CO_PARKED, CO_DEAD };

/* What a parked coroutine waits on (shown in the dump). */
enum {
  WAIT_NONE = 0,
  WAIT_RECV,
  WAIT_SEND,
  WAIT_SELECT,
  WAIT_SLEEP,
  WAIT_IO,
  WAIT_EXTERNAL
};

/* The wake code of a channel case (see ffi_cdef.h). */
#define WAKE_CODE(cas, st) ((((cas) + 1) << 2) | (st))

enum { TMR_CO = 1, TMR_LUA = 2, TMR_C = 3 };

/* A deadline in the timer heap (timer.c). */
struct orrery_tmr {
  double when;   /* monotonic deadline in seconds (sched_now) */
  uint32_t hidx; /* 1-based position in the heap, 0 when not armed */
  uint8_t kind;
  int32_t id; /* TMR_LUA: the id handed to the Lua hook */
  union {
    co_t *co; /* TMR_CO: the coroutine to wake */
    /* TMR_C: a timer owned by C code (deadline lists, see tlist.h), called
     * from the heap walk once the timer has been taken off the heap. */
    void (*fn)(tmr_t *t);
  };
};

enum { WAITER_RECV = 1, WAITER_SEND = 2 };

/* A coroutine's place in a channel's queue (chan.c). */
struct waiter_s {
  co_t *co;
  chan_t *ch;
  waiter_t *prev, *next; /* links in the channel's FIFO queue */
  int32_t cas;           /* select case index, -1 for a single operation */
  uint8_t kind;
  uint8_t linked;
};

typedef struct waitq_s {
  waiter_t *head, *tail;
} waitq_t;

struct orrery_chan {
  uint64_t id;
  int32_t cap, head, count;
  int32_t closed;
  waitq_t recvq, sendq;
};

/* The cleanup of a wait: unlinks the coroutine from whatever it waits on.
 * The scheduler calls it when the coroutine is woken (by anyone) and when
 * it is retired, so that no owner keeps a pointer to a coroutine that has
 * moved on. */
typedef void (*sched_undo_fn)(co_t *co, void *data);
#define SCHED_UNDO_MAX 2

/* A coroutine. The scheduler owns the record; tmr and the waiters are
 * storage that the timer and channel layers own, kept here so that
 * parking allocates nothing. */
struct co_s {
  /* The first two cache lines hold what a channel park and wake touch;
   * rarely used fields come last (sieve: 152 ms with the fields in
   * declaration order, 176 + 32 bytes, against 139 ms before the
   * cleanups were added). */
  lua_State *L;
  uint8_t state;
  uint8_t wait_kind;
  uint8_t started;
  uint8_t unrooted; /* bound to a context outside the root's tree */
  uint8_t nundo;
  int32_t slot;
  int32_t wake;   /* code handed to the coroutine when it resumes */
  uint32_t token; /* of the current (or last) wait: stale wakes miss it */
  co_t *next_ready;
  struct {
    sched_undo_fn fn;
    void *data;
  } undo[SCHED_UNDO_MAX];
  waiter_t w1;           /* chan.c: a single operation */
  double since;          /* when it parked, for the dump */
  const void *wait_obj;  /* what it waits on (a channel), for the dump */
  const char *wait_what; /* free text for WAIT_IO / WAIT_EXTERNAL */
  tmr_t tmr;             /* timer.c: the wait's timeout */
  waiter_t *ws;          /* chan.c: select waiters, grown on demand */
  int32_t nws, cap_ws;
  uint64_t id;
  int ref;          /* registry reference that anchors the thread while alive */
  int32_t nargs;    /* arguments for the first resume */
  const char *site; /* "file:line" it was created at (a Lua string
                       anchored by the binding while it lives) */
};

/* Called when a coroutine is retired, by the layers that keep per-
 * coroutine state of their own (chan.c, the Lua binding). */
typedef void (*sched_retire_fn)(host_t *h, co_t *co);
#define SCHED_RETIRE_MAX 4

/* The one way up into Lua: installed by the binding (lcore.c), called by
 * the layers below for Lua timers ("timer"), signals ("signal"), dumps
 * ("dump") and whatever else a module above registers a handler for. */
typedef void (*host_up_fn)(host_t *h, const char *kind, int32_t arg);

struct host_s {
  uv_loop_t *loop;
  lua_State *L;
  struct alloc_s *alloc; /* alloc.c: the Lua state's allocator */
  /* Live coroutines by slot; slots are recycled, ids never are. */
  co_t **cos;
  int32_t cos_cap, cos_top;
  int32_t *free_slots;
  int32_t nfree, free_cap;
  int64_t nlive;
  uint64_t next_coid;
  uint64_t next_chanid;
  co_t *ready_head, *ready_tail;
  co_t *current;
  /* Bumped by the scheduler around every resume and by the loop around
   * every poll; the watchdog thread reads it (loop.c). */
  _Atomic uint32_t beat;
  uint32_t nbeat;
  _Atomic int polling; /* the loop is blocked in the poll: not stuck */
  co_t *main;
  double tick; /* coarse time of the current scheduling round */
  /* Timer heap: every sleep, operation timeout and Lua timer. */
  tmr_t **heap;
  uint32_t heap_len, heap_cap;
  uv_timer_t uvtimer;
  int32_t *fired;
  uint32_t nfired, fired_cap;
  uint64_t rng;
  int exiting;
  uint8_t panic_continue; /* a panic is reported, the process goes on */
  int exit_code;
  host_up_fn up;
  sched_retire_fn retire[SCHED_RETIRE_MAX];
  int nretire;
  int dispatch_ref;        /* lcore.c: Lua function(kind, arg) behind up */
  int tables_ref;          /* lcore.c: registry table of per-slot Lua tables */
  struct loop_s *lp;       /* loop.c: signals, grace period, watchdog */
  struct repl_s *repl;     /* stdin reader of `orrery repl`, see repl.c */
  struct net_state_s *net; /* live sockets, see net_int.h */
  struct http_state_s *http; /* shared by HTTP connections, see http_server.c */
};

extern _Thread_local host_t *host_current;

/* Calls up into Lua through the binding's hook. */
static inline void host_up(host_t *h, const char *kind, int32_t arg) {
  if (h->up) h->up(h, kind, arg);
}

/* -- Layer 1, sched.c: coroutine registry, park, wake -- */
int sched_init(host_t *h, lua_State *L, uv_loop_t *loop);
void sched_close(host_t *h);
void sched_on_retire(host_t *h, sched_retire_fn fn);
co_t *sched_spawn(host_t *h, lua_State *T, int ref, int nargs);
/* Marks co parked (the caller links it wherever it waits and registers
 * the cleanup with sched_undo); the coroutine must yield next. Returns
 * the wait's token. */
static inline uint32_t sched_park(host_t *h, co_t *co, int kind,
                                  const char *what, const void *obj) {
  co->state = CO_PARKED;
  co->wait_kind = (uint8_t)kind;
  co->wait_what = what;
  co->wait_obj = obj;
  co->since = h->tick;
  if (++co->token == 0) co->token = 1; /* 0 is never a wait's token */
  return co->token;
}
void sched_undo_overflow(void);
/* Registers a cleanup of the wait co just parked in (at most
 * SCHED_UNDO_MAX per wait). */
static inline void sched_undo(co_t *co, sched_undo_fn fn, void *data) {
  if (co->nundo == SCHED_UNDO_MAX) sched_undo_overflow();
  co->undo[co->nundo].fn = fn;
  co->undo[co->nundo].data = data;
  co->nundo++;
}
/* Wakes co with code if it is parked: runs its cleanups and queues it. A
 * caller that holds a link the cleanup clears needs no token. */
int sched_wake(host_t *h, co_t *co, int32_t code);
/* Wakes co only if it is still parked in the wait that handed out token. */
int sched_wake_token(host_t *h, co_t *co, uint32_t token, int32_t code);
co_t *sched_co(host_t *h, int32_t slot);
/* Runs the ready coroutines for about a millisecond at most. */
void sched_run_ready(host_t *h);
void sched_exit(host_t *h, int code);
double sched_now(void);
double sched_coarse_now(void);
uint64_t sched_rand(host_t *h);

/* -- Layer 2, timer.c: one deadline heap for every timeout -- */
void timer_start(host_t *h, tmr_t *t, double when);
int timer_stop(host_t *h, tmr_t *t);
void timer_expire(host_t *h);
void timer_arm(host_t *h);
void timer_close(host_t *h);
void timer_park_at(host_t *h, co_t *co, double timeout);
/* Arms the parked coroutine's timeout (none when timeout < 0). */
static inline void timer_park(host_t *h, co_t *co, double timeout) {
  if (timeout >= 0) timer_park_at(h, co, timeout);
}

/* -- Layer 2, chan.c -- */
void chan_init(host_t *h);

/* -- Layer 3, loop.c: the run loop, signals, grace period -- */
int loop_init(host_t *h);
/* Runs until the main coroutine ends, a panic, or a deadlock. */
int loop_run(host_t *h);
void loop_close(host_t *h);
void loop_dump(host_t *h);
void loop_watch_signals(host_t *h);
/* SIGHUP is relayed to Lua as host_up(h, "hup", SIGHUP) from now on
 * instead of ending the process; 0, or -1 when another worker holds the
 * signal dispositions. */
int loop_watch_hup(host_t *h);
/* The watchdog: when the loop has not completed a turn for timeout
 * seconds, report the running coroutine and act (LOOP_WD_*). A timeout
 * <= 0 turns it off. */
enum { LOOP_WD_REPORT = 0, LOOP_WD_INTERRUPT, LOOP_WD_EXIT };
int loop_watchdog(host_t *h, double timeout, int action);
void loop_set_grace(host_t *h, double secs);
/* Interactive mode (the REPL): SIGINT interrupts the running command
 * ("interrupt" up into Lua, and an error in Lua code that computes)
 * instead of starting the shutdown. */
void loop_set_interactive(host_t *h, int on);

/* A worker (loop.c): host_new makes the loop, the Lua state (standard
 * libraries open) and the scheduler; host_run runs them; host_free closes
 * the Lua state, then every handle, and frees it all. */
host_t *host_new(void);
int host_run(host_t *h);
void host_free(host_t *h);

/* -- The Lua binding, lcore.c -- */
int luaopen_orrery_core(lua_State *L);

/* json.c */
int luaopen_orrery_json_core(lua_State *L);

/* alloc.c: one allocator per Lua state. alloc_free after lua_close;
 * alloc_maintain between batches of coroutines (collects after a failed
 * allocation, returns emptied memory); alloc_lmemory is core.memory. */
typedef struct alloc_s alloc_t;
lua_State *alloc_newstate(alloc_t **out);
void alloc_free(alloc_t *a);
void alloc_maintain(lua_State *L);
int alloc_lmemory(lua_State *L);

/* modules.c */
void modules_preload(lua_State *L);

/* net_lua.c, http_server.c, http_client_lua.c (see net.h) */
int luaopen_orrery_net_core(lua_State *L);
int luaopen_orrery_http_core(lua_State *L);
int luaopen_orrery_http_client_core(lua_State *L);
int luaopen_orrery_sqlite_core(lua_State *L);

/* pg.c */
int luaopen_orrery_pg_core(lua_State *L);

/* repl.c */
int repl_readline(lua_State *L);
void repl_close(host_t *h);

#endif
