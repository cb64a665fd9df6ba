/* SPDX-License-Identifier: MIT */
/* http_server.c -- orrery.http.core: the per-connection half of the HTTP/1.1
 * server. This file holds connection state, reading and parsing of request
 * heads and bodies, keep-alive, deadlines, the request-side Lua API and the
 * module's registration; responses are framed in http_response.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "http_conn.h"

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

/* A wake code of our own: the server is shutting down. */
#define CODE_SHUTDOWN ORRERY_HTTP_SHUTDOWN

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
      if (!c->host->exiting) host_up(c->host, "http_gone", hc->id);
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
  if (!c->host->exiting) sched_wake(c->host, co, ORRERY_WAKE_TIMEOUT);
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
  hc->max_body_cfg = (uint64_t)opt_field(L, 2, "max_body_size", 1 << 20);
  hc->max_body_head = (uint64_t)opt_field(L, 2, "max_route_body_size", 0);
  if (hc->max_body_head < hc->max_body_cfg)
    hc->max_body_head = hc->max_body_cfg;
  hc->max_body = hc->max_body_cfg;
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

/* Results of orrery_ffi_http_next (ffi_cdef.h). */
enum {
  NEXT_CLOSE = ORRERY_HTTP_CLOSE,
  NEXT_PARKED = ORRERY_PARKED,
  NEXT_HEAD = ORRERY_HTTP_HEAD,
  NEXT_ERROR = ORRERY_HTTP_ERROR
};

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

/* orrery_ffi_http_next(h, wake_code) -> ORRERY_HTTP_HEAD (h describes the
 * request) | ORRERY_PARKED (wait, then call again with the wake code) |
 * ORRERY_HTTP_ERROR (a protocol error, already answered: h->status,
 * h->reason) | ORRERY_HTTP_CLOSE */
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
    if (code == ORRERY_WAKE_TIMEOUT) {
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
      if (net_deadline_passed(c) && code != ORRERY_WAKE_TIMEOUT) {
        code = ORRERY_WAKE_TIMEOUT;
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
    /* Before routing only the largest limit any route has is known: the
     * request's own (the server's, or its route's through body_limit)
     * applies when the handler reads. */
    hc->max_body = hc->max_body_head;
    if (hp->content_length > 0 &&
        (uint64_t)hp->content_length > hc->max_body_head) {
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
    hc->max_body = hc->max_body_cfg;
  }
  if (hc->stage == S_ERROR) {
    http_write_canned(c, hp->status, http_date_now());
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

/* status_texts() -> { [code] = reason phrase }: the one table of status
 * lines (hp_status_text), for orrery.http.status_text. */
static int l_status_texts(lua_State *L) {
  lua_newtable(L);
  for (int code = 100; code <= 599; code++) {
    const char *text = hp_status_text(code);
    if (!text) continue;
    lua_pushstring(L, text);
    lua_rawseti(L, -2, code);
  }
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

/* Whether the body is known to exceed the request's limit: by its
 * Content-Length or by what was decoded before the limit was set. */
static int over_limit(hconn_t *hc) {
  hp_t *hp = &hc->hp;
  return hp->body_bytes > hc->max_body ||
         (hp->content_length > 0 &&
          (uint64_t)hp->content_length > hc->max_body);
}

/* body_limit(conn, seq, bytes): the body limit of this request, at most
 * the largest one the server was configured with (max_route_body_size). */
static int l_body_limit(lua_State *L) {
  hconn_t *hc = hc_live(L, NULL);
  lua_Number n = luaL_checknumber(L, 3);
  if (!(n >= 0)) return luaL_argerror(L, 3, "non-negative size expected");
  hc->max_body =
      n >= (lua_Number)hc->max_body_head ? hc->max_body_head : (uint64_t)n;
  return 0;
}

static int body_common(lua_State *L, hconn_t *hc, int all) {
  int code = (int)luaL_optinteger(L, 3, 0);
  if (code == ORRERY_WAKE_TIMEOUT && !hc->body_err) {
    hc->body_err = B_TIMEOUT;
    hc->want_close = 1;
  } else if (code < 0 && !hc->body_err) {
    hc->body_err = B_CLOSED;
    hc->want_close = 1;
  }
  hc->goal = G_NONE;
  if (!hc->body_err && over_limit(hc)) {
    hc->body_err = B_TOO_LARGE;
    hc->want_close = 1; /* the rest of the body is not read */
  }
  if (!hc->body_err) send_continue(hc);
  if (!step_body(hc, all)) {
    if (!hc->bdeadline && hc->body_timeout > 0)
      hc->bdeadline = sched_now() + hc->body_timeout;
    return park_read(L, hc, all ? G_BODY_ALL : G_BODY_CHUNK, hc->bdeadline);
  }
  if (hc->body_err) {
    lua_pushnil(L);
    lua_pushstring(L, err_body(hc->body_err));
    return 2;
  }
  return -1;
}

/* body(conn, seq, code) -> the whole body | ORRERY_PARKED, slot | nil, err */
static int l_body(lua_State *L) {
  hconn_t *hc = hc_live(L, NULL);
  int r = body_common(L, hc, 1);
  if (r >= 0) return r;
  lua_pushlstring(L, hc->body.p ? hc->body.p : "", hc->body.n);
  hc->body.n = 0;
  return 1;
}

/* read(conn, seq, code) -> next piece | nil at the end | ORRERY_PARKED, slot |
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
                                 {"status_texts", l_status_texts},
                                 {"header", l_header},
                                 {"header_values", l_header_values},
                                 {"headers", l_headers},
                                 {"body", l_body},
                                 {"body_limit", l_body_limit},
                                 {"read", l_read},
                                 {"respond", http_l_respond},
                                 {"write_status", http_l_write_status},
                                 {"start", http_l_start},
                                 {"chunk", http_l_chunk},
                                 {"finish", http_l_finish},
                                 {"reject", http_l_reject},
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
  return 1;
}
