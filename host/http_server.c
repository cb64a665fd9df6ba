/* SPDX-License-Identifier: MIT */
/* http_server.c -- orrery.http.core: the per-connection half of the HTTP/1.1
 * server (request heads, bodies, keep-alive, response framing). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_parse.h"
#include "net.h"

/* One connection is served by one coroutine (lua/orrery/http/server.lua)
 * that loops: next() parks until a request head is parsed, the handler
 * runs, respond() writes the whole response with one write. Parsing runs
 * in the read callback (hc_on_read), so a coroutine is resumed once per
 * request, not once per read. The head stays in the connection's read
 * buffer, at the offsets the parser recorded, until the next message
 * starts; header lookups read it there, so a request's headers are only
 * available until its response has been sent (checked with seq).
 *
 * next() and respond() without headers are FFI calls (ffi_cdef.h), the
 * rest of the API goes through the Lua C API.
 *
 * The wait for a request head (idle, header and drain timeouts) is timed
 * with the connection's read deadline (net_deadline), not with the
 * coroutine's timer: the deadline is a field write in a list ordered by
 * time, and a kept-alive connection serving requests back to back costs
 * no timer operation per request. */

/* Stages of a connection. */
enum {
  S_WAIT_HEAD = 0, /* reading a request head (draining first if ACTIVE) */
  S_HEAD_READY,    /* a head is parsed, not yet handed to Lua */
  S_ACTIVE,        /* a request is being handled */
  S_ERROR,         /* a protocol error must be answered, then close */
  S_CLOSE          /* close quietly */
};

/* What a parked coroutine waits for. */
enum { G_NONE = 0, G_HEAD, G_BODY_ALL, G_BODY_CHUNK };

/* Body errors. */
enum { B_OK = 0, B_TOO_LARGE, B_TIMEOUT, B_CLOSED, B_BAD };

/* Response framing of a streamed response. */
enum { M_NONE = 0, M_CHUNKED, M_LENGTH, M_EOF };

/* A wake code of our own: the server is shutting down. */
#define CODE_SHUTDOWN 0x7000

#define DISCARD_MAX (256 * 1024) /* unread body drained to keep a connection   \
                                  */

enum { RF_CLOSE = 1 };

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

