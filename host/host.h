/* SPDX-License-Identifier: MIT */
/* host.h -- the per-worker host state and the scheduler's core types. */
#ifndef ORRERY_HOST_H
#define ORRERY_HOST_H

#include <stdint.h>
#include <uv.h>
#include <lua.h>
#include <lauxlib.h>

#include "ffi_cdef.h"

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

/* Results of a channel operation attempt, shared with lua/orrery/chan.lua. */
enum {
  OP_BLOCK = 0,   /* not ready, not parked */
  OP_BUF = 1,     /* io[1]: buffer index to store to / take from */
  OP_PEER = 2,    /* io[1]: peer slot, io[2]: peer case (-1 single op) */
  OP_BUFPEER = 3, /* take buf[io[1]], refill it from peer io[2]/io[3] */
  OP_CLOSED = 4,
  OP_PARKED = 5 /* the caller must yield; the wake code says what happened */
};

/* Wake codes passed to a resumed coroutine. Non-negative codes are
 * ((case + 1) << 2) | status, status being WAKE_ST_OK or WAKE_ST_CLOSED. */
enum { WAKE_ST_OK = 0, WAKE_ST_CLOSED = 1 };
#define WAKE_TIMEOUT (-1)
#define WAKE_CANCELED (-2)
#define WAKE_DEADLINE (-3) /* the context's deadline passed */
#define WAKE_CODE(cas, st) ((((cas) + 1) << 2) | (st))

enum { TMR_CO = 1, TMR_LUA = 2 };

struct orrery_tmr {
  double when;   /* monotonic deadline in seconds */
  uint32_t hidx; /* 1-based position in the heap, 0 when not armed */
  uint8_t kind;
  int32_t id; /* TMR_LUA: the id handed to the Lua dispatcher */
  co_t *co;   /* TMR_CO: the coroutine to wake */
};

enum { WAITER_RECV = 1, WAITER_SEND = 2 };

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

/* Cleanup for coroutines parked on something other than a channel or a
 * timer (I/O, for example): called when the coroutine is woken by a
 * cancellation or a timeout so that the owner forgets about it. */
typedef void (*co_unpark_fn)(co_t *co);

struct co_s {
  lua_State *L;
  int ref; /* registry reference that anchors the thread while alive */
  int32_t slot;
  uint64_t id;
  uint8_t state;
  uint8_t wait_kind;
  uint8_t started;
  uint8_t unrooted; /* bound to a context outside the root's tree */
  int32_t wake;     /* code handed to the coroutine when it resumes */
  int32_t nargs;    /* arguments for the first resume */
  co_t *next_ready;
  tmr_t tmr; /* sleeps and operation timeouts */
  waiter_t w1;
  waiter_t *ws; /* select waiters, grown on demand */
  int32_t nws, cap_ws;
  double since;          /* when it parked, for the dump */
  const chan_t *wait_ch; /* the channel of a single operation */
  co_unpark_fn unpark;
  void *unpark_data;
  const char *wait_what; /* free text for WAIT_IO / WAIT_EXTERNAL */
};

struct host_s {
  uv_loop_t *loop;
  lua_State *L;
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
  co_t *main;
  double tick; /* coarse time of the current scheduling round */
  /* Timer heap: every sleep, operation timeout and Lua timer. */
  tmr_t **heap;
  uint32_t heap_len, heap_cap;
  uv_timer_t uvtimer;
  int32_t *fired;
  uint32_t nfired, fired_cap;
  uv_signal_t sig[3];
  uint64_t rng;
  int exiting;
  int exit_code;
  int dispatch_ref; /* Lua function(kind, arg) for timers, signals, dumps */
  int tables_ref;   /* registry table of per-slot Lua tables */
  int shutdown_sig;
  double grace;
  uv_timer_t grace_timer;
  struct repl_s *repl;       /* stdin reader of `orrery repl`, see repl.c */
  struct net_state_s *net;   /* live sockets, see tcp.c */
  struct http_state_s *http; /* shared by HTTP connections, see http_server.c */
};

extern _Thread_local host_t *host_current;

/* sched.c */
int sched_init(host_t *h, lua_State *L, uv_loop_t *loop);
void sched_close(host_t *h);
co_t *sched_spawn(host_t *h, lua_State *T, int ref, int nargs);
void sched_park(host_t *h, co_t *co, int kind, double timeout);
void sched_wake(host_t *h, co_t *co, int32_t code);
int sched_run(host_t *h);
void sched_exit(host_t *h, int code);
double sched_now(void);
uint64_t sched_rand(host_t *h);
void sched_dump(host_t *h);

/* timer.c */
void timer_start(host_t *h, tmr_t *t, double when);
int timer_stop(host_t *h, tmr_t *t);
void timer_expire(host_t *h);
void timer_arm(host_t *h);

/* chan.c */
void chan_disarm(co_t *co);

/* lcore.c */
int luaopen_orrery_core(lua_State *L);
void lcore_dispatch(host_t *h, const char *kind, int32_t arg);
void lcore_clear_slot(host_t *h, int32_t slot);

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

/* tcp.c, http_server.c (see net.h) */
int luaopen_orrery_net_core(lua_State *L);
int luaopen_orrery_http_core(lua_State *L);

/* repl.c */
int repl_readline(lua_State *L);
void repl_close(host_t *h);

#endif
