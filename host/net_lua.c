/* SPDX-License-Identifier: MIT */
/* net_lua.c -- orrery.net.core: the Lua glue of streams, listeners and
 * name resolution, each call that would block parking the coroutine. */
#include <errno.h>
#include <stdio.h>
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
#define TLS_MT "orrery.net.tls"

typedef struct {
  net_conn_t *c;
} conn_ud;

typedef struct {
  net_listener_t *l;
} lis_ud;

typedef struct {
  net_dns_t *d;
} dns_ud;

typedef struct {
  tls_cfg_t *cfg; /* one reference */
} tls_ud;

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

/* An error of connection c: a TLS failure (and any error that ends a
 * TLS handshake) reads "tls: <reason>". */
static void push_cerr(lua_State *L, net_conn_t *c, int e) {
  if (c && tls_is(c) && (e == NET_ETLS || tls_handshaking(c))) {
    lua_pushnil(L);
    lua_pushfstring(L, "tls: %s", tls_reason(c, e));
    return;
  }
  push_err(L, e);
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
    net_consume(c, n);
    return 1;
  }
  if (c->rerr) {
    push_cerr(L, c, c->rerr);
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
      net_consume(c, n);
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
    push_cerr(L, c, c->rerr);
    return 2;
  }
  co_t *co = current_co(L, "orrery.net:read_until");
  if (c->rco)
    return luaL_error(L, "orrery.net:read_until: another coroutine is reading");
  c->rco = co;
  return net_park(L, net_unpark_read, c, "net read", timeout);
}

/* write(c, data, timeout) -> true | nil, err, false | ORRERY_PARKED, slot:
 * the write goes on in C; after the wake, write_status says how it ended.
 * A write that fails at once put none of data on the wire (false): the
 * socket took nothing (the one write(2) failed, as on a connection the
 * peer reset) or it was not tried; the HTTP client's retry rule relies on
 * this. A write that was queued may have sent part of data. */
