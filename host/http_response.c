/* SPDX-License-Identifier: MIT */
/* http_response.c -- orrery.http.core: response framing for the HTTP/1.1
 * server (status line and headers, the head cache, complete and streamed
 * bodies, canned error responses) and the response-side Lua API. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "http_conn.h"

/* Flags of respond() and start(). */
enum { RF_CLOSE = 1 };

#define SB_LIT(b, s) sb_add((b), (s), sizeof(s) - 1)

/* Appends v in decimal (inline: build_head runs it for every head it
 * formats). */
static inline void sb_int(sbuf_t *b, uint64_t v) {
  char tmp[24];
  int i = 24;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  sb_add(b, tmp + i, (size_t)(24 - i));
}

const char *http_date_now(void) {
  http_state_t *hs = hstate();
  time_t t = time(NULL);
  if (t != hs->date_t) {
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(hs->date, sizeof(hs->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    hs->date_t = t;
  }
  return hs->date;
}

/* -- Errors answered by the server itself -- */

void http_write_canned(net_conn_t *c, int status, const char *date) {
  const char *text = hp_status_text(status);
  if (!text) text = "Error";
  char buf[512];
  int n = snprintf(buf, sizeof(buf),
                   "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: text/plain; "
                   "charset=utf-8\r\nContent-Length: %zu\r\nConnection: "
                   "close\r\n\r\n%s\n",
                   status, text, date, strlen(text) + 1, text);
  uv_buf_t b = buf_of(buf, (unsigned)n);
  net_write(c, &b, 1, NULL, NULL);
}

/* -- Responses -- */

static int is_tchar(unsigned char ch) {
  static const char *extra = "!#$%&'*+-.^_`|~";
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || (ch && strchr(extra, ch));
}

static int valid_name(const char *s, size_t n) {
  if (!n) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_tchar((unsigned char)s[i])) return 0;
  return 1;
}

static int valid_value(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return 0;
  }
  return 1;
}

typedef struct {
  int has_ctype, has_date, close;
  int64_t length; /* a Content-Length the handler set, or -1 */
} hinfo_t;

static void add_field(lua_State *L, sbuf_t *o, const char *k, size_t kl,
                      int vidx) {
  size_t vl;
  const char *v = lua_tolstring(L, vidx, &vl);
  if (!v) luaL_error(L, "orrery.http: header %s: string value expected", k);
  if (!valid_value(v, vl))
    luaL_error(L, "orrery.http: header %s: invalid character in value", k);
  sb_add(o, k, kl);
  SB_LIT(o, ": ");
  sb_add(o, v, vl);
  SB_LIT(o, "\r\n");
}

/* Appends the handler's headers (table at idx) and notes the ones the
 * server manages. Raises on a malformed name or value. */
static void add_headers(lua_State *L, int idx, sbuf_t *o, hinfo_t *hi) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "orrery.http: header names must be strings");
    size_t kl;
    const char *k = lua_tolstring(L, -2, &kl);
    if (!valid_name(k, kl))
      luaL_error(L, "orrery.http: invalid header name '%s'", k);
    if (ieq(k, kl, "content-length", 14)) {
      lua_Number n = lua_tonumber(L, -1);
      if (!(n >= 0)) luaL_error(L, "orrery.http: bad Content-Length");
      hi->length = (int64_t)n;
      lua_pop(L, 1);
      continue;
    }
    if (ieq(k, kl, "transfer-encoding", 17)) {
      lua_pop(L, 1);
      continue;
    }
    if (ieq(k, kl, "connection", 10)) {
      const char *v = lua_tostring(L, -1);
      if (v && strstr(v, "close")) hi->close = 1;
      lua_pop(L, 1);
      continue;
    }
    if (ieq(k, kl, "content-type", 12)) hi->has_ctype = 1;
    if (ieq(k, kl, "date", 4)) hi->has_date = 1;
    if (lua_istable(L, -1)) {
      int n = (int)lua_objlen(L, -1);
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        add_field(L, o, k, kl, lua_gettop(L));
        lua_pop(L, 1);
      }
    } else {
      add_field(L, o, k, kl, lua_gettop(L));
    }
    lua_pop(L, 1);
  }
}

static int body_forbidden(int status) {
  return status < 200 || status == 204 || status == 304;
}

