/* SPDX-License-Identifier: MIT */
/* tlist.c -- deadline lists: one list per duration, one heap timer. */
#include <stddef.h>
#include <stdlib.h>
#include <time.h>

#include "tlist.h"

/* sched_now()'s clock read cheaply: a kept-alive HTTP connection sets its
 * deadline once per request, and a precise reading costs as much as a
 * channel operation on some virtual machines. */
static double coarse_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void unlink_entry(tlist_t *t, tl_entry_t *e) {
  tl_list_t *l = &t->lists[e->list - 1];
  if (e->prev)
    e->prev->next = e->next;
  else
    l->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    l->tail = e->prev;
  e->prev = e->next = NULL;
  e->list = 0;
  t->nset--;
}

/* Deadlines are now plus the list's duration, so appending keeps the list
 * ordered. */
static void append(tlist_t *t, tl_entry_t *e, uint32_t li) {
  tl_list_t *l = &t->lists[li - 1];
  e->pos = e->when;
  e->prev = l->tail;
  e->next = NULL;
  if (l->tail)
    l->tail->next = e;
  else
    l->head = e;
  l->tail = e;
  e->list = li;
  t->nset++;
}

/* Points the timer at when unless it already fires earlier. A timer that
 * fires early (its entry moved later or left) finds nothing due and moves
 * on to the earliest place in line. */
static void arm(tlist_t *t, double when) {
  if (!t->tmr.hidx || when < t->tmr.when) timer_start(t->host, &t->tmr, when);
}

/* The timer's function: fires the deadlines that have passed. An entry
 * whose deadline was extended in place goes back in line. */
static void on_timer(tmr_t *tm) {
  tlist_t *t = (tlist_t *)((char *)tm - offsetof(tlist_t, tmr));
  double now = sched_now();
  for (uint32_t i = 0; i < t->nlists; i++) {
    tl_entry_t *e;
    while ((e = t->lists[i].head) && e->pos <= now) {
      unlink_entry(t, e);
      if (e->when > now) {
        append(t, e, i + 1);
        continue;
      }
      t->fire(e);
    }
  }
  double next = 0;
  for (uint32_t i = 0; i < t->nlists; i++) {
    tl_entry_t *e = t->lists[i].head;
    if (e && (!next || e->pos < next)) next = e->pos;
  }
  if (next) arm(t, next);
}

void tlist_init(tlist_t *t, host_t *h, void (*fire)(tl_entry_t *e)) {
  t->host = h;
  t->lists = NULL;
  t->nlists = t->nset = 0;
  t->tmr.kind = TMR_C;
  t->tmr.hidx = 0;
  t->tmr.fn = on_timer;
  t->fire = fire;
}

void tlist_close(tlist_t *t) {
  timer_stop(t->host, &t->tmr);
  free(t->lists);
  t->lists = NULL;
  t->nlists = t->nset = 0;
}

/* The list for a duration: an existing one, else an empty one reused,
 * else a new one. Returns its index + 1, or 0 without memory. */
static uint32_t list_for(tlist_t *t, uint32_t ms) {
  uint32_t empty = 0;
  for (uint32_t i = 0; i < t->nlists; i++) {
    if (t->lists[i].ms == ms) return i + 1;
    if (!empty && !t->lists[i].head) empty = i + 1;
  }
  if (empty) {
    t->lists[empty - 1].ms = ms;
    return empty;
  }
  tl_list_t *n = realloc(t->lists, sizeof(tl_list_t) * (t->nlists + 1));
  if (!n) return 0;
  t->lists = n;
  n[t->nlists].ms = ms;
  n[t->nlists].head = n[t->nlists].tail = NULL;
  return ++t->nlists;
}

void tlist_unset(tlist_t *t, tl_entry_t *e) {
  e->when = 0;
  if (!e->list) return;
  unlink_entry(t, e);
  /* A timer left in the heap would keep the loop alive, and delay the
   * deadlock report, until it fired. */
  if (!t->nset) timer_stop(t->host, &t->tmr);
}

void tlist_set(tlist_t *t, tl_entry_t *e, uint32_t ms) {
  if (!ms) {
    tlist_unset(t, e);
    return;
  }
  uint32_t li = e->list;
  double when = coarse_now() + ms * 1e-3;
  if (li && t->lists[li - 1].ms == ms) {
    /* An entry set again and again moves its deadline later without
     * moving in line, until it is a sixteenth of the duration ahead of
     * its place. */
    if (when - e->pos < ms * (1e-3 / 16)) {
      e->when = when;
      return;
    }
    unlink_entry(t, e);
  } else {
    if (li) unlink_entry(t, e);
    li = list_for(t, ms);
    if (!li) {
      e->when = 0;
      if (!t->nset) timer_stop(t->host, &t->tmr);
      return;
    }
  }
  e->when = when;
  append(t, e, li);
  arm(t, when);
}

int tlist_passed(const tl_entry_t *e) {
  return e->when > 0 && e->when <= sched_now();
}
