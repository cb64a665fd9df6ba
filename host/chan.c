/* SPDX-License-Identifier: MIT */
/* chan.c -- channels: ring indices, FIFO wait queues, close, select. */
#include <stdlib.h>

#include "host.h"

/* C owns the ring indices and the wait queues; the values live in Lua
 * (lua/orrery/chan.lua keeps the ring buffer and the per-coroutine
 * mailboxes). Each operation answers in the parking protocol: declined
 * (would block), parked, or one of the ORRERY_CHAN_* done variants that
 * tell the Lua side which value to move where, so that the whole
 * non-blocking path is a JIT-compiled FFI call plus a table store. */

#define OP_BLOCK ORRERY_DECLINED
#define OP_PARKED ORRERY_PARKED
#define OP_BUF ORRERY_CHAN_BUF
#define OP_PEER ORRERY_CHAN_PEER
#define OP_BUFPEER ORRERY_CHAN_BUFPEER
#define OP_CLOSED ORRERY_CHAN_CLOSED

static void q_push(waitq_t *q, waiter_t *w) {
  w->next = NULL;
  w->prev = q->tail;
  if (q->tail)
    q->tail->next = w;
  else
    q->head = w;
  q->tail = w;
  w->linked = 1;
}

static void q_unlink(waitq_t *q, waiter_t *w) {
  if (w->prev)
    w->prev->next = w->next;
  else
    q->head = w->next;
  if (w->next)
    w->next->prev = w->prev;
  else
    q->tail = w->prev;
  w->prev = w->next = NULL;
  w->linked = 0;
}

static waitq_t *q_of(waiter_t *w) {
  return w->kind == WAITER_RECV ? &w->ch->recvq : &w->ch->sendq;
}

/* The cleanup of a channel wait: unlinks every waiter co still has
 * queued on a channel. */
static void chan_undo(co_t *co, void *data) {
  (void)data;
  if (co->w1.linked) q_unlink(q_of(&co->w1), &co->w1);
  for (int32_t i = 0; i < co->nws; i++)
    if (co->ws[i].linked) q_unlink(q_of(&co->ws[i]), &co->ws[i]);
  co->nws = 0;
}

static void chan_retire(host_t *h, co_t *co) {
  (void)h;
  free(co->ws);
  co->ws = NULL;
  co->cap_ws = 0;
}

void chan_init(host_t *h) {
  sched_on_retire(h, chan_retire);
}

/* Takes the first waiter off q and wakes its coroutine. */
static waiter_t *q_fire(host_t *h, waitq_t *q, int st) {
  waiter_t *w = q->head;
  co_t *co = w->co;
  q_unlink(q, w);
  /* A single operation without a timeout registered only chan_undo, and
   * its one waiter has just been unlinked: nothing is left to undo. This
   * spares the wake an indirect call on the hottest path (sieve: 6%). */
  if (co->nundo == 1 && co->undo[0].fn == chan_undo && !co->nws) co->nundo = 0;
  sched_wake(h, co, WAKE_CODE(w->cas, st));
  return w;
}

static int try_send(host_t *h, chan_t *c, int32_t *io) {
  if (c->closed) return OP_CLOSED;
  if (c->recvq.head) {
    waiter_t *w = q_fire(h, &c->recvq, ORRERY_CHAN_ST_OK);
    io[1] = w->co->slot;
    io[2] = w->cas;
    return OP_PEER;
  }
  if (c->count < c->cap) {
    int32_t i = c->head + c->count;
    if (i >= c->cap) i -= c->cap;
    c->count++;
    io[1] = i;
    return OP_BUF;
  }
  return OP_BLOCK;
}

static int try_recv(host_t *h, chan_t *c, int32_t *io) {
  if (c->count > 0) {
    int32_t i = c->head;
    io[1] = i;
    if (++c->head == c->cap) c->head = 0;
    c->count--;
    if (c->sendq.head) {
      /* The buffer was full: the first parked sender's value moves into
       * the slot just freed, which is the new tail. */
      waiter_t *w = q_fire(h, &c->sendq, ORRERY_CHAN_ST_OK);
      c->count++;
      io[2] = w->co->slot;
      io[3] = w->cas;
      return OP_BUFPEER;
    }
    return OP_BUF;
  }
  if (c->sendq.head) {
    waiter_t *w = q_fire(h, &c->sendq, ORRERY_CHAN_ST_OK);
    io[1] = w->co->slot;
    io[2] = w->cas;
    return OP_PEER;
  }
  if (c->closed) return OP_CLOSED;
  return OP_BLOCK;
}