/* Whether the connection ends after this response. */
static int must_close(hconn_t *hc, int flags, int asked) {
  hp_t *hp = &hc->hp;
  int close = asked || (flags & RF_CLOSE) || hc->want_close ||
              !(hp->flags & HP_F_KEEP_ALIVE) || (hp->flags & HP_F_UPGRADE) ||
              hc->shutting;
  /* A body the handler left unread: keep the connection only if it can be
   * drained cheaply later. */
  if (hp->state == HP_S_BODY) {
    if ((hp->flags & HP_F_EXPECT_CONTINUE) && !hc->continue_sent) close = 1;
    if (hp->content_length > 0 &&
        (uint64_t)hp->content_length - hp->body_bytes > DISCARD_MAX)
      close = 1;
  }
  return close;
}

/* The head of a complete response with a body and no handler headers,
 * from the cache (see head_cache_t); NULL when it does not fit there. */
static const head_cache_t *cached_head(hconn_t *hc, int status,
                                       const char *ctype, int flags,
                                       size_t blen) {
  http_state_t *hs = hstate();
  if (!blen) ctype = NULL; /* no Content-Type for an empty body */
  int close = must_close(hc, flags, 0);
  if (close) hc->want_close = 1;
  uint8_t conn = close ? 1 : hc->hp.minor == 0 ? 2 : 0;
  http_date_now();
  for (int i = 0; i < HEADS; i++) {
    head_cache_t *e = &hs->heads[i];
    if (e->date_t != hs->date_t || e->status != status || e->blen != blen ||
        e->conn != conn || e->has_ctype != (ctype != NULL))
      continue;
    if (ctype ? !strncmp(e->ctype, ctype, sizeof(e->ctype)) : !e->ctype[0])
      return e;
  }
  size_t cl = ctype ? strlen(ctype) : 0;
  if (cl >= sizeof(hs->heads[0].ctype)) return NULL;
  head_cache_t *e = &hs->heads[hs->next_head++ % HEADS];
  const char *text = hp_status_text(status);
  int n = snprintf(e->head, sizeof(e->head),
                   "HTTP/1.1 %d %s\r\nDate: %s\r\n%s%s%sContent-Length: "
                   "%zu\r\n%s\r\n",
                   status, text ? text : "", hs->date,
                   ctype ? "Content-Type: " : "", ctype ? ctype : "",
                   ctype ? "\r\n" : "", blen,
                   conn == 1   ? "Connection: close\r\n"
                   : conn == 2 ? "Connection: keep-alive\r\n"
                               : "");
  if (n <= 0 || (size_t)n >= sizeof(e->head)) {
    e->date_t = 0;
    return NULL;
  }
  e->date_t = hs->date_t;
  e->status = status;
  e->blen = blen;
  e->conn = conn;
  e->has_ctype = ctype != NULL;
  e->len = (uint16_t)n;
  memcpy(e->ctype, ctype ? ctype : "", cl + 1);
  return e;
}

/* Builds the status line and header block into the shared buffer. blen:
 * the length of a complete body, or -1 for a streamed response. L is NULL
 * for a response without headers (the FFI path), whose status the caller
 * has checked. */
