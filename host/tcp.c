/* SPDX-License-Identifier: MIT */
/* tcp.c -- orrery.net.core: TCP and unix-socket listeners and connections
 * with coroutine-blocking accept, connect, read and write. */
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "errors.h"
#include "net.h"

#define CONN_MT "orrery.net.conn"
#define LIS_MT "orrery.net.listener"
#define DNS_MT "orrery.net.dns"

/* A listening socket. Allocated by listen, freed in its close callback;
 * the userdata is pinned until it is closed, like a connection's. */
struct net_listener_s {
  net_stream_u u;
  host_t *host;
  net_listener_t *prev, *next;
  co_t *waiter;
  int pending; /* libuv holds an accepted socket for us */
  int err;
  uint8_t is_pipe, closing;
  int ref;
  char *path; /* unix socket path, unlinked on close */
};

/* Read buffers start at this size; empty ones of this size are pooled. */
#define RBUF_SIZE 8192
#define RBUF_POOL_MAX 64

/* The connections whose read deadline has one duration, oldest first:
 * deadlines are the loop time plus the duration, so appending keeps the
 * list ordered. */
typedef struct {
  uint32_t ms;
  net_conn_t *head, *tail;
} dl_list_t;

/* Per-host registry of live sockets, swept when the Lua state closes so
 * that every handle is closed with a callback that frees it; it also
 * holds the pool of idle read buffers and the deadline lists. The state
 * itself is freed in the close callback of its timer. */
typedef struct net_state_s {
  net_conn_t *conns;
  net_listener_t *lis;
  char *pool; /* free read buffers, linked through their first bytes */
  uint32_t npool;
  dl_list_t *dls;
  uint32_t ndls;
  uint64_t dl_when; /* when dl_timer fires, 0 when it is stopped */
  uv_timer_t dl_timer;
} net_state_t;

typedef struct {
  net_conn_t *c;
} conn_ud;

typedef struct {
  net_listener_t *l;
} lis_ud;

/* Error codes handed to Lua: short stable words (the list is in errors.h). */
const char *net_errstr(int e) {
  return err_net(e);
}

static net_state_t *state_of(host_t *h) {
  if (!h->net) {
    net_state_t *st = calloc(1, sizeof(net_state_t));
    if (!st) return NULL;
    uv_timer_init(h->loop, &st->dl_timer);
    st->dl_timer.data = st;
    /* A deadline matters only to a coroutine parked on a connection that
     * is reading, which keeps the loop alive by itself; a stale timer must
     * not delay the end of the program. */
    uv_unref((uv_handle_t *)&st->dl_timer);
    h->net = st;
  }
  return h->net;
}

static void on_state_close(uv_handle_t *hd) {
  net_state_t *st = hd->data;
  while (st->pool) {
    char *b = st->pool;
    st->pool = *(char **)b;
    free(b);
  }
  free(st->dls);
  free(st);
}

/* -- Read buffers -- */

static char *rbuf_get(host_t *h) {
  net_state_t *st = h->net;
  if (st && st->pool) {
    char *b = st->pool;
    st->pool = *(char **)b;
    st->npool--;
    return b;
  }
  return malloc(RBUF_SIZE);
}

void net_shrink(net_conn_t *c) {
  if (!c->rbuf || c->rlen != c->rstart || c->paused) return;
  net_state_t *st = c->host->net;
  char *b = c->rbuf;
  size_t cap = c->rcap;
  c->rbuf = NULL;
  c->rcap = c->rlen = c->rstart = 0;
  if (st && st->npool < RBUF_POOL_MAX && !c->dead && cap == RBUF_SIZE) {
    *(char **)b = st->pool;
    st->pool = b;
    st->npool++;
  } else {
    free(b);
  }
}

/* -- Read deadlines -- */

uint64_t net_now_ms(net_conn_t *c) {
  return uv_now(c->host->loop);
}

static void dl_unlink(net_state_t *st, net_conn_t *c) {
  if (!c->dlist) return;
  dl_list_t *l = &st->dls[c->dlist - 1];
  if (c->dprev)
    c->dprev->dnext = c->dnext;
  else
    l->head = c->dnext;
  if (c->dnext)
    c->dnext->dprev = c->dprev;
  else
    l->tail = c->dprev;
  c->dprev = c->dnext = NULL;
  c->dlist = 0;
}

static void on_dl_timer(uv_timer_t *t);

static void dl_arm(net_state_t *st, uv_loop_t *loop, uint64_t when) {
  uint64_t now = uv_now(loop);
  st->dl_when = when;
  uv_timer_start(&st->dl_timer, on_dl_timer, when > now ? when - now : 0, 0);
}