static int l_write(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  double timeout = luaL_optnumber(L, 3, -1);
  if (!c) {
    push_err(L, UV_EPIPE);
    lua_pushboolean(L, 0);
    return 3;
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
    push_cerr(L, c, r);
    lua_pushboolean(L, 0);
    return 3;
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
    push_cerr(L, c, c->werr);
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

static tls_cfg_t *opt_tls(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return NULL;
  tls_ud *ud = luaL_checkudata(L, idx, TLS_MT);
  return ud->cfg;
}

/* Makes a dialled connection TLS (before its connect completes, so that
 * the handshake starts when it does); pushes the connection or nil, err
 * having closed it. */
static int push_dialled(lua_State *L, net_conn_t *c, tls_cfg_t *cfg,
                        const char *name, const char *peer, int port) {
  if (cfg) {
    if (tls_cfg_is_server(cfg)) {
      net_close_now(c);
      return luaL_argerror(L, 3, "client TLS configuration expected");
    }
    /* Sessions are resumed per verified name and port. */
    char key[320];
    snprintf(key, sizeof(key), "%.255s:%d", name ? name : peer, port);
    int r = tls_attach(c, cfg, name, key);
    if (r) {
      net_close_now(c);
      push_err(L, r);
      return 2;
    }
  }
  push_conn(L, c);
  return 1;
}

/* connect_tcp(ip, port [, tls, server_name]) -> conn (dialing; call
 * await_connect, which waits for the TLS handshake too) | nil, err */
static int l_connect_tcp(lua_State *L) {
  const char *ip = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  tls_cfg_t *cfg = opt_tls(L, 3);
  const char *name = luaL_optstring(L, 4, NULL);
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
  return push_dialled(L, c, cfg, name, ip, port);
}

/* connect_unix(path [, tls, server_name]) */
static int l_connect_unix(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  tls_cfg_t *cfg = opt_tls(L, 2);
  const char *name = luaL_optstring(L, 3, NULL);
  net_conn_t *c;
  int r = net_dial_unix(host_current, path, &c);
  if (r) {
    push_err(L, r);
    return 2;
  }
  return push_dialled(L, c, cfg, name, path, 0);
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
    push_cerr(L, c, c->cerr);
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

static tls_cfg_t *opt_server_tls(lua_State *L, int idx) {
  tls_cfg_t *cfg = opt_tls(L, idx);
  if (cfg && !tls_cfg_is_server(cfg))
    luaL_argerror(L, idx, "server TLS configuration expected");
  return cfg;
}

/* listen_tcp(ip, port, backlog [, tls]) -> listener | nil, err */
static int l_listen_tcp(lua_State *L) {
  const char *ip = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  int backlog = (int)luaL_optinteger(L, 3, 511);
  tls_cfg_t *cfg = opt_server_tls(L, 4);
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
  net_lis_set_tls(l, cfg);
  return push_lis(L, l);
}

static int l_lclose(lua_State *L);

/* listen_unix(path, backlog [, tls [, mode]]) -> listener | nil, err; with
 * mode the socket file gets those permissions (0600: its owner only)
 * before the first connection can be accepted. */
static int l_listen_unix(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int backlog = (int)luaL_optinteger(L, 2, 511);
  tls_cfg_t *cfg = opt_server_tls(L, 3);
  lua_Integer mode = luaL_optinteger(L, 4, -1);
  net_listener_t *l;
  int r = net_listen_unix(host_current, path, backlog, &l);
  if (r) {
    push_err(L, r);
    return 2;
  }
  net_lis_set_tls(l, cfg);
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

/* lset_tls(l, tls): connections accepted from now on use tls (a SIGHUP
 * reload); those already accepted keep theirs. */
static int l_lset_tls(lua_State *L) {
  net_listener_t *l = lis_check(L);
  tls_cfg_t *cfg = opt_server_tls(L, 2);
  if (!l || l->closing) {
    push_err(L, UV_EPIPE);
    return 2;
  }
  net_lis_set_tls(l, cfg);
  lua_pushboolean(L, 1);
  return 1;
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

/* -- TLS configurations -- */

static const char *opt_str(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *v = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the string stays referenced by the table */
  return v;
}

/* tls_new{ server=, cert=, key=, ca_file=, verify=, verify_client=,
 * alpn={...} } -> configuration | nil, reason. verify (a client's) is a
 * boolean, verify_client (a server's) "require" or "optional"; the options
 * are checked by orrery.net. */
static int l_tls_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  tls_opts_t o;
  memset(&o, 0, sizeof(o));
  lua_getfield(L, 1, "server");
  o.server = lua_toboolean(L, -1);
  lua_getfield(L, 1, "verify");
  o.verify = lua_isnil(L, -1) || lua_toboolean(L, -1);
  lua_pop(L, 2);
  static const char *const modes[] = {"none", "optional", "require", NULL};
  lua_getfield(L, 1, "verify_client");
  o.verify_client = luaL_checkoption(L, -1, "none", modes);
  lua_pop(L, 1);
  o.cert = opt_str(L, 1, "cert");
  o.key = opt_str(L, 1, "key");
  o.ca_file = opt_str(L, 1, "ca_file");
  unsigned char alpn[256];
  lua_getfield(L, 1, "alpn");
  if (lua_istable(L, -1)) {
    for (int i = 1;; i++) {
      lua_rawgeti(L, -1, i);
      size_t n;
      const char *p = lua_tolstring(L, -1, &n);
      lua_pop(L, 1);
      if (!p) break;
      if (n == 0 || n > 255 || o.alpn_len + 1 + n > sizeof(alpn))
        return luaL_argerror(L, 1, "bad ALPN protocol name");
      alpn[o.alpn_len++] = (unsigned char)n;
      memcpy(alpn + o.alpn_len, p, n);
      o.alpn_len += (unsigned)n;
    }
    o.alpn = alpn;
  }
  lua_pop(L, 1);
  char err[512];
  tls_cfg_t *cfg = tls_cfg_new(&o, err, sizeof(err));
  if (!cfg) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  tls_ud *ud = lua_newuserdata(L, sizeof(tls_ud));
  ud->cfg = cfg;
  luaL_getmetatable(L, TLS_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static int tls_gc(lua_State *L) {
  tls_ud *ud = lua_touserdata(L, 1);
  tls_cfg_unref(ud->cfg);
  ud->cfg = NULL;
  return 0;
}

/* tls_info(c) -> { protocol, cipher, alpn, server_name, verified,
 * resumed, peer_subject, peer_issuer, peer_serial } | nil, err */
static int l_tls_info(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  tls_info_t in;
  if (!c || !tls_is(c)) {
    lua_pushnil(L);
    lua_pushliteral(L, "not_tls");
    return 2;
  }
  if (tls_info(c, &in)) {
    lua_pushnil(L);
    lua_pushliteral(L, "handshake");
    return 2;
  }
  lua_createtable(L, 0, 8);
  lua_pushstring(L, in.protocol);
  lua_setfield(L, -2, "protocol");
  lua_pushstring(L, in.cipher);
  lua_setfield(L, -2, "cipher");
  if (in.alpn_len) {
    lua_pushlstring(L, (const char *)in.alpn, in.alpn_len);
    lua_setfield(L, -2, "alpn");
  }
  if (in.server_name) {
    lua_pushstring(L, in.server_name);
    lua_setfield(L, -2, "server_name");
  }
  lua_pushboolean(L, in.verified);
  lua_setfield(L, -2, "verified");
  lua_pushboolean(L, in.resumed);
  lua_setfield(L, -2, "resumed");
  if (in.subject[0]) {
    lua_pushstring(L, in.subject);
    lua_setfield(L, -2, "peer_subject");
    lua_pushstring(L, in.issuer);
    lua_setfield(L, -2, "peer_issuer");
    lua_pushstring(L, in.serial);
    lua_setfield(L, -2, "peer_serial");
  }
  return 1;
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
                                 {"lset_tls", l_lset_tls},
                                 {"lclose", l_lclose},
                                 {"tls_new", l_tls_new},
                                 {"tls_info", l_tls_info},
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
  luaL_newmetatable(L, TLS_MT);
  lua_pushcfunction(L, tls_gc);
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