static sbuf_t *build_head(lua_State *L, hconn_t *hc, int status, int hidx,
                          const char *ctype, int flags, int64_t blen,
                          hinfo_t *hi) {
  sbuf_t *o = &hstate()->out;
  hp_t *hp = &hc->hp;
  hi->has_ctype = hi->has_date = hi->close = 0;
  hi->length = -1;
  if (L && (status < 100 || status > 599))
    luaL_error(L, "orrery.http: bad status %d (100 to 599 expected)", status);
  int nobody = body_forbidden(status);
  o->n = 0;
  const char *text = hp_status_text(status);
  SB_LIT(o, "HTTP/1.1 ");
  sb_int(o, (uint64_t)status);
  SB_LIT(o, " ");
  if (text) sb_add(o, text, strlen(text));
  SB_LIT(o, "\r\n");
  if (L && lua_istable(L, hidx)) add_headers(L, hidx, o, hi);
  if (!hi->has_date) {
    SB_LIT(o, "Date: ");
    sb_add(o, http_date_now(), 29);
    SB_LIT(o, "\r\n");
  }
  if (!hi->has_ctype && ctype && !nobody && (blen != 0)) {
    SB_LIT(o, "Content-Type: ");
    sb_add(o, ctype, strlen(ctype));
    SB_LIT(o, "\r\n");
  }
  int close = must_close(hc, flags, hi->close);
  if (!nobody) {
    if (blen >= 0) {
      SB_LIT(o, "Content-Length: ");
      sb_int(o, (uint64_t)blen);
      SB_LIT(o, "\r\n");
    } else if (hi->length >= 0) {
      SB_LIT(o, "Content-Length: ");
      sb_int(o, (uint64_t)hi->length);
      SB_LIT(o, "\r\n");
      hc->mode = M_LENGTH;
      hc->remaining = (uint64_t)hi->length;
    } else if (hp->minor >= 1) {
      SB_LIT(o, "Transfer-Encoding: chunked\r\n");
      hc->mode = M_CHUNKED;
    } else {
      hc->mode = M_EOF; /* HTTP/1.0: the end of the body is the close */
      close = 1;
    }
  }
  if (close) {
    SB_LIT(o, "Connection: close\r\n");
    hc->want_close = 1;
  } else if (hp->minor == 0) {
    SB_LIT(o, "Connection: keep-alive\r\n");
  }
  SB_LIT(o, "\r\n");
  if (hc->head_req || nobody) hc->mode = M_NONE;
  return o;
}

/* Writes bufs; what the socket does not take at once is queued and the
 * current coroutine parks until it is written (W_PARKED). */
static int write_out(hconn_t *hc, const uv_buf_t *bufs, unsigned n) {
  host_t *h = host_current;
  net_wreq_t *w = NULL;
  int r = net_write(hc->c, bufs, n, h->current, &w);
  if (r == 0) return W_DONE;
  if (r < 0) {
    hc->want_close = 1;
    return r;
  }
  if (!h->current) return W_DONE;
  double t = hc->write_timeout > 0 ? hc->write_timeout : -1;
  net_park_co(h->current, net_unpark_write, w, "http write", t);
  return W_PARKED;
}

/* Pushes the result of write_out as respond() returns it. */
static int push_written(lua_State *L, int r) {
  if (r == W_DONE) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (r == W_PARKED) {
    lua_pushinteger(L, ORRERY_PARKED);
    lua_pushinteger(L, host_current->current->slot);
    return 2;
  }
  lua_pushnil(L);
  lua_pushstring(L, net_errstr(r));
  return 2;
}

static int finish_write(lua_State *L, hconn_t *hc, const uv_buf_t *bufs,
                        unsigned n) {
  return push_written(L, write_out(hc, bufs, n));
}

/* Writes a complete response; headers (a table at hidx of L) only when L
 * is given. */
static int respond(lua_State *L, hconn_t *hc, int status, const char *body,
                   size_t blen, int hidx, const char *ctype, int flags) {
  if (hc->body_err == B_BAD) {
    /* The body broke the framing: whatever the handler says, the answer
     * is 400 and the connection ends. */
    http_write_canned(hc->c, 400, http_date_now());
    hc->want_close = 1;
    hc->in_handler = 0;
    return W_DONE;
  }
  hinfo_t hi;
  int nobody = body_forbidden(status);
  sbuf_t *o = &hstate()->out;
  const head_cache_t *e = NULL;
  if (!L && !nobody) e = cached_head(hc, status, ctype, flags, blen);
  if (e) {
    o->n = 0;
    sb_add(o, e->head, e->len);
  } else {
    build_head(L, hc, status, hidx, ctype, flags, nobody ? 0 : (int64_t)blen,
               &hi);
  }
  hc->in_handler = 0;
  hc->mode = M_NONE;
  uv_buf_t bufs[2];
  unsigned n = 1;
  bufs[0] = buf_of(o->p, (unsigned)o->n);
  if (blen && !nobody && !hc->head_req) {
    if (blen <= 4096 && !sb_reserve(o, blen)) {
      /* Small bodies are copied behind the head: one plain write. */
      memcpy(o->p + o->n, body, blen);
      bufs[0] = buf_of(o->p, (unsigned)(o->n + blen));
    } else {
      bufs[1] = buf_of((char *)body, (unsigned)blen);
      n = 2;
    }
  }
  return write_out(hc, bufs, n);
}

/* respond(conn, status, body|nil, headers|nil, ctype|nil, flags)
 *   -> true | ORRERY_PARKED, slot (then write_status) | nil, err */