static void dl_append(net_state_t *st, net_conn_t *c, uint32_t li) {
  dl_list_t *l = &st->dls[li - 1];
  c->dpos = c->dl;
  c->dprev = l->tail;
  c->dnext = NULL;
  if (l->tail)
    l->tail->dnext = c;
  else
    l->head = c;
  l->tail = c;
  c->dlist = li;
}

/* Fires the deadlines that have passed and points the timer at the
 * earliest place in line left. A connection whose deadline was extended
 * in place goes back in line. */
static void on_dl_timer(uv_timer_t *t) {
  net_state_t *st = t->data;
  uint64_t now = uv_now(t->loop);
  st->dl_when = 0;
  for (uint32_t i = 0; i < st->ndls; i++) {
    net_conn_t *c;
    while ((c = st->dls[i].head) && c->dpos <= now) {
      dl_unlink(st, c);
      if (c->dl > now) {
        dl_append(st, c, i + 1);
        continue;
      }
      if (c->on_deadline) c->on_deadline(c);
    }
  }
  uint64_t next = 0;
  for (uint32_t i = 0; i < st->ndls; i++) {
    net_conn_t *c = st->dls[i].head;
    if (c && (!next || c->dpos < next)) next = c->dpos;
  }
  if (next && (!st->dl_when || next < st->dl_when)) dl_arm(st, t->loop, next);
}

/* The list for a duration: an existing one, else an empty one reused,
 * else a new one. Returns its index + 1, or 0 without memory. */
static uint32_t dl_list_for(net_state_t *st, uint32_t ms) {
  uint32_t empty = 0;
  for (uint32_t i = 0; i < st->ndls; i++) {
    if (st->dls[i].ms == ms) return i + 1;
    if (!empty && !st->dls[i].head) empty = i + 1;
  }
  if (empty) {
    st->dls[empty - 1].ms = ms;
    return empty;
  }
  dl_list_t *n = realloc(st->dls, sizeof(dl_list_t) * (st->ndls + 1));
  if (!n) return 0;
  st->dls = n;
  n[st->ndls].ms = ms;
  n[st->ndls].head = n[st->ndls].tail = NULL;
  return ++st->ndls;
}

void net_deadline(net_conn_t *c, uint32_t ms) {
  net_state_t *st = c->host->net;
  if (!st) return;
  uint32_t li = c->dlist;
  if (!ms || c->closing) {
    dl_unlink(st, c);
    c->dl = 0;
    return;
  }
  uv_loop_t *loop = c->host->loop;
  uint64_t dl = uv_now(loop) + ms;
  if (li && st->dls[li - 1].ms == ms) {
    /* A connection served again and again moves its deadline later
     * without moving in line, until it is a sixteenth of the duration
     * ahead of its place: its deadline fires at most that much late. */
    if (dl - c->dpos < ms / 16) {
      c->dl = dl;
      return;
    }
    dl_unlink(st, c);
  } else {
    dl_unlink(st, c);
    li = dl_list_for(st, ms);
    if (!li) {
      c->dl = 0;
      return;
    }
  }
  c->dl = dl;
  dl_append(st, c, li);
  /* A later deadline leaves the timer alone: when it fires early, it
   * finds nothing due and moves on to the new earliest deadline. */
  if (!st->dl_when || dl < st->dl_when) dl_arm(st, loop, dl);
}

static void wake(host_t *h, co_t *co, int32_t code) {
  /* Once the main coroutine has ended nothing runs again: leave parked
   * coroutines alone while handles are torn down. */
  if (co && !h->exiting) sched_wake(h, co, code);
}

/* -- Connections -- */

static void conn_free(net_conn_t *c) {
  if (c->ud_free) c->ud_free(c->ud);
  free(c->rbuf);
  free(c->linger);
  free(c);
}

static void on_conn_close(uv_handle_t *hd) {
  net_conn_t *c = hd->data;
  if (--c->nhandles == 0) conn_free(c);
}

