/* SPDX-License-Identifier: MIT */
/* http_conn.h -- HTTP server internals shared by its two halves.
 *
 * http_server.c (connections, requests, the module) and http_response.c
 * (responses) share the connection, the per-host output buffer and head
 * cache, and the small helpers below. Not part of the FFI (ffi_cdef.h). */
#ifndef ORRERY_HTTP_CONN_H
#define ORRERY_HTTP_CONN_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "errors.h"
#include "http_parse.h"
#include "net.h"

/* Body errors B_OK, B_TOO_LARGE, ...: the list is in errors.h. */

/* Response framing of a streamed response. */
enum { M_NONE = 0, M_CHUNKED, M_LENGTH, M_EOF };

/* Unread body drained to keep a connection. */
#define DISCARD_MAX (256 * 1024)

/* Results of a response write, in the parking protocol (ffi_cdef.h); a
 * libuv error is below zero. Declined: a status that cannot be sent, and
 * nothing was written. */
enum {
  W_DONE = ORRERY_DONE,
  W_PARKED = ORRERY_PARKED,
  W_BAD_STATUS = ORRERY_DECLINED
};

/* A growable byte buffer. */
typedef struct {
  char *p;
  size_t n, cap;
} sbuf_t;

/* A response head without handler headers is the same for every response
 * with the same status, Content-Type, length and connection handling
 * within one second: a few are kept whole, so that most responses cost
 * one copy of the head instead of a dozen appends. */
#define HEADS 4
typedef struct {
  time_t date_t; /* 0: empty */
  int status;
  size_t blen;
  uint8_t conn; /* 0, or 1: Connection: close, 2: Connection: keep-alive */
  uint8_t has_ctype;
  uint16_t len;
  char ctype[64];
  char head[256];
} head_cache_t;

/* What every connection of a host shares: responses are formatted in out
 * and written at once (net_write copies what the socket does not take),
 * the Date header changes once a second, and the head cache. Allocated
 * by luaopen_orrery_http_core, freed when the Lua state closes. */
typedef struct http_state_s {
  sbuf_t out;
  time_t date_t;
  char date[40];
  head_cache_t heads[HEADS];
  unsigned next_head; /* the entry replaced next */
} http_state_t;

/* A server connection (net_conn_t.ud). */
typedef struct hconn_s {
  orrery_http_head pub; /* first: the FFI side holds a pointer to it */
  hp_t hp;
  net_conn_t *c;
  int32_t id;
  uint64_t max_body;      /* the request's body limit, see body_limit() */
  uint64_t max_body_cfg;  /* the server's max_body_size */
  uint64_t max_body_head; /* the most any route allows: checked at the head */
  uint32_t header_ms, body_ms, idle_ms; /* read deadlines, 0: none */
  double body_timeout, write_timeout;
  double bdeadline; /* of the body read, 0 when unset */
  int stage, goal;  /* S_* and G_* in http_server.c */
  int seq;          /* request number, for stale header lookups */
  int requests;
  uint8_t continue_sent, want_close, in_handler, notified, have_chunk;
  uint8_t body_err, mode, head_req, shutting; /* body_err: B_*, mode: M_* */
  uint8_t fixed; /* a header or drain deadline runs (c->dl.when), keep it */
  uint64_t discarded, remaining;
  sbuf_t body;
} hconn_t;

/* uv_buf_init, inlined. */
static inline uv_buf_t buf_of(const char *p, size_t n) {
  uv_buf_t b;
  b.base = (char *)p;
  b.len = n;
  return b;
}

/* The current host's shared HTTP state. */
static inline http_state_t *hstate(void) {
  return host_current->http;
}

/* Makes room for more bytes: 0, or -1 when out of memory. */
static inline int sb_reserve(sbuf_t *b, size_t more) {
  if (b->n + more <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 512;
  while (cap < b->n + more) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

/* Appends n bytes (nothing when out of memory). */
static inline void sb_add(sbuf_t *b, const char *s, size_t n) {
  if (sb_reserve(b, n)) return;
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

/* The server connection of the conn at stack index 1, NULL (and *cp
 * NULL) when it is closed or not a server connection. */
static inline hconn_t *hc_check(lua_State *L, net_conn_t **cp) {
  net_conn_t *c = net_check(L, 1);
  if (!c || !c->ud || c->on_read == NULL) {
    if (cp) *cp = NULL;
    return NULL;
  }
  if (cp) *cp = c;
  return c->ud;
}

/* Whether a[0, n) and b[0, m) are equal ignoring ASCII case. */
static inline int ieq(const char *a, size_t n, const char *b, size_t m) {
  if (n != m) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x >= 'A' && x <= 'Z') x += 32;
    if (y >= 'A' && y <= 'Z') y += 32;
    if (x != y) return 0;
  }
  return 1;
}

/* http_response.c */

/* The Date header value for now, formatted at most once a second. */
const char *http_date_now(void);
/* Writes a complete canned plain-text response (status and its text) that
 * ends the connection; what the socket does not take is queued. */
void http_write_canned(net_conn_t *c, int status, const char *date);
/* The response side of orrery.http.core, registered by
 * luaopen_orrery_http_core (see http_response.c for their arguments). */
int http_l_respond(lua_State *L);
int http_l_write_status(lua_State *L);
int http_l_start(lua_State *L);
int http_l_chunk(lua_State *L);
int http_l_finish(lua_State *L);
int http_l_reject(lua_State *L);

#endif
