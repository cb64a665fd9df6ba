/* SPDX-License-Identifier: MIT */
/* tlist.h -- deadline lists: many deadlines of a few durations behind one
 * timer of the heap (timer.c). */
#ifndef ORRERY_TLIST_H
#define ORRERY_TLIST_H

#include "host.h"

/* A deadline that is set again and again (a connection's read deadline,
 * moved on every request) would cost a heap operation each time in the
 * timer heap. Here entries with the same duration share a list ordered by
 * deadline, so that setting one is at most an unlink and an append, and
 * one TMR_C timer in the heap serves every list of the set. An entry that
 * is set again within a sixteenth of its duration keeps its place and
 * only records its new deadline: it fires at most that much late.
 *
 * The clock is sched_now()'s (CLOCK_MONOTONIC, seconds). Setting a
 * deadline reads the coarse variant of that clock, a plain memory read in
 * the vDSO that lags by at most a scheduler tick; expiry compares with
 * the precise reading, like every other timer in the heap.
 *
 * Ownership: the owner embeds a tlist_t and its tl_entry_t's in its own
 * structures and must tlist_unset an entry before freeing it and call
 * tlist_close before freeing the set; the set allocates only its array of
 * lists. While an entry is set, the set's timer is in the heap and keeps
 * the loop alive. */

typedef struct tl_entry_s tl_entry_t;
struct tl_entry_s {
  double when; /* the deadline, 0 when unset; kept once it has passed */
  double pos;  /* the deadline that placed it in its list */
  tl_entry_t *prev, *next;
  uint32_t list; /* 1 + index of its list, 0 when in none */
};

typedef struct {
  uint32_t ms; /* the duration of every entry in the list */
  tl_entry_t *head, *tail;
} tl_list_t;

typedef struct tlist_s {
  host_t *host;
  tl_list_t *lists;
  uint32_t nlists;
  uint32_t nset;               /* entries in some list */
  tmr_t tmr;                   /* TMR_C: armed at the earliest place in line */
  void (*fire)(tl_entry_t *e); /* an entry's deadline passed (it is unset) */
} tlist_t;

void tlist_init(tlist_t *t, host_t *h, void (*fire)(tl_entry_t *e));
void tlist_close(tlist_t *t);
/* Sets e's deadline to ms milliseconds from now; 0 unsets it. */
void tlist_set(tlist_t *t, tl_entry_t *e, uint32_t ms);
void tlist_unset(tlist_t *t, tl_entry_t *e);
/* Whether e has a deadline that has passed. */
int tlist_passed(const tl_entry_t *e);

#endif