static void conn_unlink(net_conn_t *c) {
  net_state_t *st = c->host->net;
  if (c->prev)
    c->prev->next = c->next;
  else if (st && st->conns == c)
    st->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

static void close_now(net_conn_t *c) {
  if (c->dead) return;
  c->dead = c->closing = 1;
  conn_unlink(c);
  if (c->host->net) dl_unlink(c->host->net, c);
  c->on_deadline = NULL;
  if (c->rco) {
    co_t *co = c->rco;
    c->rco = NULL;
    wake(c->host, co, 0);
  }
  uv_close(&c->u.h, on_conn_close);
  if (c->lingering) uv_close((uv_handle_t *)c->linger, on_conn_close);
}

static net_conn_t *conn_new(host_t *h, int is_pipe) {
  net_conn_t *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  int r = is_pipe ? uv_pipe_init(h->loop, &c->u.pipe, 0)
                  : uv_tcp_init(h->loop, &c->u.tcp);
  if (r) {
    free(c);
    return NULL;
  }
  c->host = h;
  c->is_pipe = (uint8_t)is_pipe;
  c->u.h.data = c;
  c->nhandles = 1;
  c->ref = LUA_NOREF;
  c->rmax = 1 << 20;
  net_state_t *st = state_of(h);
  c->next = st->conns;
  if (st->conns) st->conns->prev = c;
  st->conns = c;
  return c;
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  net_conn_t *c = hd->data;
  (void)suggested;
  if (c->lingering) c->rlen = c->rstart = 0; /* input is discarded */
  if (!c->rbuf && c->rmax >= RBUF_SIZE) {
    c->rbuf = rbuf_get(c->host);
    c->rcap = c->rbuf ? RBUF_SIZE : 0;
  }
  if (c->rcap - c->rlen < 2048 && c->rcap < c->rmax) {
    size_t cap = c->rcap ? c->rcap * 2 : 8192;
    if (cap > c->rmax) cap = c->rmax;
    if (cap < c->rlen) cap = c->rlen;
    char *nb = realloc(c->rbuf, cap);
    if (nb) {
      c->rbuf = nb;
      c->rcap = cap;
    }
  }
  buf->base = c->rbuf ? c->rbuf + c->rlen : NULL;
  buf->len = c->rcap - c->rlen;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  net_conn_t *c = s->data;
  (void)buf;
  if (n == 0) return;
  if (c->lingering) {
    c->rlen = c->rstart = 0;
    if (n < 0) close_now(c);
    return;
  }
  if (n == UV_ENOBUFS) {
    uv_read_stop(s);
    c->paused = 1;
    return;
  }
  if (n > 0) {
    c->rlen += (size_t)n;
    if (c->rlen == c->rcap && c->rcap >= c->rmax) {
      uv_read_stop(s);
      c->paused = 1;
    }
  } else {
    c->rerr = (int)n;
    uv_read_stop(s);
  }
  if (c->on_read) {
    c->on_read(c);
  } else if (c->rco) {
    co_t *co = c->rco;
    c->rco = NULL;
    wake(c->host, co, 0);
  }
}

static void start_reading(net_conn_t *c) {
  if (uv_read_start(&c->u.s, on_alloc, on_read) != 0) c->rerr = UV_EBADF;
}

void net_resume(net_conn_t *c) {
  if (c->paused && !c->closing && !c->rerr) {
    c->paused = 0;
    start_reading(c);
  }
}

void net_unpark_read(co_t *co, void *data) {
  net_conn_t *c = data;
  if (c->rco == co) c->rco = NULL;
}

static void on_write(uv_write_t *req, int status) {
  net_wreq_t *w = (net_wreq_t *)req;
  net_conn_t *c = w->c;
  c->nwrites--;
  if (status < 0 && !c->werr) c->werr = status;
  if (w->co) {
    co_t *co = w->co;
    w->co = NULL;
    wake(c->host, co, 0);
  }
  free(w);
}

void net_unpark_write(co_t *co, void *data) {
  net_wreq_t *w = data;
  if (w->co == co) w->co = NULL;
}

/* uv_try_write without its bookkeeping: the caller knows that nothing is
 * queued on the stream. uv_buf_t has the layout of struct iovec on Unix. */
static int try_write(net_conn_t *c, const uv_buf_t *bufs, unsigned n) {
  uv_os_fd_t fd;
  if (c->dialing || uv_fileno(&c->u.h, &fd))
    return uv_try_write(&c->u.s, bufs, n);
  ssize_t r;
  do {
    r = n == 1 ? write(fd, bufs[0].base, bufs[0].len)
               : writev(fd, (const struct iovec *)bufs, (int)n);
  } while (r < 0 && errno == EINTR);
  if (r >= 0) return (int)r;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
    return UV_EAGAIN;
  return -errno;
}

int net_write(net_conn_t *c, const uv_buf_t *bufs, unsigned n, co_t *co,
              net_wreq_t **wout) {
  if (c->closing) return UV_EPIPE;
  if (c->werr) return c->werr;
  size_t total = 0;
  for (unsigned i = 0; i < n; i++) total += bufs[i].len;
  size_t done = 0;
  if (c->nwrites == 0) {
    int r = try_write(c, bufs, n);
    if (r < 0 && r != UV_EAGAIN) {
      c->werr = r;
      return r;
    }
    if (r > 0) done = (size_t)r;
    if (done == total) return 0;
  }
  net_wreq_t *w = malloc(sizeof(*w) + (total - done));
  if (!w) return UV_ENOMEM;
  size_t off = 0, skip = done;
  for (unsigned i = 0; i < n; i++) {
    size_t len = bufs[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    memcpy(w->data + off, bufs[i].base + skip, len - skip);
    off += len - skip;
    skip = 0;
  }
  w->c = c;
  w->co = co;
  w->len = off;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)off);
  int r = uv_write(&w->req, &c->u.s, &b, 1, on_write);
  if (r) {
    free(w);
    c->werr = r;
    return r;
  }
  c->nwrites++;
  if (wout) *wout = w;
  return 1;
}

