/* SPDX-License-Identifier: MIT */
/* work.h -- jobs on libuv's thread pool that a coroutine waits for. */
#ifndef ORRERY_WORK_H
#define ORRERY_WORK_H

#include "host.h"

/* Blocking work that libuv cannot do asynchronously (name resolution,
 * file I/O, SQLite) runs as a job: the type's work function runs on a pool
 * thread, then its done function on the loop, and a coroutine parked on
 * the job is woken with 0.
 *
 * Ownership: the owner allocates a structure that starts with a work_t
 * (the job's arguments and result follow it) and hands it to work_start.
 * From then on it calls work_release exactly once, when it no longer
 * wants the result: after reading it, after a timeout or cancellation
 * woke its coroutine first, or when the object holding the job is
 * collected. If the job has ended, release calls the type's free
 * function at once; otherwise the job is cancelled if it has not begun
 * (uv_cancel) and free runs on the loop when the pool hands it back. free
 * releases the result and the structure itself; it is the only way the
 * memory is reclaimed. A job that was released never wakes anyone and
 * never runs done, so done may assume that its owner is still there.
 *
 * A coroutine waits with work_wait before it parks, giving work_unpark as
 * its cleanup (sched_undo with the job as data): a timeout or a cancel that
 * wakes it first detaches it, so that the job never touches a coroutine
 * that has moved on or died. */

typedef struct work_s work_t;

typedef struct work_type_s {
  const char *what; /* shown in the coroutine dump */
  /* On a pool thread: must not touch Lua, the loop or the host. */
  void (*work)(work_t *w);
  /* On the loop when the job has ended and is still wanted: status is 0,
   * or UV_ECANCELED when the pool never ran it. May be NULL. */
  void (*done)(work_t *w, int status);
  /* On the loop: frees the job and its result. */
  void (*free)(work_t *w);
} work_type_t;

enum { WORK_QUEUED = 1, WORK_ENDED, WORK_RELEASED };

struct work_s {
  uv_work_t req;
  const work_type_t *type;
  host_t *host;
  co_t *co;   /* the coroutine to wake when it ends, or NULL */
  int status; /* once ended: 0, or UV_ECANCELED */
  uint8_t state;
};

/* Queues w; returns 0, or a negative libuv error (then nothing was
 * queued and the caller still owns w). */
int work_start(host_t *h, work_t *w, const work_type_t *type);
/* Makes co the coroutine that the job wakes; the caller parks it next
 * with work_unpark as its cleanup. */
void work_wait(work_t *w, co_t *co);
void work_unpark(co_t *co, void *data);
/* Whether the job has ended (its result can be read). */
static inline int work_ended(const work_t *w) {
  return w->state == WORK_ENDED;
}
void work_release(work_t *w);

#endif
