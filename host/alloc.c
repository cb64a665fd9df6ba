/* SPDX-License-Identifier: MIT */
/* alloc.c -- the Lua state's allocator: size classes for small objects,
 * glibc malloc for the rest, a memory limit, and recovery after a failure. */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
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
#include <sanitizer/lsan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
/* Chunks are mapped by the allocator, so LeakSanitizer would not look
 * inside them for pointers to malloc'd blocks (large Lua objects, C
 * state held by userdata): a process that exits without closing its Lua
 * state (os.exit) would report everything those reference as leaked. */
#define ROOT_ADD(p, n) __lsan_register_root_region((p), (n))
#define ROOT_DEL(p, n) __lsan_unregister_root_region((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#define ROOT_ADD(p, n) ((void)(p), (void)(n))
#define ROOT_DEL(p, n) ((void)(p), (void)(n))
#endif

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL */
#endif

/* Most Lua objects are small and short-lived: a request's tables, its
 * strings, a coroutine's stack. glibc's malloc spends a few hundred
 * instructions on each malloc/free pair once the garbage collector frees
 * in bursts that overflow its thread cache, so objects up to SMALL_MAX
 * bytes come from CHUNK-sized slabs, each of one 16-byte size class, with
 * a free list and a count of the blocks it has handed out. Chunks are
 * mapped by this file, CHUNK-aligned, so the chunk of a block is its
 * address masked; LuaJIT passes the size of every block it frees, so
 * blocks carry no header. Larger objects go to malloc and back.
 *
 * A chunk whose last block is freed becomes a spare, reused by the next
 * chunk of any class. Spares beyond what the heap could soon need are
 * unmapped (alloc_maintain), and all of them when an allocation fails, so
 * that the memory a burst of garbage leaves behind is usable again for
 * large objects and for C's malloc. (A single free list per class, as
 * before, never returned anything: after a handler had grown a table to
 * the address-space limit, the process failed every request until it
 * died. Finding the empty chunks by walking such lists took 6 s for 28
 * million free blocks; a count per chunk costs nothing to consult.)
 *
 * A million parked coroutines are close to a gigabyte of small objects,
 * and faulting that in one 4 KB page at a time costs more than the work
 * itself on a virtual machine. Once the heap holds POPULATE_MIN bytes,
 * each new chunk is populated in one call (MADV_POPULATE_WRITE): 32
 * faults become one system call, on any kernel and THP setting. (Below
 * that, pages are faulted as they are carved: populating a chunk for
 * every size class would add 4 MB to a small script's resident set.)
 * Transparent huge pages (MADV_HUGEPAGE on the chunks) are opt-in,
 * ORRERY_HUGEPAGES=1: they halved the page-fault time on the machine this was
 * first tuned on, but made `spawn.lua 1000000` two to three times slower
 * (1.7-2.5 s of system time instead of 0.3-0.4 s) on a 2-core EPYC VM in THP
 * "madvise" mode, and they are a known source of latency spikes in long-running
 * servers. */
#define CLASS_SHIFT 4
#define SMALL_MAX 512
#define NCLASSES (SMALL_MAX >> CLASS_SHIFT)
#define CHUNK ((size_t)128 << 10)
#define RESERVE_PLAIN ((size_t)4 << 20) /* address space mapped at once */
#define RESERVE_HUGE ((size_t)32 << 20) /* the same with huge pages */
#define HUGE_ALIGN ((uintptr_t)2 << 20)
#define SPARE_MIN ((size_t)16 << 20)    /* spares kept whatever the heap */
#define POPULATE_MIN ((size_t)16 << 20) /* heap size from which to populate */

typedef struct chunk_s {
  struct chunk_s *next, *prev; /* in its class's list of chunks with room */
  void *free;                  /* freed blocks */
  char *bump;                  /* the uncarved rest ends at the chunk's end */
  uint32_t live;               /* blocks handed out */
  uint32_t cls;                /* size class; 0 for a spare */
  uint32_t linked;             /* in its class's list */
  uint32_t pad;                /* keeps the blocks 16-byte aligned */
} chunk_t;