typedef struct hconn_s {
  orrery_http_head pub; /* first: the FFI side holds a pointer to it */
  hp_t hp;
  net_conn_t *c;
  int32_t id;
  uint64_t max_body;
  uint32_t header_ms, body_ms, idle_ms; /* read deadlines, 0: none */
  double body_timeout, write_timeout;
  double bdeadline; /* of the body read, 0 when unset */
  int stage, goal;
  int seq; /* request number, for stale header lookups */
  int requests;
  uint8_t continue_sent, want_close, in_handler, notified, have_chunk;
  uint8_t body_err, mode, head_req, shutting;
  uint8_t fixed; /* a header or drain deadline runs (c->dl), keep it */
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

static http_state_t *hstate(void) {
  return host_current->http;
}

static int sb_reserve(sbuf_t *b, size_t more) {
  if (b->n + more <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 512;
  while (cap < b->n + more) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

static void sb_add(sbuf_t *b, const char *s, size_t n) {
  if (sb_reserve(b, n)) return;
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

#define SB_LIT(b, s) sb_add((b), (s), sizeof(s) - 1)

static void sb_int(sbuf_t *b, uint64_t v) {
  char tmp[24];
  int i = 24;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  sb_add(b, tmp + i, (size_t)(24 - i));
}

static const char *date_now(void) {
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

static void hc_free(void *ud) {
  hconn_t *hc = ud;
  hp_free(&hc->hp);
  free(hc->body.p);
  free(hc);
}

/* Sets the connection's read deadline ms from now (0: none). */
static void set_deadline(hconn_t *hc, uint32_t ms) {
  net_deadline(hc->c, ms);
}

static uint32_t to_ms(double secs) {
  if (!(secs > 0)) return 0;
  double ms = ceil(secs * 1000);
  return ms > 4e9 ? 4000000000u : (uint32_t)ms;
}

/* The read buffer, never NULL (it is returned to the pool when empty). */
static const char *rbuf_of(net_conn_t *c) {
  return c->rbuf ? c->rbuf : "";
}

static hconn_t *hc_check(lua_State *L, net_conn_t **cp) {
  net_conn_t *c = net_check(L, 1);
  if (!c || !c->ud || c->on_read == NULL) {
    if (cp) *cp = NULL;
    return NULL;
  }
  if (cp) *cp = c;
  return c->ud;
}

/* -- Buffer management -- */

/* Moves unparsed bytes down to the end of the head, making room while the
 * head itself stays where its offsets point. */
static void compact_body(hconn_t *hc) {
  net_conn_t *c = hc->c;
  hp_t *hp = &hc->hp;
  size_t keep = hp->head_end;
  if (hp->pos > keep) {
    size_t delta = hp->pos - keep;
    memmove(c->rbuf + keep, c->rbuf + hp->pos, c->rlen - hp->pos);
    c->rlen -= delta;
    hp_shift_body(hp, delta);
  }
  net_resume(c);
}

static void next_message(hconn_t *hc) {
  net_conn_t *c = hc->c;
  hp_t *hp = &hc->hp;
  size_t pos = hp->pos;
  if (pos == c->rlen) {
    c->rlen = 0;
  } else if (pos) {
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
  }
  hp_next_message(hp, pos);
  hc->stage = S_WAIT_HEAD;
  hc->seq++;
  hc->continue_sent = hc->have_chunk = hc->body_err = 0;
  hc->mode = M_NONE;
  hc->discarded = 0;
  hc->fixed = 0;
  hc->bdeadline = 0;
  hc->body.n = 0;
  if (hc->body.cap > 65536) { /* do not keep a large body's buffer */
    free(hc->body.p);
    hc->body.p = NULL;
    hc->body.cap = 0;
  }
  net_resume(c);
}

static int has_request_bytes(hconn_t *hc) {
  return hc->c->rlen > hc->hp.pos || hc->hp.state != HP_S_IDLE;
}

/* Advances toward the next request head. Returns 1 when the stage says
 * what to do next, 0 when more input is needed. */
static int step_head(hconn_t *hc) {
  net_conn_t *c = hc->c;
  hp_t *hp = &hc->hp;
  for (;;) {
    if (hc->stage != S_WAIT_HEAD && hc->stage != S_ACTIVE) return 1;
    if (hc->stage == S_ACTIVE) { /* finish the previous message */
      if (hp->state == HP_S_BODY && (hp->flags & HP_F_EXPECT_CONTINUE) &&
          !hc->continue_sent) {
        hc->stage = S_CLOSE; /* the client waits for 100 before sending */
        return 1;
      }
      int ev = hp_feed(hp, rbuf_of(c), c->rlen);
      if (ev == HP_BODY) {
        hc->discarded += hp->body.len;
        if (hc->discarded > DISCARD_MAX) {
          hc->stage = S_CLOSE;
          return 1;
        }
        compact_body(hc);
        continue;
      }
      if (ev == HP_DONE) {
        if (hp->flags & HP_F_UPGRADE) {
          hc->stage = S_CLOSE;
          return 1;
        }
        next_message(hc);
        continue;
      }
      if (ev == HP_NEED) {
        compact_body(hc);
        if (c->rerr) {
          hc->stage = S_CLOSE;
          return 1;
        }
        return 0;
      }
      hc->stage = S_CLOSE;
      return 1;
    }
    int ev = hp_feed(hp, rbuf_of(c), c->rlen);
    if (ev == HP_HEAD) {
      hc->stage = S_HEAD_READY;
      return 1;
    }
    if (ev == HP_ERROR) {
      hc->stage = hp->status ? S_ERROR : S_CLOSE;
      return 1;
    }
    /* HP_NEED: a head is never longer than the buffer can hold. */
    if (c->rerr) {
      hc->stage = S_CLOSE;
      return 1;
    }
    return 0;
  }
}

static int step_body(hconn_t *hc, int all) {
  net_conn_t *c = hc->c;
  hp_t *hp = &hc->hp;
  for (;;) {
    if (hc->have_chunk || hc->body_err || hp->state == HP_S_DONE ||
        hp->state == HP_S_UPGRADE)
      return 1;
    int ev = hp_feed(hp, rbuf_of(c), c->rlen);
    if (ev == HP_BODY) {
      if (hp->body_bytes > hc->max_body) {
        hc->body_err = B_TOO_LARGE;
        hc->want_close = 1;
        return 1;
      }
      if (!all) {
        hc->have_chunk = 1;
        return 1;
      }
      sb_add(&hc->body, c->rbuf + hp->body.off, hp->body.len);
      compact_body(hc);
      continue;
    }
    if (ev == HP_DONE) return 1;
    if (ev == HP_NEED) {
      compact_body(hc);
      if (c->rerr) {
        hc->body_err = B_CLOSED;
        hc->want_close = 1;
        return 1;
      }
      return 0;
    }
    hc->body_err = B_BAD;
    hc->want_close = 1;
    return 1;
  }
}

/* Runs after every read on a server connection. */
static void hc_on_read(net_conn_t *c) {
  hconn_t *hc = c->ud;
  co_t *co = c->rco;
  if (!co) {
    /* The client went away while its request is being handled: tell the
     * Lua side, which cancels the request's context. Bytes still to be
     * parsed (pipelined requests) mean it is not gone yet. */
    if (c->rerr && hc->in_handler && !hc->notified && c->rlen <= hc->hp.pos) {
      hc->notified = 1;
      if (!c->host->exiting) lcore_dispatch(c->host, "http_gone", hc->id);
    }
    return;
  }
  int done = 1;
  if (hc->goal == G_HEAD) {
    done = step_head(hc);
    if (!done && hc->shutting && !has_request_bytes(hc)) done = 1;
    if (!done && !hc->fixed && hc->stage == S_WAIT_HEAD &&
        has_request_bytes(hc)) {
      /* The first bytes of a request, not yet the whole head: the idle
       * wait becomes a header deadline. */
      set_deadline(hc, hc->header_ms);
      hc->fixed = 1;
    }
  } else if (hc->goal == G_BODY_ALL || hc->goal == G_BODY_CHUNK) {
    done = step_body(hc, hc->goal == G_BODY_ALL);
  }
  if (done) {
    c->rco = NULL;
    if (!c->host->exiting) sched_wake(c->host, co, 0);
  }
}

/* Runs when the connection's read deadline passes: a coroutine waiting
 * for a request head wakes with a timeout. The deadline of an earlier
 * wait may pass while the handler runs or reads the body; it is ignored. */
static void hc_on_deadline(net_conn_t *c) {
  hconn_t *hc = c->ud;
  co_t *co = c->rco;
  if (!hc || !co || hc->goal != G_HEAD) return;
  c->rco = NULL;
  if (!c->host->exiting) sched_wake(c->host, co, WAKE_TIMEOUT);
}

static int park_read(lua_State *L, hconn_t *hc, int goal, double deadline) {
  host_t *h = host_current;
  if (!h->current)
    return luaL_error(L, "orrery.http: would block outside a coroutine");
  hc->goal = goal;
  hc->c->rco = h->current;
  double timeout = -1;
  if (deadline > 0) {
    timeout = deadline - sched_now();
    if (timeout < 0) timeout = 0;
  }
  return net_park(L, net_unpark_read, hc->c, "http read body", timeout);
}

/* -- Errors answered by the server itself -- */

static void write_canned(net_conn_t *c, int status, const char *date) {
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

/* -- Lua API -- */

static double opt_field(lua_State *L, int t, const char *k, double def) {
  lua_getfield(L, t, k);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : def;
  lua_pop(L, 1);
  return v;
}

/* attach(conn, cfg, id): makes conn a server connection. */
static int l_attach(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int32_t id = (int32_t)luaL_checkinteger(L, 3);
  if (!c || c->ud)
    return luaL_argerror(L, 1, "open, unattached connection expected");
  hconn_t *hc = calloc(1, sizeof(*hc));
  if (!hc) return luaL_error(L, "orrery.http: out of memory");
  hp_limits_t lim;
  lim.max_header_bytes = (uint32_t)opt_field(L, 2, "max_header_bytes", 16384);
  lim.max_uri = (uint32_t)opt_field(L, 2, "max_uri_length", 8192);
  lim.max_headers = (uint32_t)opt_field(L, 2, "max_headers", 100);
  hp_init(&hc->hp, &lim);
  hc->max_body = (uint64_t)opt_field(L, 2, "max_body_size", 1 << 20);
  hc->header_ms = to_ms(opt_field(L, 2, "read_header_timeout", 10));
  hc->body_timeout = opt_field(L, 2, "read_body_timeout", 30);
  hc->body_ms = to_ms(hc->body_timeout);
  hc->idle_ms = to_ms(opt_field(L, 2, "idle_timeout", 60));
  hc->write_timeout = opt_field(L, 2, "write_timeout", 30);
  hc->c = c;
  hc->id = id;
  c->ud = hc;
  c->ud_free = hc_free;
  c->on_read = hc_on_read;
  c->on_deadline = hc_on_deadline;
  c->rmax = lim.max_header_bytes + 65536;
  lua_pushlightuserdata(L, hc);
  return 1;
}

/* Results of orrery_ffi_http_next. */
enum { NEXT_CLOSE = -1, NEXT_PARKED = 0, NEXT_HEAD = 1, NEXT_ERROR = 2 };

/* Parks the current coroutine until a request head is parsed or the
 * connection's read deadline passes. */
static int park_head(hconn_t *hc) {
  co_t *co = host_current->current;
  if (!co) {
    hc->stage = S_CLOSE;
    return NEXT_CLOSE;
  }
  hc->goal = G_HEAD;
  hc->c->rco = co;
  net_park_co(co, net_unpark_read, hc->c, "http read request", -1);
  return NEXT_PARKED;
}

/* orrery_ffi_http_next(h, wake_code) -> NEXT_HEAD (h describes the request)
 * | NEXT_PARKED (wait, then call again with the wake code) | NEXT_ERROR (a
 * protocol error, already answered: h->status, h->reason) | NEXT_CLOSE */
int orrery_ffi_http_next(orrery_http_head *h, int32_t code) {
  hconn_t *hc = (hconn_t *)h;
  net_conn_t *c = hc->c;
  hp_t *hp = &hc->hp;
  if (c->closing) return NEXT_CLOSE;
  hc->goal = G_NONE;
  hc->in_handler = 0;
  if (code == CODE_SHUTDOWN) hc->shutting = 1;
  if (hc->want_close && hc->stage == S_ACTIVE) hc->stage = S_CLOSE;
  for (;;) {
    if (code == WAKE_TIMEOUT) {
      if (hc->stage == S_WAIT_HEAD && has_request_bytes(hc)) {
        hp->status = 408;
        hp->reason = "timeout reading the request head";
        hc->stage = S_ERROR;
      } else if (hc->stage == S_WAIT_HEAD || hc->stage == S_ACTIVE) {
        hc->stage = S_CLOSE;
      }
    } else if (code < 0 && code != CODE_SHUTDOWN) {
      hc->stage = S_CLOSE;
    }
    if (step_head(hc)) break;
    if (hc->shutting && hc->stage == S_WAIT_HEAD && !has_request_bytes(hc)) {
      hc->stage = S_CLOSE;
      break;
    }
    if (hc->stage == S_ACTIVE && !hc->fixed) {
      set_deadline(hc, hc->body_ms); /* to drain the unread body */
      hc->fixed = 1;
    } else if (hc->fixed) {
      /* A header or drain deadline that passed while the coroutine was
       * not parked (a spurious wake) is a timeout now. */
      if (c->dl && c->dl <= net_now_ms(c) && code != WAKE_TIMEOUT) {
        code = WAKE_TIMEOUT;
        continue;
      }
    } else if (has_request_bytes(hc)) {
      set_deadline(hc, hc->header_ms);
      hc->fixed = 1;
    } else {
      /* Idle between requests: the deadline counts from now, and the
       * connection gives its empty read buffer back. */
      set_deadline(hc, hc->requests ? hc->idle_ms : hc->header_ms);
      net_shrink(c);
    }
    return park_head(hc);
  }
  if (hc->stage == S_HEAD_READY) {
    if (hp->content_length > 0 && (uint64_t)hp->content_length > hc->max_body) {
      hp->status = 413;
      hp->reason = "request body too large";
      hc->stage = S_ERROR;
    } else if (hp->flags & HP_F_HAS_BODY) {
      /* Decode the part of the body that is already here: a broken or
       * oversized body sent along with its head is rejected before any
       * handler sees the request, and small bodies are ready at once. */
      step_body(hc, 1);
      if (hc->body_err == B_BAD || hc->body_err == B_TOO_LARGE) {
        hp->status = hc->body_err == B_BAD ? 400 : 413;
        hp->reason = hc->body_err == B_BAD ? "bad request body"
                                           : "request body too large";
        hc->stage = S_ERROR;
      } else if (hc->body_err == B_CLOSED) {
        hc->body_err = B_OK; /* reported when the handler reads */
      }
    }
  }
  if (hc->stage == S_ERROR) {
    write_canned(c, hp->status, date_now());
    hc->stage = S_CLOSE;
    h->status = hp->status;
    h->reason = hp->reason ? hp->reason : "bad request";
    return NEXT_ERROR;
  }
  if (hc->stage != S_HEAD_READY) {
    hc->stage = S_CLOSE;
    return NEXT_CLOSE;
  }
  /* Hand the head over. */
  hc->stage = S_ACTIVE;
  hc->in_handler = 1;
  hc->notified = 0;
  hc->want_close = 0;
  hc->requests++;
  hc->fixed = 0;
  hc->head_req = hp->method_id == HTTP_HEAD;
  h->buf = c->rbuf;
  h->path_off = hp->path.off;
  h->path_len = hp->path.len;
  h->has_query = (hp->flags & HP_F_HAS_QUERY) != 0;
  h->query_off = hp->query.off;
  h->query_len = hp->query.len;
  h->seq = hc->seq;
  h->method = hp->method_id;
  h->minor = hp->minor;
  return NEXT_HEAD;
}

/* methods() -> { [llhttp method number] = name } */
static int l_methods(lua_State *L) {
  lua_newtable(L);
#define METHOD_GEN(NUM, NAME, STRING)                                          \
  lua_pushstring(L, llhttp_method_name(HTTP_##NAME));                          \
  lua_rawseti(L, -2, NUM);
  HTTP_ALL_METHOD_MAP(METHOD_GEN)
#undef METHOD_GEN
  return 1;
}

static hconn_t *hc_live(lua_State *L, net_conn_t **cp) {
  hconn_t *hc = hc_check(L, cp);
  int seq = (int)luaL_checkinteger(L, 2);
  if (!hc || seq != hc->seq || hc->stage != S_ACTIVE)
    luaL_error(L,
               "orrery.http: the request is finished (its headers and body are "
               "only available until the response is sent)");
  return hc;
}

static int ieq(const char *a, size_t n, const char *b, size_t m) {
  if (n != m) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x >= 'A' && x <= 'Z') x += 32;
    if (y >= 'A' && y <= 'Z') y += 32;
    if (x != y) return 0;
  }
  return 1;
}

/* Pushes the values of header name joined with ", " ("; " for Cookie). */
static int push_header(lua_State *L, hconn_t *hc, const char *name, size_t nl) {
  hp_t *hp = &hc->hp;
  const char *b = hc->c->rbuf;
  int found = 0;
  luaL_Buffer lb;
  for (uint32_t i = 0; i < hp->nh; i++) {
    if (!ieq(b + hp->hname[i].off, hp->hname[i].len, name, nl)) continue;
    hp_span_t v = hp->hval[i];
    const char *vs = b + v.off;
    size_t vl = v.len;
    while (vl && (vs[vl - 1] == ' ' || vs[vl - 1] == '\t')) vl--;
    if (!found) {
      /* The common case, one field, needs no buffer. */
      uint32_t j = i + 1;
      while (j < hp->nh &&
             !ieq(b + hp->hname[j].off, hp->hname[j].len, name, nl))
        j++;
      if (j == hp->nh) {
        lua_pushlstring(L, vs, vl);
        return 1;
      }
      luaL_buffinit(L, &lb);
    } else {
      if (ieq(name, nl, "cookie", 6))
        luaL_addlstring(&lb, "; ", 2);
      else
        luaL_addlstring(&lb, ", ", 2);
    }
    luaL_addlstring(&lb, vs, vl);
    found = 1;
  }
  if (!found) return 0;
  luaL_pushresult(&lb);
  return 1;
}

/* header(conn, seq, name) -> value | nil */
static int l_header(lua_State *L) {
  hconn_t *hc = hc_live(L, NULL);
  size_t nl;
  const char *name = luaL_checklstring(L, 3, &nl);
  if (!push_header(L, hc, name, nl)) lua_pushnil(L);
  return 1;
}

/* header_values(conn, seq, name) -> { value, ... } in request order */
static int l_header_values(lua_State *L) {
  hconn_t *hc = hc_live(L, NULL);
  size_t nl;
  const char *name = luaL_checklstring(L, 3, &nl);
  hp_t *hp = &hc->hp;
  const char *b = hc->c->rbuf;
  lua_newtable(L);
  int n = 0;
  for (uint32_t i = 0; i < hp->nh; i++) {
    if (!ieq(b + hp->hname[i].off, hp->hname[i].len, name, nl)) continue;
    size_t vl = hp->hval[i].len;
    const char *vs = b + hp->hval[i].off;
    while (vl && (vs[vl - 1] == ' ' || vs[vl - 1] == '\t')) vl--;
    lua_pushlstring(L, vs, vl);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* headers(conn, seq) -> { lowercased name = joined value }, { name, value,
 * name, value, ... } as received */
static int l_headers(lua_State *L) {
  hconn_t *hc = hc_live(L, NULL);
  hp_t *hp = &hc->hp;
  const char *b = hc->c->rbuf;
  lua_createtable(L, 0, (int)hp->nh);
  lua_createtable(L, (int)hp->nh * 2, 0);
  char low[256];
  for (uint32_t i = 0; i < hp->nh; i++) {
    hp_span_t n = hp->hname[i];
    const char *ns = b + n.off;
    size_t vl = hp->hval[i].len;
    const char *vs = b + hp->hval[i].off;
    while (vl && (vs[vl - 1] == ' ' || vs[vl - 1] == '\t')) vl--;
    lua_pushlstring(L, ns, n.len);
    lua_rawseti(L, -2, (int)i * 2 + 1);
    lua_pushlstring(L, vs, vl);
    lua_rawseti(L, -2, (int)i * 2 + 2);
    size_t k = n.len < sizeof(low) ? n.len : sizeof(low);
    for (size_t j = 0; j < k; j++) {
      char ch = ns[j];
      low[j] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    lua_pushlstring(L, low, k);
    lua_rawget(L, -3);
    int seen = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (seen) continue;
    lua_pushlstring(L, low, k);
    push_header(L, hc, ns, n.len);
    lua_rawset(L, -4);
  }
  return 2;
}

static void send_continue(hconn_t *hc) {
  hp_t *hp = &hc->hp;
  if ((hp->flags & HP_F_EXPECT_CONTINUE) && !hc->continue_sent &&
      hp->state == HP_S_BODY) {
    hc->continue_sent = 1;
    /* Only if the client has not started sending anyway. */
    if (hc->c->rlen == hp->pos) {
      uv_buf_t b = buf_of("HTTP/1.1 100 Continue\r\n\r\n", 25);
      net_write(hc->c, &b, 1, NULL, NULL);
    }
  }
}

static const char *body_errstr(int e) {
  switch (e) {
  case B_TOO_LARGE:
    return "too_large";
  case B_TIMEOUT:
    return "timeout";
  case B_CLOSED:
    return "closed";
  default:
    return "bad_request";
  }
}

static int body_common(lua_State *L, hconn_t *hc, int all) {
  int code = (int)luaL_optinteger(L, 3, 0);
  if (code == WAKE_TIMEOUT && !hc->body_err) {
    hc->body_err = B_TIMEOUT;
    hc->want_close = 1;
  } else if (code < 0 && !hc->body_err) {
    hc->body_err = B_CLOSED;
    hc->want_close = 1;
  }
  hc->goal = G_NONE;
  send_continue(hc);
  if (!step_body(hc, all)) {
    if (!hc->bdeadline && hc->body_timeout > 0)
      hc->bdeadline = sched_now() + hc->body_timeout;
    return park_read(L, hc, all ? G_BODY_ALL : G_BODY_CHUNK, hc->bdeadline);
  }
  if (hc->body_err) {
    lua_pushnil(L);
    lua_pushstring(L, body_errstr(hc->body_err));
    return 2;
  }
  return -1;
}

/* body(conn, seq, code) -> the whole body | false, slot | nil, err */
static int l_body(lua_State *L) {
  hconn_t *hc = hc_live(L, NULL);
  int r = body_common(L, hc, 1);
  if (r >= 0) return r;
  lua_pushlstring(L, hc->body.p ? hc->body.p : "", hc->body.n);
  hc->body.n = 0;
  return 1;
}

/* read(conn, seq, code) -> next piece | nil at the end | false, slot |
 * nil, err */
static int l_read(lua_State *L) {
  hconn_t *hc = hc_live(L, NULL);
  if (hc->body.n) {
    lua_pushlstring(L, hc->body.p, hc->body.n);
    hc->body.n = 0;
    return 1;
  }
  int r = body_common(L, hc, 0);
  if (r >= 0) return r;
  if (hc->body.n) { /* decoded ahead of the handler, see l_next */
    lua_pushlstring(L, hc->body.p, hc->body.n);
    hc->body.n = 0;
    return 1;
  }
  if (hc->have_chunk) {
    hc->have_chunk = 0;
    lua_pushlstring(L, hc->c->rbuf + hc->hp.body.off, hc->hp.body.len);
    compact_body(hc);
    return 1;
  }
  lua_pushnil(L);
  return 1;
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
  date_now();
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
  if (L && (status < 100 || status > 999))
    luaL_error(L, "orrery.http: bad status %d", status);
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
    sb_add(o, date_now(), 29);
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

/* Results of a response write (W_ERR: a libuv error, below zero). */
enum { W_DONE = 0, W_PARKED = 1, W_BAD_STATUS = -1000 };

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
    lua_pushboolean(L, 0);
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
    write_canned(hc->c, 400, date_now());
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
 *   -> true | false, slot (then write_status) | nil, err */
static int l_respond(lua_State *L) {
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
  if (status < 100 || status > 999) return W_BAD_STATUS;
  return respond(NULL, hc, status, body, len, 0, ctype, flags);
}

static int l_write_status(lua_State *L) {
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
static int l_start(lua_State *L) {
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
    write_canned(c, 400, date_now());
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
static int l_chunk(lua_State *L) {
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
static int l_finish(lua_State *L) {
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
static int l_reject(lua_State *L) {
  net_conn_t *c = net_check(L, 1);
  int status = (int)luaL_checkinteger(L, 2);
  if (!c) return 0;
  char date[40];
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  write_canned(c, status, date);
  return 0;
}

/* state(conn) -> "idle" (waiting for a request, nothing received),
 * "active" or "closed" */
static int l_state(lua_State *L) {
  net_conn_t *c;
  hconn_t *hc = hc_check(L, &c);
  if (!hc || c->closing)
    lua_pushliteral(L, "closed");
  else if (hc->goal == G_HEAD && c->rco && hc->stage == S_WAIT_HEAD &&
           !has_request_bytes(hc))
    lua_pushliteral(L, "idle");
  else
    lua_pushliteral(L, "active");
  return 1;
}

/* close(conn, linger_seconds) */
static int l_close(lua_State *L) {
  double linger = luaL_optnumber(L, 2, 0);
  net_conn_t *c = net_check(L, 1);
  if (c && c->ud) c->on_read = NULL;
  net_release(L, 1, linger > 0 ? (unsigned)(linger * 1000) : 0);
  return 0;
}

/* The sentinel's finalizer runs when the Lua state closes. */
static int state_gc(lua_State *L) {
  host_t *h = host_current;
  (void)L;
  if (!h || !h->http) return 0;
  free(h->http->out.p);
  free(h->http);
  h->http = NULL;
  return 0;
}

int luaopen_orrery_http_core(lua_State *L) {
  static const luaL_Reg fns[] = {{"attach", l_attach},
                                 {"methods", l_methods},
                                 {"header", l_header},
                                 {"header_values", l_header_values},
                                 {"headers", l_headers},
                                 {"body", l_body},
                                 {"read", l_read},
                                 {"respond", l_respond},
                                 {"write_status", l_write_status},
                                 {"start", l_start},
                                 {"chunk", l_chunk},
                                 {"finish", l_finish},
                                 {"reject", l_reject},
                                 {"state", l_state},
                                 {"close", l_close},
                                 {NULL, NULL}};
  host_t *h = host_current;
  if (!h->http) {
    h->http = calloc(1, sizeof(http_state_t));
    if (!h->http) return luaL_error(L, "orrery.http: out of memory");
    lua_newuserdata(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "orrery.http.state");
  }
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  static const struct {
    const char *name;
    int value;
  } consts[] = {
      {"CODE_SHUTDOWN", CODE_SHUTDOWN}, {"NEXT_CLOSE", NEXT_CLOSE},
      {"NEXT_PARKED", NEXT_PARKED},     {"NEXT_HEAD", NEXT_HEAD},
      {"NEXT_ERROR", NEXT_ERROR},       {"W_DONE", W_DONE},
      {"W_PARKED", W_PARKED},           {"W_BAD_STATUS", W_BAD_STATUS}};
  for (size_t i = 0; i < sizeof(consts) / sizeof(consts[0]); i++) {
    lua_pushinteger(L, consts[i].value);
    lua_setfield(L, -2, consts[i].name);
  }
  return 1;
}
