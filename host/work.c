/* SPDX-License-Identifier: MIT */
/* work.c -- thread-pool jobs: queue, wake the waiting coroutine, release. */
#include "work.h"

static void on_work(uv_work_t *req) {
  work_t *w = req->data;
  w->type->work(w);
}

/* Runs on the loop when the pool hands the job back, also when uv_cancel
 * took it off the queue (status UV_ECANCELED). */
static void on_after_work(uv_work_t *req, int status) {
  work_t *w = req->data;
  if (w->state == WORK_RELEASED) {
    w->type->free(w);
    return;
  }
  w->state = WORK_ENDED;
  w->status = status;
  if (w->type->done) w->type->done(w, status);
  co_t *co = w->co;
  w->co = NULL;
  /* Once the main coroutine has ended nothing runs again: leave parked
   * coroutines alone while the loop drains. */
  if (co && !w->host->exiting) sched_wake(w->host, co, 0);
}

int work_start(host_t *h, work_t *w, const work_type_t *type) {
  w->type = type;
  w->host = h;
  w->co = NULL;
  w->status = 0;
  w->state = WORK_QUEUED;
  w->req.data = w;
  return uv_queue_work(h->loop, &w->req, on_work, on_after_work);
}

void work_wait(work_t *w, co_t *co) {
  w->co = co;
}

void work_unpark(co_t *co, void *data) {
  work_t *w = data;
  if (w->co == co) w->co = NULL;
}

void work_release(work_t *w) {
  if (w->state == WORK_ENDED) {
    w->type->free(w);
    return;
  }
  w->state = WORK_RELEASED;
  w->co = NULL;
  /* A job that has not begun leaves the queue now (its after-work
   * callback still runs, with UV_ECANCELED); one that runs finishes
   * first. Either way free runs in on_after_work. */
  uv_cancel((uv_req_t *)&w->req);
}