struct alloc_s {
  chunk_t *avail[NCLASSES + 1]; /* per class (1..NCLASSES): chunks with room */
  chunk_t *spare;               /* empty chunks, linked by next */
  size_t nspare;
  char *resv, *resv_end; /* mapped, not yet handed out as chunks */
  size_t used;           /* bytes LuaJIT holds (its gc.total) */
  size_t limit;          /* 0: none */
  size_t failures;       /* allocations refused, for orrery.memory() */
  int over;              /* a grow hit the limit: the headroom is open */
  int failed;            /* an allocation failed since alloc_maintain */
  int huge;              /* ORRERY_HUGEPAGES */
};

/* -- Chunks -- */

static inline chunk_t *chunk_of(const void *p) {
  return (chunk_t *)((uintptr_t)p & ~(uintptr_t)(CHUNK - 1));
}

/* Maps the next reservation, aligned to CHUNK (to 2 MB for huge pages). */
static int reserve(alloc_t *a) {
  size_t n = a->huge ? RESERVE_HUGE : RESERVE_PLAIN;
  size_t align = a->huge ? HUGE_ALIGN : CHUNK;
  char *p = mmap(NULL, n + align, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 0;
  char *lo = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
  if (lo > p) munmap(p, (size_t)(lo - p));
  if (p + n + align > lo + n) munmap(lo + n, (size_t)(p + n + align - lo - n));
  if (a->huge) madvise(lo, n, MADV_HUGEPAGE);
  a->resv = lo;
  a->resv_end = lo + n;
  return 1;
}

/* A chunk for class c at the head of its list, NULL when out of memory. */
static chunk_t *chunk_new(alloc_t *a, uint32_t c) {
  chunk_t *ch = a->spare;
  if (ch) {
    a->spare = ch->next;
    a->nspare--;
  } else {
    if (a->resv == a->resv_end && !reserve(a)) return NULL;
    ch = (chunk_t *)a->resv;
    a->resv += CHUNK;
    ROOT_ADD(ch, CHUNK);
    if (!a->huge && a->used >= POPULATE_MIN)
      madvise(ch, CHUNK, MADV_POPULATE_WRITE);
  }
  ch->free = NULL;
  ch->bump = (char *)(ch + 1);
  ch->live = 0;
  ch->cls = c;
  ch->linked = 1;
  ch->prev = NULL;
  ch->next = a->avail[c];
  if (ch->next) ch->next->prev = ch;
  a->avail[c] = ch;
  POISON(ch->bump, CHUNK - sizeof(chunk_t));
  return ch;
}

static inline void chunk_unlink(alloc_t *a, chunk_t *ch) {
  if (ch->prev)
    ch->prev->next = ch->next;
  else
    a->avail[ch->cls] = ch->next;
  if (ch->next) ch->next->prev = ch->prev;
  ch->linked = 0;
}

/* Unmaps spares until at most keep are left. */
static void spare_release(alloc_t *a, size_t keep) {
  while (a->nspare > keep) {
    chunk_t *ch = a->spare;
    a->spare = ch->next;
    a->nspare--;
    UNPOISON(ch, CHUNK);
    ROOT_DEL(ch, CHUNK);
    /* Unmapping splits the reservation's mapping; should the kernel's
     * limit on mappings refuse that, the pages are still given back. */
    if (munmap(ch, CHUNK) != 0) madvise(ch, CHUNK, MADV_DONTNEED);
  }
}

/* -- Small blocks -- */

static inline uint32_t size_class(size_t n) {
  return (uint32_t)((n + (1u << CLASS_SHIFT) - 1) >> CLASS_SHIFT);
}

/* A block of class c for an object of n bytes, NULL when out of memory. */
static inline void *small_get(alloc_t *a, uint32_t c, size_t n) {
  chunk_t *ch = a->avail[c];
  size_t sz = (size_t)c << CLASS_SHIFT;
  if (!ch && !(ch = chunk_new(a, c))) return NULL;
  void *p = ch->free;
  if (p) {
    UNPOISON(p, sizeof(void *));
    ch->free = *(void **)p;
  } else {
    p = ch->bump;
    ch->bump += sz;
  }
  ch->live++;
  if (!ch->free && (size_t)((char *)ch + CHUNK - ch->bump) < sz)
    chunk_unlink(a, ch); /* full */
  UNPOISON(p, n);
  return p;
}

/* Files a block under its chunk, whatever size it was last resized to. */
static inline void small_put(alloc_t *a, void *p) {
  chunk_t *ch = chunk_of(p);
  UNPOISON(p, sizeof(void *));
  *(void **)p = ch->free;
  ch->free = p;
  POISON(p, (size_t)ch->cls << CLASS_SHIFT);
  if (--ch->live == 0) {
    if (ch->linked) chunk_unlink(a, ch);
    ch->cls = 0;
    ch->next = a->spare;
    a->spare = ch;
    a->nspare++;
  } else if (!ch->linked) {
    ch->linked = 1;
    ch->prev = NULL;
    ch->next = a->avail[ch->cls];
    if (ch->next) ch->next->prev = ch;
    a->avail[ch->cls] = ch;
  }
}

/* Releases a block LuaJIT allocated with n bytes. */
static inline void release(alloc_t *a, void *p, size_t n) {
  if (n <= SMALL_MAX)
    small_put(a, p);
  else
    free(p);
}

/* -- The allocator -- */

/* The limit leaves headroom: the grow that crosses it fails, and until
 * alloc_maintain has collected, later ones may use up to a sixteenth
 * more (1 to 64 MB), so that the error's unwinding, its log line and an
 * HTTP 500 can still allocate. Outside an orrery coroutine (a timer or
 * signal callback, where an error is a panic) the headroom is open from
 * the start: the coroutine that allocates is the one that fails first. */
static size_t headroom(size_t limit) {
  size_t r = limit / 16;
  if (r < ((size_t)1 << 20)) r = (size_t)1 << 20;
  if (r > ((size_t)64 << 20)) r = (size_t)64 << 20;
  return r;
}

static int over_limit(alloc_t *a, size_t grow) {
  size_t to = a->used + grow;
  if (to <= a->limit) return 0;
  int in_co = host_current && host_current->current;
  if (to <= a->limit + headroom(a->limit) && (a->over || !in_co)) return 0;
  a->over = 1;
  return 1;
}

/* Counts a refused allocation; alloc_maintain collects after it. */
static void *refused(alloc_t *a) {
  a->failures++;
  a->failed = 1;
  return NULL;
}

static void *alloc_raw(alloc_t *a, void *ptr, size_t osize, size_t nsize) {
  if (nsize <= SMALL_MAX) {
    uint32_t c = size_class(nsize);
    if (ptr && osize <= SMALL_MAX && size_class(osize) == c) {
      UNPOISON(ptr, nsize);
      return ptr;
    }
    void *p = small_get(a, c, nsize);
    if (!p) {
      /* A small block shrunk in place stays valid: it is only larger
       * than its new size, and goes back to its own chunk when freed. */
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
      small_put(a, ptr);
    }
  } else {
    p = realloc(ptr, nsize);
  }
  return p;
}

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  alloc_t *a = ud;
  if (nsize == 0) {
    if (ptr) {
      release(a, ptr, osize);
      a->used -= osize;
    }
    return NULL;
  }
  if (!ptr) osize = 0;
  if (a->limit && nsize > osize && over_limit(a, nsize - osize))
    return refused(a);
  void *p = alloc_raw(a, ptr, osize, nsize);
  if (!p) {
    /* Out of address space or malloc: unmapping the spare chunks may
     * make room for the retry. */
    spare_release(a, 0);
    p = alloc_raw(a, ptr, osize, nsize);
    if (!p) return refused(a);
  }
  a->used += nsize - osize;
  return p;
}