static inline __attribute__((always_inline)) int
park_single(host_t *h, chan_t *c, int32_t *io, int kind, double timeout) {
  co_t *co = h->current;
  if (!co) return OP_BLOCK;
  waiter_t *w = &co->w1;
  w->ch = c;
  w->kind = (uint8_t)kind;
  w->cas = -1;
  q_push(kind == WAITER_RECV ? &c->recvq : &c->sendq, w);
  sched_park(h, co, kind == WAITER_RECV ? WAIT_RECV : WAIT_SEND, NULL, c);
  sched_undo(co, chan_undo, NULL);
  timer_park(h, co, timeout);
  io[1] = co->slot;
  return OP_PARKED;
}

orrery_chan *orrery_ffi_chan_new(int32_t cap, uint64_t *id) {
  chan_t *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->cap = cap < 0 ? 0 : cap;
  c->id = host_current->next_chanid++;
  if (id) *id = c->id;
  return c;
}

/* Called by the Lua GC. A channel with parked waiters is still referenced
 * from their stacks, so its queues are empty unless the whole state is
 * being closed, when nobody will touch them again. */
void orrery_ffi_chan_free(orrery_chan *c) {
  free(c);
}

int orrery_ffi_chan_send(orrery_chan *c, int32_t *io, int block,
                         double timeout) {
  host_t *h = host_current;
  int r = try_send(h, c, io);
  if (r == OP_BLOCK && block) r = park_single(h, c, io, WAITER_SEND, timeout);
  return r;
}

int orrery_ffi_chan_recv(orrery_chan *c, int32_t *io, int block,
                         double timeout) {
  host_t *h = host_current;
  int r = try_recv(h, c, io);
  if (r == OP_BLOCK && block) r = park_single(h, c, io, WAITER_RECV, timeout);
  return r;
}

/* Returns -1 if the channel was already closed, else the number of
 * coroutines woken. Receivers wake with ok == false, senders raise. */
int orrery_ffi_chan_close(orrery_chan *c) {
  host_t *h = host_current;
  if (c->closed) return -1;
  c->closed = 1;
  int n = 0;
  while (c->recvq.head) q_fire(h, &c->recvq, ORRERY_CHAN_ST_CLOSED), n++;
  while (c->sendq.head) q_fire(h, &c->sendq, ORRERY_CHAN_ST_CLOSED), n++;
  return n;
}

int32_t orrery_ffi_chan_len(const orrery_chan *c) {
  return c->count;
}

int32_t orrery_ffi_chan_cap(const orrery_chan *c) {
  return c->cap;
}

int orrery_ffi_chan_closed(const orrery_chan *c) {
  return c->closed;
}

/* select: kinds[i] is 0 for a disabled case (Go's nil channel), 1 for a
 * receive and 2 for a send. Cases are polled in a random order, which picks
 * uniformly among the ready ones; io[0] gets the chosen case. If none is
 * ready and block is set, a waiter is queued on every enabled case (none
 * is matched against another of the same select, since matching only
 * happens when the other side arrives) and the first to fire disarms the
 * rest. Returns OP_BLOCK for `default`. */
int orrery_ffi_select(int32_t n, orrery_chan **chans, const int8_t *kinds,
                      int32_t *io, int block, double timeout) {
  host_t *h = host_current;
  co_t *co = h->current;
  int32_t order[64];
  int32_t *ord = n <= 64 ? order : malloc(sizeof(int32_t) * (size_t)n);
  if (!ord) return -1;
  int32_t m = 0;
  for (int32_t i = 0; i < n; i++) {
    if (!kinds[i]) continue;
    int32_t j = (int32_t)(sched_rand(h) % (uint64_t)(m + 1));
    ord[m] = ord[j];
    ord[j] = i;
    m++;
  }
  int r = OP_BLOCK;
  for (int32_t k = 0; k < m; k++) {
    int32_t i = ord[k];
    r = kinds[i] == 1 ? try_recv(h, chans[i], io) : try_send(h, chans[i], io);
    if (r != OP_BLOCK) {
      io[0] = i;
      break;
    }
  }
  if (ord != order) free(ord);
  if (r != OP_BLOCK || !block || !co) return r;
  if (co->cap_ws < n) {
    waiter_t *ws = realloc(co->ws, sizeof(waiter_t) * (size_t)n);
    if (!ws) return -1;
    co->ws = ws;
    co->cap_ws = n;
  }
  for (int32_t i = 0; i < n; i++) {
    waiter_t *w = &co->ws[i];
    w->co = co;
    w->ch = chans[i];
    w->cas = i;
    w->kind = kinds[i] == 1 ? WAITER_RECV : WAITER_SEND;
    w->linked = 0;
    if (kinds[i])
      q_push(w->kind == WAITER_RECV ? &w->ch->recvq : &w->ch->sendq, w);
  }
  co->nws = n;
  io[1] = co->slot;
  /* With no enabled case and no timeout this parks for good, like Go's
   * select {}; only a context cancellation can wake it. */
  sched_park(h, co, WAIT_SELECT, NULL, NULL);
  sched_undo(co, chan_undo, NULL);
  timer_park(h, co, timeout);
  return OP_PARKED;
}
