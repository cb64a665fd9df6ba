/* SPDX-License-Identifier: MIT */
/* alloc.c -- the Lua state's allocator: glibc malloc on huge pages. */
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "host.h"

/* A million parked coroutines are close to a gigabyte of small objects.
 * Touching that much fresh memory in 4 KB pages costs more in page faults
 * than the work itself on a virtual machine, so the heap grows in large
 * steps and each new stretch is marked for transparent huge pages before
 * it is touched (the kernel's "madvise" mode, Debian's default). */
#define HUGE_ALIGN ((uintptr_t)2 << 20)

typedef struct alloc_s {
  uintptr_t seen; /* heap top already advised */
} alloc_t;

static alloc_t alloc_state;

static void advise_growth(alloc_t *a) {
  uintptr_t top = (uintptr_t)sbrk(0);
  if (top <= a->seen + HUGE_ALIGN) return;
  uintptr_t from = (a->seen + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1);
  uintptr_t to = top & ~(HUGE_ALIGN - 1);
  if (to > from) madvise((void *)from, to - from, MADV_HUGEPAGE);
  a->seen = top;
}

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  advise_growth(ud);
  return p;
}

lua_State *alloc_newstate(void) {
  if (getenv("ORRERY_LJ_ALLOC")) return luaL_newstate();
  mallopt(M_TOP_PAD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  alloc_state.seen = (uintptr_t)sbrk(0);
  lua_State *L = lua_newstate(l_alloc, &alloc_state);
  return L ? L : luaL_newstate();
}
