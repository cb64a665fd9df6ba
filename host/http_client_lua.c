/* SPDX-License-Identifier: MIT */
/* http_client_lua.c -- orrery.http.client.core: what the HTTP client's
 * pool needs from a connection beyond orrery.net's methods. */
#include <stdint.h>
#include <string.h>

#include "net.h"

/* idle(conn, on): a pooled connection that waits for its next request
 * does not keep the loop alive, so that a script which made a request
 * ends when its work does, not when the server closes the connection. */
static int l_idle(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  if (c && !c->closing) {
    if (lua_toboolean(L, 2))
      uv_unref(&c->u.h);
    else
      uv_ref(&c->u.h);
  }
  return 0;
}

/* alive(conn) -> false once the peer has ended the connection (EOF or an
 * error was read) or it is closing: a pooled connection the server closed
 * while it was idle is dropped before a request is written on it, rather
 * than found dead after (when a POST could not be retried). */
static int l_alive(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  lua_pushboolean(L, c && !c->closing && !c->rerr && !c->werr);
  return 1;
}

/* alive() and idle(false) in one, for the pool's hot path, as an FFI call
 * (ffi_cdef.h): ud is an orrery.net.conn userdata, which the FFI passes as the
 * address of its payload, net_lua.c's conn_ud: the connection's pointer. */
typedef struct {
  net_conn_t *c;
} hc_conn_ud;

int orrery_ffi_hconn_take(void *ud) {
  net_conn_t *c = ((hc_conn_ud *)ud)->c;
  if (!c || c->closing || c->rerr || c->werr || c->rlen != c->rstart) return 0;
  uv_ref(&c->u.h);
  return 1;
}

/* 1 when a read of the connection would not park: bytes are buffered, or
 * it ended (the read answers its error at once). */
int orrery_ffi_hconn_ready(void *ud) {
  net_conn_t *c = ((hc_conn_ud *)ud)->c;
  return !c || c->closing || c->rerr || c->rlen != c->rstart;
}

/* The bytes buffered on conn, which the response parser reads in place
 * (no Lua string of them): how many, where they are, and consume, which
 * gives n of them up as net_lua.c's consume() does after a read. */
uint32_t orrery_ffi_hconn_avail(void *ud) {
  net_conn_t *c = ((hc_conn_ud *)ud)->c;
  if (!c || c->closing) return 0;
  size_t n = c->rlen - c->rstart;
  return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

const char *orrery_ffi_hconn_data(void *ud) {
  net_conn_t *c = ((hc_conn_ud *)ud)->c;
  return c->rbuf + c->rstart;
}

void orrery_ffi_hconn_consume(void *ud, uint32_t n) {
  net_conn_t *c = ((hc_conn_ud *)ud)->c;
  if (!c || n == 0) return;
  net_consume(c, n);
}

int luaopen_orrery_http_client_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"idle", l_idle}, {"alive", l_alive}, {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