int http_l_respond(lua_State *L) {
  net_conn_t *c;
  hconn_t *hc = hc_check(L, &c);
  int status = (int)luaL_checkinteger(L, 2);
  size_t blen = 0;
  const char *body = lua_isnil(L, 3) ? NULL : luaL_checklstring(L, 3, &blen);
  const char *ctype = luaL_optstring(L, 5, NULL);
  int flags = (int)luaL_optinteger(L, 6, 0);
  if (!hc) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  return push_written(L, respond(L, hc, status, body, blen, 4, ctype, flags));
}

/* orrery_ffi_http_respond(h, status, body, len, ctype, flags): respond()
 * without headers -> W_DONE | W_PARKED (wait, then write_status) |
 * W_BAD_STATUS (nothing written) | a libuv error */
int orrery_ffi_http_respond(orrery_http_head *h, int32_t status,
                            const char *body, size_t len, const char *ctype,
                            int32_t flags) {
  hconn_t *hc = (hconn_t *)h;
  if (hc->c->closing) return UV_EPIPE;
  if (status < 100 || status > 599) return W_BAD_STATUS;
  return respond(NULL, hc, status, body, len, 0, ctype, flags);
}

int http_l_write_status(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  if (!c || c->werr) {
    lua_pushnil(L);
    lua_pushstring(L, net_errstr(c ? c->werr : UV_EPIPE));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* start(conn, status, headers|nil, ctype|nil, flags) -> as respond */
int http_l_start(lua_State *L) {
  net_conn_t *c;
  hconn_t *hc = hc_check(L, &c);
  int status = (int)luaL_checkinteger(L, 2);
  const char *ctype = luaL_optstring(L, 4, NULL);
  int flags = (int)luaL_optinteger(L, 5, 0);
  if (!hc) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  if (hc->body_err == B_BAD) {
    http_write_canned(c, 400, http_date_now());
    hc->want_close = 1;
    hc->in_handler = 0;
    hc->mode = M_NONE;
    lua_pushboolean(L, 1);
    return 1;
  }
  hinfo_t hi;
  sbuf_t *o = build_head(L, hc, status, 3, ctype, flags, -1, &hi);
  hc->in_handler = 0;
  uv_buf_t b = buf_of(o->p, (unsigned)o->n);
  return finish_write(L, hc, &b, 1);
}

/* chunk(conn, data) -> as respond; empty data writes nothing */
int http_l_chunk(lua_State *L) {
  net_conn_t *c;
  hconn_t *hc = hc_check(L, &c);
  size_t n;
  const char *d = luaL_checklstring(L, 2, &n);
  if (!hc) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  if (n == 0 || hc->mode == M_NONE) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (hc->mode == M_CHUNKED) {
    char pre[24];
    int pl = snprintf(pre, sizeof(pre), "%zx\r\n", n);
    uv_buf_t bufs[3] = {buf_of(pre, (unsigned)pl),
                        buf_of((char *)d, (unsigned)n), buf_of("\r\n", 2)};
    return finish_write(L, hc, bufs, 3);
  }
  if (hc->mode == M_LENGTH) {
    if (n > hc->remaining) {
      hc->want_close = 1;
      return luaL_error(L, "orrery.http: body longer than its Content-Length");
    }
    hc->remaining -= n;
  }
  uv_buf_t b = buf_of((char *)d, (unsigned)n);
  return finish_write(L, hc, &b, 1);
}

/* finish(conn) -> as respond: ends a streamed body */
int http_l_finish(lua_State *L) {
  net_conn_t *c;
  hconn_t *hc = hc_check(L, &c);
  if (!hc) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  int mode = hc->mode;
  hc->mode = M_NONE;
  if (mode == M_CHUNKED) {
    uv_buf_t b = buf_of("0\r\n\r\n", 5);
    return finish_write(L, hc, &b, 1);
  }
  if (mode == M_LENGTH && hc->remaining) hc->want_close = 1;
  if (mode == M_EOF) hc->want_close = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* reject(conn, status): answers a connection the server will not serve
 * (over capacity) with a canned response; the caller then closes it. */
int http_l_reject(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  int status = (int)luaL_checkinteger(L, 2);
  if (!c) return 0;
  char date[40];
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  http_write_canned(c, status, date);
  return 0;
}
