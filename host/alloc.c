/* SPDX-License-Identifier: MIT */
/* alloc.c -- the Lua state's allocator: size classes for small objects,
 * glibc malloc for the rest, on huge pages. */
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "host.h"

#if defined(__SANITIZE_ADDRESS__)
#define ORRERY_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ORRERY_ASAN 1
#endif
#endif
#ifdef ORRERY_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Most Lua objects are small and short-lived: a request's tables, its
 * strings, a coroutine's stack. glibc's malloc spends a few hundred
 * instructions on each malloc/free pair once the garbage collector frees
 * in bursts that overflow its thread cache, so objects up to SMALL_MAX
 * bytes come from free lists, one per 16-byte size class, carved from
 * CHUNK-sized blocks. LuaJIT passes the size of every block it frees, so
 * blocks carry no header. Freed small blocks stay in their lists for the
 * life of the process (reused by later objects of the same class, never
 * returned to malloc); larger objects go to malloc and back.
 *
 * A million parked coroutines are close to a gigabyte of small objects.
 * Touching that much fresh memory in 4 KB pages costs more in page faults
 * than the work itself on a virtual machine, so the heap grows in large
 * steps and each new stretch is marked for transparent huge pages before
 * it is touched (the kernel's "madvise" mode, Debian's default). */
#define HUGE_ALIGN ((uintptr_t)2 << 20)
#define CLASS_SHIFT 4
#define SMALL_MAX 512
#define NCLASSES (SMALL_MAX >> CLASS_SHIFT)
#define CHUNK ((size_t)256 << 10)

typedef struct chunk_s {
  struct chunk_s *next;
  uintptr_t pad; /* keeps the blocks 16-byte aligned */
} chunk_t;

typedef struct alloc_s {
  uintptr_t seen;           /* heap top already advised */
  void *free[NCLASSES + 1]; /* per class (1..NCLASSES): free blocks */
  char *bump, *end;         /* the uncarved rest of the newest chunk */
  chunk_t *chunks;          /* every chunk, freed at exit */
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

static inline size_t size_class(size_t n) {
  return (n + (1u << CLASS_SHIFT) - 1) >> CLASS_SHIFT;
}

static int refill(alloc_t *a) {
  chunk_t *c = malloc(CHUNK);
  if (!c) return 0;
  advise_growth(a);
  c->next = a->chunks;
  a->chunks = c;
  a->bump = (char *)(c + 1);
  a->end = (char *)c + CHUNK;
  POISON(a->bump, (size_t)(a->end - a->bump));
  return 1;
}

/* A block of class c for an object of n bytes, NULL when out of memory. */
static inline void *small_get(alloc_t *a, size_t c, size_t n) {
  void *p = a->free[c];
  if (p) {
    UNPOISON(p, sizeof(void *));
    a->free[c] = *(void **)p;
  } else {
    size_t sz = c << CLASS_SHIFT;
    if ((size_t)(a->end - a->bump) < sz && !refill(a)) return NULL;
    p = a->bump;
    a->bump += sz;
  }
  UNPOISON(p, n);
  return p;
}

static inline void small_put(alloc_t *a, void *p, size_t c) {
  UNPOISON(p, sizeof(void *));
  *(void **)p = a->free[c];
  a->free[c] = p;
  POISON(p, c << CLASS_SHIFT);
}

/* Releases a block LuaJIT allocated with n bytes. */
static inline void release(alloc_t *a, void *p, size_t n) {
  if (n <= SMALL_MAX)
    small_put(a, p, size_class(n));
  else
    free(p);
}

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  alloc_t *a = ud;
  if (nsize == 0) {
    if (ptr) release(a, ptr, osize);
    return NULL;
  }
  if (!ptr) osize = 0;
  if (nsize <= SMALL_MAX) {
    size_t c = size_class(nsize);
    if (ptr && osize <= SMALL_MAX && size_class(osize) == c) {
      UNPOISON(ptr, nsize);
      return ptr;
    }
    void *p = small_get(a, c, nsize);
    if (!p) {
      /* A small block shrunk in place stays valid: it is only larger
       * than its new class, and is filed under that class when freed. */
      if (ptr && osize <= SMALL_MAX && osize > nsize) return ptr;
      return NULL;
    }
    if (ptr) {
      memcpy(p, ptr, osize < nsize ? osize : nsize);
      release(a, ptr, osize);
    }
    return p;
  }
  void *p;
  if (ptr && osize <= SMALL_MAX) {
    p = malloc(nsize);
    if (p) {
      memcpy(p, ptr, osize);
      small_put(a, ptr, size_class(osize));
    }
  } else {
    p = realloc(ptr, nsize);
  }
  if (p) advise_growth(a);
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

void alloc_done(void) {
  alloc_t *a = &alloc_state;
  while (a->chunks) {
    chunk_t *c = a->chunks;
    a->chunks = c->next;
    UNPOISON(c, CHUNK);
    free(c);
  }
  memset(a->free, 0, sizeof a->free);
  a->bump = a->end = NULL;
}
