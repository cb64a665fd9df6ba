/* SPDX-License-Identifier: MIT */
/* net_lua.c -- orrery.net.core: the Lua glue of streams, listeners and
 * name resolution, each call that would block parking the coroutine. */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <string.h>

#include "errors.h"
#include "net_int.h"

#define CONN_MT "orrery.net.conn"
#define LIS_MT "orrery.net.listener"
#define DNS_MT "orrery.net.dns"

typedef struct {
  net_conn_t *c;
} conn_ud;

typedef struct {
  net_listener_t *l;
} lis_ud;

typedef struct {
  net_dns_t *d;
} dns_ud;

/* Error codes handed to Lua: short stable words (the list is in errors.h). */
const char *net_errstr(int e) {
  return err_net(e);
}

static co_t *current_co(lua_State *L, const char *fname) {
  co_t *co = host_current ? host_current->current : NULL;
  if (!co) luaL_error(L, "%s: would block outside a coroutine", fname);
  return co;
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
  if (ud->c) net_close_now(ud->c);
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
    int r = c->ops->shutdown(c, on_shutdown_plain);
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

/* peer_cred(c) -> uid, pid, same_user of the process at the other end
 * of a unix socket | nil, err (the kernel's SO_PEERCRED: it cannot be
 * forged by the peer). */
static int l_peer_cred(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  uv_os_fd_t fd;
  struct ucred cr;
  socklen_t len = sizeof(cr);
  if (!c || !c->is_pipe || uv_fileno(&c->u.h, &fd) ||
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
    push_err(L, UV_ENOTCONN);
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)cr.uid);
  lua_pushinteger(L, (lua_Integer)cr.pid);
  lua_pushboolean(L, cr.uid == geteuid());
  return 3;
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
  net_conn_t *c;
  int r = net_dial_tcp(host_current, (struct sockaddr *)&ss, &c);
  if (r) {
    push_err(L, r);
    return 2;
  }
  push_conn(L, c);
  return 1;
}

static int l_connect_unix(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  net_conn_t *c;
  int r = net_dial_unix(host_current, path, &c);
  if (r) {
    push_err(L, r);
    return 2;
  }
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

/* The job belongs to the userdata: collecting it releases the job, which
 * frees it at once or, while it still runs on the pool, when it ends. */
static int dns_gc(lua_State *L) {
  dns_ud *ud = lua_touserdata(L, 1);
  net_dns_t *d = ud->d;
  if (!d) return 0;
  ud->d = NULL;
  work_release(&d->w);
  return 0;
}

/* resolve(host, timeout) -> ORRERY_PARKED, slot, handle (call
 * resolve_result after the wake) | nil, err */
static int l_resolve(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  double timeout = luaL_optnumber(L, 2, -1);
  co_t *co = current_co(L, "orrery.net.resolve");
  net_dns_t *d;
  int r = net_dns_start(host_current, name, &d);
  if (r) {
    push_err(L, r);
    return 2;
  }
  work_wait(&d->w, co);
  net_park(L, work_unpark, &d->w, "dns", timeout);
  dns_ud *ud = lua_newuserdata(L, sizeof(dns_ud));
  ud->d = d;
  luaL_getmetatable(L, DNS_MT);
  lua_setmetatable(L, -2);
  return 3;
}

static int l_resolve_result(lua_State *L) {
  dns_ud *ud = luaL_checkudata(L, 1, DNS_MT);
  net_dns_t *d = ud->d;
  if (!d || !work_ended(&d->w)) {
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
  net_listener_t *l;
  int r = net_listen_tcp(host_current, (struct sockaddr *)&ss, backlog, &l);
  if (r) {
    push_err(L, r);
    return 2;
  }
  return push_lis(L, l);
}

static int l_lclose(lua_State *L);

/* listen_unix(path, backlog, mode) -> listener | nil, err; with mode the
 * socket file gets those permissions (0600: its owner only) before the
 * first connection can be accepted. */
static int l_listen_unix(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int backlog = (int)luaL_optinteger(L, 2, 511);
  lua_Integer mode = luaL_optinteger(L, 3, -1);
  net_listener_t *l;
  int r = net_listen_unix(host_current, path, backlog, &l);
  if (r) {
    push_err(L, r);
    return 2;
  }
  push_lis(L, l);
  if (mode >= 0 && chmod(path, (mode_t)mode) != 0) {
    int e = -errno;
    lua_pushcfunction(L, l_lclose);
    lua_insert(L, -2);
    lua_call(L, 1, 0);
    push_err(L, e);
    return 2;
  }
  return 1;
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
  net_conn_t *c;
  int r = net_accept(l, &c);
  if (r == 0) {
    push_conn(L, c);
    return 1;
  }
  if (r != UV_EAGAIN) {
    push_err(L, r);
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
  net_lis_close(l);
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
  if (ud->l) net_lis_close(ud->l);
  ud->l = NULL;
  return 0;
}

/* The sentinel's finalizer runs when the Lua state closes: every socket
 * still open is closed with a callback that frees it. */
static int sweep_gc(lua_State *L) {
  (void)L;
  if (host_current) net_sweep(host_current);
  return 0;
}

/* stats() -> { conns, buffers_allocated, buffers_pooled, emfile, shed }:
 * counters of this host's sockets, for tests (buffers_allocated counts
 * read buffers allocated or grown since the start). Not part of
 * orrery.net. */
static int l_stats(lua_State *L) {
  net_state_t *st = host_current ? net_state_of(host_current) : NULL;
  lua_createtable(L, 0, 5);
  if (!st) return 1;
  lua_pushnumber(L, (lua_Number)st->nconns);
  lua_setfield(L, -2, "conns");
  lua_pushnumber(L, (lua_Number)st->rbuf_allocs);
  lua_setfield(L, -2, "buffers_allocated");
  lua_pushnumber(L, (lua_Number)st->npool);
  lua_setfield(L, -2, "buffers_pooled");
  lua_pushnumber(L, (lua_Number)st->emfile);
  lua_setfield(L, -2, "emfile");
  lua_pushnumber(L, (lua_Number)st->shed);
  lua_setfield(L, -2, "shed");
  return 1;
}

int luaopen_orrery_net_core(lua_State *L) {
  static const luaL_Reg fns[] = {{"read", l_read},
                                 {"read_until", l_read_until},
                                 {"write", l_write},
                                 {"write_status", l_write_status},
                                 {"shutdown", l_shutdown},
                                 {"close", l_close},
                                 {"peer", l_peer},
                                 {"peer_cred", l_peer_cred},
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
                                 {"stats", l_stats},
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