/* -- Life cycle and maintenance -- */

/* Parses "512M", "2G", "65536"; 0 when s is not a size. */
static size_t parse_size(const char *s) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) return 0;
  switch (*end) {
  case 'k':
  case 'K':
    v <<= 10;
    end++;
    break;
  case 'm':
  case 'M':
    v <<= 20;
    end++;
    break;
  case 'g':
  case 'G':
    v <<= 30;
    end++;
    break;
  default:
    break;
  }
  return *end ? 0 : (size_t)v;
}

lua_State *alloc_newstate(alloc_t **out) {
  *out = NULL;
  if (getenv("ORRERY_LJ_ALLOC")) return luaL_newstate();
  alloc_t *a = calloc(1, sizeof(*a));
  if (!a) return NULL;
  const char *hp = getenv("ORRERY_HUGEPAGES");
  a->huge = hp && !strcmp(hp, "1");
  const char *lim = getenv("ORRERY_MEMORY_LIMIT");
  if (lim && *lim && !(a->limit = parse_size(lim)))
    fprintf(stderr, "orrery: ignoring ORRERY_MEMORY_LIMIT=%s (not a size)\n",
            lim);
  lua_State *L = lua_newstate(l_alloc, a);
  if (!L) {
    alloc_free(a);
    return NULL;
  }
  *out = a;
  return L;
}