static void on_linger_timeout(uv_timer_t *t) {
  close_now(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  net_conn_t *c = req->data;
  if (status < 0 && !c->dead) close_now(c);
}

void net_close(net_conn_t *c, unsigned linger_ms) {
  if (c->closing) return;
  c->closing = 1;
  c->on_read = NULL;
  c->on_deadline = NULL;
  if (c->host->net) dl_unlink(c->host->net, c);
  if (c->rco) {
    co_t *co = c->rco;
    c->rco = NULL;
    wake(c->host, co, 0);
  }
  if (linger_ms && !c->rerr && !c->dialing && !c->shut &&
      (c->linger || (c->linger = malloc(sizeof(uv_timer_t))))) {
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, &c->u.s, on_shutdown) == 0) {
      c->shut = 1;
      c->lingering = 1;
      c->nhandles++;
      uv_timer_init(c->host->loop, c->linger);
      c->linger->data = c;
      uv_timer_start(c->linger, on_linger_timeout, linger_ms, 0);
      c->rlen = c->rstart = 0;
      if (c->paused) {
        c->paused = 0;
        start_reading(c);
      }
      return;
    }
  }
  close_now(c);
}

void net_park_co(co_t *co, sched_undo_fn fn, void *data, const char *what,
                 double timeout) {
  host_t *h = host_current;
  sched_park(h, co, WAIT_IO, what, data);
  sched_undo(co, fn, data);
  timer_park(h, co, timeout);
}

int net_park(lua_State *L, sched_undo_fn fn, void *data, const char *what,
             double timeout) {
  co_t *co = host_current->current;
  net_park_co(co, fn, data, what, timeout);
  lua_pushinteger(L, ORRERY_PARKED);
  lua_pushinteger(L, co->slot);
  return 2;
}

static co_t *current_co(lua_State *L, const char *fname) {
  co_t *co = host_current ? host_current->current : NULL;
  if (!co) luaL_error(L, "%s: would block outside a coroutine", fname);
  return co;
}

int net_peer(net_conn_t *c, char *ip, size_t n, int *port) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  *port = 0;
  if (c->is_pipe) {
    snprintf(ip, n, "unix");
    return 0;
  }
  int r = uv_tcp_getpeername(&c->u.tcp, (struct sockaddr *)&ss, &len);
  if (r) return r;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    uv_ip6_name(a, ip, n);
    *port = ntohs(a->sin6_port);
    /* Show v4-mapped peers of a dual-stack listener as plain IPv4. */
    if (strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.'))
      memmove(ip, ip + 7, strlen(ip + 7) + 1);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    uv_ip4_name(a, ip, n);
    *port = ntohs(a->sin_port);
  }
  return 0;
}

/* -- Lua glue -- */

static void push_err(lua_State *L, int e) {
  lua_pushnil(L);
  lua_pushstring(L, net_errstr(e));
}

net_conn_t *net_check(lua_State *L, int idx) {
  conn_ud *ud = luaL_checkudata(L, idx, CONN_MT);
  return ud->c;
}