/* After lua_close every block has been freed, so every chunk is a spare;
 * chunks are unmapped one by one because the holes spare_release left in
 * a reservation may since have been mapped by someone else. */
void alloc_free(alloc_t *a) {
  if (!a) return;
  spare_release(a, 0);
  if (a->resv_end > a->resv) munmap(a->resv, (size_t)(a->resv_end - a->resv));
  free(a);
}

static alloc_t *alloc_of(lua_State *L) {
  void *ud;
  return lua_getallocf(L, &ud) == l_alloc ? ud : NULL;
}

/* After an allocation failed, LuaJIT raised "not enough memory" in the
 * allocating coroutine and nothing collects the garbage it left: LuaJIT
 * has no emergency collection, and its next cycle starts only when the
 * heap doubles, which it cannot. So the scheduler calls this after each
 * batch of coroutines and after a coroutine ends (not after every resume:
 * that cost 5% of a channel ping-pong's instructions): after a failure it runs
 * a full cycle, unmaps every spare chunk and lets glibc return its free memory.
 * Otherwise it unmaps the spares beyond what the heap could reuse before its
 * next collection (as many bytes as are live, and SPARE_MIN): a heap that has
 * shrunk gives memory back, one that breathes with the collector does not map
 * and fault it in again. */
static int collect(lua_State *L) {
  lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}

void alloc_maintain(lua_State *L) {
  alloc_t *a = alloc_of(L);
  if (!a) return;
  if (a->failed) {
    a->failed = 0;
    /* Protected: a finalizer's error must not end the process here. */
    if (lua_cpcall(L, collect, NULL) != 0) lua_pop(L, 1);
    spare_release(a, 0);
    malloc_trim(0);
    a->over = 0;
  } else if (a->nspare * CHUNK > SPARE_MIN + a->used) {
    spare_release(a, (SPARE_MIN + a->used) / CHUNK);
  }
}

/* core.memory([limit]) -> { used, limit, failures }: the bytes of live
 * Lua objects, the limit (false for none) and how many allocations were
 * refused. With an argument, first sets the limit (0: none). */
int alloc_lmemory(lua_State *L) {
  alloc_t *a = alloc_of(L);
  if (!lua_isnoneornil(L, 1)) {
    lua_Number n = luaL_checknumber(L, 1);
    if (!(n >= 0)) return luaL_argerror(L, 1, "limit must be >= 0");
    if (!a) return luaL_error(L, "memory limit unavailable (ORRERY_LJ_ALLOC)");
    a->limit = (size_t)n;
    a->over = 0;
  }
  lua_createtable(L, 0, 3);
  if (a)
    lua_pushnumber(L, (lua_Number)a->used);
  else
    lua_pushnumber(L, lua_gc(L, LUA_GCCOUNT, 0) * 1024.0);
  lua_setfield(L, -2, "used");
  if (a && a->limit)
    lua_pushnumber(L, (lua_Number)a->limit);
  else
    lua_pushboolean(L, 0);
  lua_setfield(L, -2, "limit");
  lua_pushnumber(L, a ? (lua_Number)a->failures : 0);
  lua_setfield(L, -2, "failures");
  return 1;
}