static void push_conn(lua_State *L, net_conn_t *c) {
  conn_ud *ud = lua_newuserdata(L, sizeof(conn_ud));
  ud->c = c;
  luaL_getmetatable(L, CONN_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void net_release(lua_State *L, int idx, unsigned linger_ms) {
  conn_ud *ud = luaL_checkudata(L, idx, CONN_MT);
  net_conn_t *c = ud->c;
  if (!c) return;
  ud->c = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, c->ref);
  c->ref = LUA_NOREF;
  net_close(c, linger_ms);
}

static int conn_gc(lua_State *L) {
  /* Reached only when the Lua state closes: open connections are pinned. */
  conn_ud *ud = lua_touserdata(L, 1);
  if (ud->c) close_now(ud->c);
  ud->c = NULL;
  return 0;
}

static void consume(net_conn_t *c, size_t n) {
  c->rstart += n;
  if (c->rstart == c->rlen) {
    c->rstart = c->rlen = 0;
    net_shrink(c);
  } else if (c->rstart > c->rcap / 2) {
    memmove(c->rbuf, c->rbuf + c->rstart, c->rlen - c->rstart);
    c->rlen -= c->rstart;
    c->rstart = 0;
  }
  net_resume(c);
}

/* Blocking primitives that a caller retries after each wake
 * (sched.await in lua/orrery/sched.lua) take (object, timeout, args...)
 * and answer their results, nil, err, or ORRERY_PARKED, slot. */

/* read(c, timeout, max) -> data | nil, err | ORRERY_PARKED, slot */
static int l_read(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  double timeout = luaL_optnumber(L, 2, -1);
  lua_Integer max = luaL_optinteger(L, 3, 65536);
  if (!c || c->closing) {
    push_err(L, UV_EPIPE);
    return 2;
  }
  if (max < 1) return luaL_argerror(L, 3, "max must be positive");
  size_t avail = c->rlen - c->rstart;
  if (avail) {
    size_t n = avail < (size_t)max ? avail : (size_t)max;
    lua_pushlstring(L, c->rbuf + c->rstart, n);
    consume(c, n);
    return 1;
  }
  if (c->rerr) {
    push_err(L, c->rerr);
    return 2;
  }
  co_t *co = current_co(L, "orrery.net:read");
  if (c->rco)
    return luaL_error(L, "orrery.net:read: another coroutine is reading");
  c->rco = co;
  return net_park(L, net_unpark_read, c, "net read", timeout);
}

/* read_until(c, timeout, delim, max) -> data including delim | nil, err
 * ("too_long" when max bytes came without delim) | ORRERY_PARKED, slot */
static int l_read_until(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  double timeout = luaL_optnumber(L, 2, -1);
  size_t dl;
  const char *d = luaL_checklstring(L, 3, &dl);
  lua_Integer max = luaL_optinteger(L, 4, 65536);
  if (!c || c->closing) {
    push_err(L, UV_EPIPE);
    return 2;
  }
  if (dl == 0) return luaL_argerror(L, 3, "empty delimiter");
  size_t avail = c->rlen - c->rstart;
  const char *p = c->rbuf + c->rstart;
  if (avail >= dl) {
    const char *hit = memmem(p, avail, d, dl);
    if (hit) {
      size_t n = (size_t)(hit - p) + dl;
      lua_pushlstring(L, p, n);
      consume(c, n);
      return 1;
    }
  }
  if (avail >= (size_t)max) {
    push_err(L, 0);
    lua_pushliteral(L, "too_long");
    lua_replace(L, -2);
    return 2;
  }
  if (c->rerr) {
    push_err(L, c->rerr);
    return 2;
  }
  co_t *co = current_co(L, "orrery.net:read_until");
  if (c->rco)
    return luaL_error(L, "orrery.net:read_until: another coroutine is reading");
  c->rco = co;
  return net_park(L, net_unpark_read, c, "net read", timeout);
}

/* write(c, data, timeout) -> true | nil, err | ORRERY_PARKED, slot: the
 * write goes on in C; after the wake, write_status says how it ended. */
static int l_write(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  double timeout = luaL_optnumber(L, 3, -1);
  if (!c) {
    push_err(L, UV_EPIPE);
    return 2;
  }
  uv_buf_t b = uv_buf_init((char *)s, (unsigned)len);
  co_t *co = host_current->current;
  net_wreq_t *w = NULL;
  int r = net_write(c, &b, 1, co, &w);
  if (r == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (r < 0) {
    push_err(L, r);
    return 2;
  }
  if (!co) { /* outside a coroutine the write just proceeds */
    lua_pushboolean(L, 1);
    return 1;
  }
  return net_park(L, net_unpark_write, w, "net write", timeout);
}

static int l_write_status(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  if (!c) {
    push_err(L, UV_EPIPE);
    return 2;
  }
  if (c->werr) {
    push_err(L, c->werr);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void on_shutdown_plain(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status;
}

static int l_shutdown(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  if (!c || c->closing) {
    push_err(L, UV_EPIPE);
    return 2;
  }
  if (!c->shut) {
    c->sreq.data = c;
    int r = uv_shutdown(&c->sreq, &c->u.s, on_shutdown_plain);
    if (r) {
      push_err(L, r);
      return 2;
    }
    c->shut = 1;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* close(c [, linger_seconds]) */
static int l_close(lua_State *L) {
  double linger = luaL_optnumber(L, 2, 0);
  net_release(L, 1, linger > 0 ? (unsigned)(linger * 1000) : 0);
  return 0;
}

static int l_peer(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  char ip[64];
  int port;
  if (!c || net_peer(c, ip, sizeof(ip), &port)) {
    push_err(L, UV_ENOTCONN);
    return 2;
  }
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  return 2;
}

static int push_sockname(lua_State *L, uv_tcp_t *t) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  char ip[64];
  int r = uv_tcp_getsockname(t, (struct sockaddr *)&ss, &len);
  if (r) {
    push_err(L, r);
    return 2;
  }
  int port;
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
    port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  } else {
    uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
    port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  }
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  return 2;
}

static int l_sockname(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  if (!c || c->is_pipe) {
    push_err(L, UV_ENOTCONN);
    return 2;
  }
  return push_sockname(L, &c->u.tcp);
}

static int l_buffered(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  lua_pushinteger(L, c ? (lua_Integer)(c->rlen - c->rstart) : 0);
  return 1;
}

/* -- Dialing -- */

static void on_connect(uv_connect_t *req, int status) {
  net_conn_t *c = req->data;
  c->dialing = 0;
  c->cerr = status;
  if (status == 0 && !c->closing) start_reading(c);
  if (c->rco) {
    co_t *co = c->rco;
    c->rco = NULL;
    wake(c->host, co, 0);
  }
}

/* connect_tcp(ip, port) -> conn (dialing; call await_connect) | nil, err */
static int l_connect_tcp(lua_State *L) {
  const char *ip = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  struct sockaddr_storage ss;
  if (uv_ip4_addr(ip, port, (struct sockaddr_in *)&ss) &&
      uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&ss)) {
    push_err(L, UV_EINVAL);
    return 2;
  }
  net_conn_t *c = conn_new(host_current, 0);
  if (!c) {
    push_err(L, UV_ENOMEM);
    return 2;
  }
  c->creq.data = c;
  int r =
      uv_tcp_connect(&c->creq, &c->u.tcp, (struct sockaddr *)&ss, on_connect);
  if (r) {
    close_now(c);
    push_err(L, r);
    return 2;
  }
  uv_tcp_nodelay(&c->u.tcp, 1);
  c->dialing = 1;
  push_conn(L, c);
  return 1;
}

static int l_connect_unix(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  net_conn_t *c = conn_new(host_current, 1);
  if (!c) {
    push_err(L, UV_ENOMEM);
    return 2;
  }
  c->creq.data = c;
  c->dialing = 1;
  uv_pipe_connect(&c->creq, &c->u.pipe, path, on_connect);
  push_conn(L, c);
  return 1;
}

/* await_connect(c, timeout) -> true | nil, err | ORRERY_PARKED, slot */
static int l_await_connect(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  double timeout = luaL_optnumber(L, 2, -1);
  if (!c) {
    push_err(L, UV_EPIPE);
    return 2;
  }
  if (c->dialing) {
    c->rco = current_co(L, "orrery.net.connect");
    return net_park(L, net_unpark_read, c, "net connect", timeout);
  }
  if (c->cerr) {
    push_err(L, c->cerr);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* -- Name resolution -- */

typedef struct {
  uv_getaddrinfo_t req;
  co_t *co;
  int status, done, abandoned;
  struct addrinfo *res;
} dns_t;

typedef struct {
  dns_t *d;
} dns_ud;

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  dns_t *d = req->data;
  if (d->abandoned) {
    if (res) uv_freeaddrinfo(res);
    free(d);
    return;
  }
  d->done = 1;
  d->status = status;
  d->res = res;
  if (d->co) {
    co_t *co = d->co;
    d->co = NULL;
    wake(host_current, co, 0);
  }
}

static void unpark_dns(co_t *co, void *data) {
  dns_t *d = data;
  if (d->co == co) d->co = NULL;
}

static int dns_gc(lua_State *L) {
  dns_ud *ud = lua_touserdata(L, 1);
  dns_t *d = ud->d;
  if (!d) return 0;
  ud->d = NULL;
  if (d->done) {
    if (d->res) uv_freeaddrinfo(d->res);
    free(d);
  } else {
    d->abandoned = 1;
    d->co = NULL;
    uv_cancel((uv_req_t *)&d->req);
  }
  return 0;
}

/* resolve(host, timeout) -> ORRERY_PARKED, slot, handle (call
 * resolve_result after the wake) | nil, err */
static int l_resolve(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  double timeout = luaL_optnumber(L, 2, -1);
  co_t *co = current_co(L, "orrery.net.resolve");
  dns_t *d = calloc(1, sizeof(*d));
  if (!d) {
    push_err(L, UV_ENOMEM);
    return 2;
  }
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  d->req.data = d;
  int r = uv_getaddrinfo(host_current->loop, &d->req, on_resolved, name, NULL,
                         &hints);
  if (r) {
    free(d);
    push_err(L, r);
    return 2;
  }
  d->co = co;
  net_park(L, unpark_dns, d, "dns", timeout);
  dns_ud *ud = lua_newuserdata(L, sizeof(dns_ud));
  ud->d = d;
  luaL_getmetatable(L, DNS_MT);
  lua_setmetatable(L, -2);
  return 3;
}

static int l_resolve_result(lua_State *L) {
  dns_ud *ud = luaL_checkudata(L, 1, DNS_MT);
  dns_t *d = ud->d;
  if (!d || !d->done) {
    push_err(L, UV_ECANCELED);
    return 2;
  }
  if (d->status) {
    push_err(L, d->status);
    return 2;
  }
  lua_newtable(L);
  int n = 0;
  for (struct addrinfo *a = d->res; a; a = a->ai_next) {
    char ip[64];
    if (a->ai_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)a->ai_addr, ip, sizeof(ip));
    else if (a->ai_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)a->ai_addr, ip, sizeof(ip));
    else
      continue;
    lua_pushstring(L, ip);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* -- Listeners -- */

static void on_lis_close(uv_handle_t *hd) {
  net_listener_t *l = hd->data;
  free(l->path);
  free(l);
}

static void lis_close(net_listener_t *l) {
  if (l->closing) return;
  l->closing = 1;
  net_state_t *st = l->host->net;
  if (l->prev)
    l->prev->next = l->next;
  else if (st && st->lis == l)
    st->lis = l->next;
  if (l->next) l->next->prev = l->prev;
  if (l->waiter) {
    co_t *co = l->waiter;
    l->waiter = NULL;
    wake(l->host, co, 0);
  }
  if (l->path) unlink(l->path);
  uv_close(&l->u.h, on_lis_close);
}

static void on_connection(uv_stream_t *s, int status) {
  net_listener_t *l = s->data;
  if (status < 0)
    l->err = status;
  else
    l->pending = 1;
  if (l->waiter) {
    co_t *co = l->waiter;
    l->waiter = NULL;
    wake(l->host, co, 0);
  }
}

static net_listener_t *lis_new(host_t *h, int is_pipe) {
  net_listener_t *l = calloc(1, sizeof(*l));
  if (!l) return NULL;
  if (is_pipe)
    uv_pipe_init(h->loop, &l->u.pipe, 0);
  else
    uv_tcp_init(h->loop, &l->u.tcp);
  l->u.h.data = l;
  l->host = h;
  l->is_pipe = (uint8_t)is_pipe;
  l->ref = LUA_NOREF;
  net_state_t *st = state_of(h);
  l->next = st->lis;
  if (st->lis) st->lis->prev = l;
  st->lis = l;
  return l;
}

static int push_lis(lua_State *L, net_listener_t *l) {
  lis_ud *ud = lua_newuserdata(L, sizeof(lis_ud));
  ud->l = l;
  luaL_getmetatable(L, LIS_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  l->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* listen_tcp(ip, port, backlog) -> listener | nil, err */
static int l_listen_tcp(lua_State *L) {
  const char *ip = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  int backlog = (int)luaL_optinteger(L, 3, 511);
  struct sockaddr_storage ss;
  if (uv_ip4_addr(ip, port, (struct sockaddr_in *)&ss) &&
      uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&ss)) {
    push_err(L, UV_EINVAL);
    return 2;
  }
  net_listener_t *l = lis_new(host_current, 0);
  if (!l) {
    push_err(L, UV_ENOMEM);
    return 2;
  }
  int r = uv_tcp_bind(&l->u.tcp, (struct sockaddr *)&ss, 0);
  if (!r) r = uv_listen(&l->u.s, backlog, on_connection);
  if (r) {
    lis_close(l);
    push_err(L, r);
    return 2;
  }
  return push_lis(L, l);
}

static int l_listen_unix(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int backlog = (int)luaL_optinteger(L, 2, 511);
  net_listener_t *l = lis_new(host_current, 1);
  if (!l) {
    push_err(L, UV_ENOMEM);
    return 2;
  }
  int r = uv_pipe_bind(&l->u.pipe, path);
  if (!r) {
    l->path = strdup(path);
    r = uv_listen(&l->u.s, backlog, on_connection);
  }
  if (r) {
    if (r == UV_EADDRINUSE) {
      free(l->path); /* not ours: do not unlink it */
      l->path = NULL;
    }
    lis_close(l);
    push_err(L, r);
    return 2;
  }
  return push_lis(L, l);
}

static net_listener_t *lis_check(lua_State *L) {
  lis_ud *ud = luaL_checkudata(L, 1, LIS_MT);
  return ud->l;
}

static void unpark_accept(co_t *co, void *data) {
  net_listener_t *l = data;
  if (l->waiter == co) l->waiter = NULL;
}

/* accept(l, timeout) -> conn | nil, err | ORRERY_PARKED, slot */
static int l_accept(lua_State *L) {
  net_listener_t *l = lis_check(L);
  double timeout = luaL_optnumber(L, 2, -1);
  if (!l || l->closing) {
    push_err(L, UV_EPIPE);
    return 2;
  }
  if (l->pending) {
    l->pending = 0;
    net_conn_t *c = conn_new(l->host, l->is_pipe);
    if (!c) {
      push_err(L, UV_ENOMEM);
      return 2;
    }
    int r = uv_accept(&l->u.s, &c->u.s);
    if (r) {
      close_now(c);
      push_err(L, r);
      return 2;
    }
    if (!c->is_pipe) uv_tcp_nodelay(&c->u.tcp, 1);
    start_reading(c);
    push_conn(L, c);
    return 1;
  }
  if (l->err) {
    int e = l->err;
    l->err = 0;
    push_err(L, e);
    return 2;
  }
  co_t *co = current_co(L, "orrery.net:accept");
  if (l->waiter)
    return luaL_error(L, "orrery.net:accept: another coroutine is accepting");
  l->waiter = co;
  return net_park(L, unpark_accept, l, "net accept", timeout);
}

static int l_lclose(lua_State *L) {
  lis_ud *ud = luaL_checkudata(L, 1, LIS_MT);
  net_listener_t *l = ud->l;
  if (!l) return 0;
  ud->l = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, l->ref);
  lis_close(l);
  return 0;
}

static int l_laddr(lua_State *L) {
  net_listener_t *l = lis_check(L);
  if (!l) {
    push_err(L, UV_EPIPE);
    return 2;
  }
  if (l->is_pipe) {
    lua_pushstring(L, l->path ? l->path : "");
    return 1;
  }
  return push_sockname(L, &l->u.tcp);
}

static int lis_gc(lua_State *L) {
  lis_ud *ud = lua_touserdata(L, 1);
  if (ud->l) lis_close(ud->l);
  ud->l = NULL;
  return 0;
}

/* The sentinel's finalizer runs when the Lua state closes: every socket
 * still open is closed with a callback that frees it. */
static int sweep_gc(lua_State *L) {
  host_t *h = host_current;
  (void)L;
  if (!h || !h->net) return 0;
  net_state_t *st = h->net;
  while (st->conns) close_now(st->conns);
  while (st->lis) lis_close(st->lis);
  h->net = NULL;
  uv_close((uv_handle_t *)&st->dl_timer, on_state_close);
  return 0;
}

int luaopen_orrery_net_core(lua_State *L) {
  static const luaL_Reg fns[] = {{"read", l_read},
                                 {"read_until", l_read_until},
                                 {"write", l_write},
                                 {"write_status", l_write_status},
                                 {"shutdown", l_shutdown},
                                 {"close", l_close},
                                 {"peer", l_peer},
                                 {"sockname", l_sockname},
                                 {"buffered", l_buffered},
                                 {"connect_tcp", l_connect_tcp},
                                 {"connect_unix", l_connect_unix},
                                 {"await_connect", l_await_connect},
                                 {"resolve", l_resolve},
                                 {"resolve_result", l_resolve_result},
                                 {"listen_tcp", l_listen_tcp},
                                 {"listen_unix", l_listen_unix},
                                 {"accept", l_accept},
                                 {"lclose", l_lclose},
                                 {"laddr", l_laddr},
                                 {NULL, NULL}};
  luaL_newmetatable(L, CONN_MT);
  lua_pushcfunction(L, conn_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, LIS_MT);
  lua_pushcfunction(L, lis_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, DNS_MT);
  lua_pushcfunction(L, dns_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  /* The sweep sentinel lives in the registry for the state's lifetime. */
  lua_getfield(L, LUA_REGISTRYINDEX, "orrery.net.sweep");
  if (lua_isnil(L, -1)) {
    lua_newuserdata(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, sweep_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "orrery.net.sweep");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
