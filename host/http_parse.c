/* SPDX-License-Identifier: MIT */
/* http_parse.c -- strict HTTP/1.1 request parsing over llhttp, with limits. */
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

/* llhttp runs in its strict default mode: no lenient flag is ever set. On
 * top of it this file enforces what llhttp 8 lets through but RFC 9112 or
 * request-smuggling hygiene forbids: obs-fold, whitespace before the colon,
 * a missing or repeated Host, Transfer-Encoding on HTTP/1.0 or other than a
 * lone final "chunked", versions other than 1.0 and 1.1, fragments and
 * other request-target forms, plus the size limits. Each callback pauses
 * the parser at an event so that the caller decides what happens next. */

/* Which header the current field is, for the framing checks. */
enum { F_OTHER = 0, F_HOST, F_CL, F_TE, F_EXPECT };

static int fail(hp_t *hp, int status, const char *reason) {
  hp->status = status;
  hp->reason = reason;
  return HPE_USER;
}

static hp_t *hp_of(llhttp_t *p) {
  return (hp_t *)p->data;
}

static void span_add(const hp_t *hp, hp_span_t *s, const char *at, size_t len) {
  if (s->len == 0) s->off = (uint32_t)(at - hp->base);
  s->len += (uint32_t)len;
}

static int ieq(const char *a, size_t n, const char *lit) {
  size_t m = strlen(lit);
  if (n != m) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
    if (c != lit[i]) return 0;
  }
  return 1;
}

static int on_message_begin(llhttp_t *p) {
  hp_t *hp = hp_of(p);
  hp->state = HP_S_HEAD;
  return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len) {
  hp_t *hp = hp_of(p);
  if (hp->method.len == 0) hp->head_start = (size_t)(at - hp->base);
  span_add(hp, &hp->method, at, len);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  hp_t *hp = hp_of(p);
  span_add(hp, &hp->url, at, len);
  if (hp->url.len > hp->lim.max_uri) return fail(hp, 414, "URI too long");
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  hp_t *hp = hp_of(p);
  if (hp->state != HP_S_HEAD) {
    /* Trailer fields are parsed and dropped, but still counted. */
    if (!hp->in_value && ++hp->ntrailers > hp->lim.max_headers)
      return fail(hp, 431, "too many trailer fields");
    hp->in_value = 1;
    return 0;
  }
  if (!hp->in_value) {
    if (hp->nh >= hp->lim.max_headers)
      return fail(hp, 431, "too many header fields");
    if (hp->nh == hp->hcap) {
      uint32_t cap = hp->hcap ? hp->hcap * 2 : 16;
      if (cap > hp->lim.max_headers) cap = hp->lim.max_headers;
      hp_span_t *n = realloc(hp->hname, sizeof(hp_span_t) * cap);
      if (!n) return fail(hp, 503, "out of memory");
      hp->hname = n;
      hp_span_t *v = realloc(hp->hval, sizeof(hp_span_t) * cap);
      if (!v) return fail(hp, 503, "out of memory");
      hp->hval = v;
      hp->hcap = cap;
    }
    hp->hname[hp->nh].len = 0;
    hp->hval[hp->nh].off = 0;
    hp->hval[hp->nh].len = 0;
    hp->nh++;
    hp->in_value = 1; /* a field is open until its value completes */
  }
  span_add(hp, &hp->hname[hp->nh - 1], at, len);
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  hp_t *hp = hp_of(p);
  if (hp->state != HP_S_HEAD) return 0;
  hp_span_t n = hp->hname[hp->nh - 1];
  const char *s = hp->base + n.off;
  hp->cur = F_OTHER;
  if (ieq(s, n.len, "host"))
    hp->cur = F_HOST;
  else if (ieq(s, n.len, "content-length"))
    hp->cur = F_CL;
  else if (ieq(s, n.len, "transfer-encoding"))
    hp->cur = F_TE;
  else if (ieq(s, n.len, "expect"))
    hp->cur = F_EXPECT;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  hp_t *hp = hp_of(p);
  if (hp->state != HP_S_HEAD) return 0;
  span_add(hp, &hp->hval[hp->nh - 1], at, len);
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  hp_t *hp = hp_of(p);
  hp->in_value = 0;
  if (hp->state != HP_S_HEAD) return 0;
  hp_span_t v = hp->hval[hp->nh - 1];
  const char *s = hp->base + v.off;
  switch (hp->cur) {
  case F_HOST:
    hp->host_count++;
    break;
  case F_CL:
    hp->cl_count++;
    break;
  case F_TE:
    hp->te_count++;
    hp->te = v;
    break;
  case F_EXPECT:
    if (!ieq(s, v.len, "100-continue"))
      return fail(hp, 417, "unsupported expectation");
    hp->flags |= HP_F_EXPECT_CONTINUE;
    break;
  }
  return 0;
}

/* Rejects obs-fold and whitespace between a field name and its colon,
 * which llhttp 8 accepts in strict mode. Line ends were checked by llhttp
 * (CRLF only), so splitting on LF is exact. */
static int scan_fields(hp_t *hp, const char *s, size_t n) {
  size_t i = 0;
  while (i < n && s[i] != '\n') i++; /* the request line */
  i++;
  while (i < n) {
    char c = s[i];
    if (c == '\r') break; /* the empty line ending the head */
    if (c == ' ' || c == '\t') return fail(hp, 400, "obsolete line folding");
    while (i < n && s[i] != ':') {
      if (s[i] == ' ' || s[i] == '\t')
        return fail(hp, 400, "whitespace before colon");
      i++;
    }
    while (i < n && s[i] != '\n') i++;
    i++;
  }
  return 0;
}

static int check_target(hp_t *hp) {
  const char *u = hp->base + hp->url.off;
  size_t n = hp->url.len, i = 0;
  if (memchr(u, '#', n)) return fail(hp, 400, "fragment in request-target");
  if (n == 1 && u[0] == '*') {
    if (hp->method_id != HTTP_OPTIONS)
      return fail(hp, 400, "bad request-target");
    hp->path = hp->url;
    return 0;
  }
  if (u[0] != '/') {
    /* absolute-form: scheme "://" authority, then the path */
    size_t k = 0;
    if (n > 7 && ieq(u, 7, "http://"))
      k = 7;
    else if (n > 8 && ieq(u, 8, "https://"))
      k = 8;
    else
      return fail(hp, 400, "bad request-target");
    while (k < n && u[k] != '/' && u[k] != '?') k++;
    i = k;
  }
  size_t q = i;
  while (q < n && u[q] != '?') q++;
  hp->path.off = hp->url.off + (uint32_t)i;
  hp->path.len = (uint32_t)(q - i); /* 0: absolute-form without a path */
  if (q < n) {
    hp->flags |= HP_F_HAS_QUERY;
    hp->query.off = hp->url.off + (uint32_t)q + 1;
    hp->query.len = (uint32_t)(n - q - 1);
  }
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  hp_t *hp = hp_of(p);
  hp->method_id = p->method;
  hp->minor = p->http_minor;
  if (p->http_major != 1 || p->http_minor > 1)
    return fail(hp, 505, "HTTP version not supported");
  if (p->method == HTTP_CONNECT) return fail(hp, 501, "CONNECT not supported");
  if (hp->url.len == 0) return fail(hp, 400, "empty request-target");
  if (hp->host_count > 1 || (hp->minor == 1 && hp->host_count == 0))
    return fail(hp, 400, "missing or repeated Host");
  if (hp->cl_count > 1) return fail(hp, 400, "repeated Content-Length");
  if (hp->te_count) {
    if (hp->minor == 0) return fail(hp, 400, "Transfer-Encoding in HTTP/1.0");
    if (hp->te_count > 1 || hp->cl_count)
      return fail(hp, 400, "conflicting framing headers");
    const char *s = hp->base + hp->te.off;
    size_t n = hp->te.len;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (!ieq(s, n, "chunked")) {
      if (n >= 7 && ieq(s + n - 7, 7, "chunked") &&
          (s[n - 8] == ' ' || s[n - 8] == ','))
        return fail(hp, 501, "unsupported transfer coding");
      return fail(hp, 400, "bad Transfer-Encoding");
    }
    hp->flags |= HP_F_CHUNKED | HP_F_HAS_BODY;
  }
  if (hp->cl_count) {
    hp->content_length = (int64_t)p->content_length;
    if (hp->content_length > 0) hp->flags |= HP_F_HAS_BODY;
  }
  if (llhttp_should_keep_alive(p)) hp->flags |= HP_F_KEEP_ALIVE;
  if (p->upgrade) hp->flags |= HP_F_UPGRADE;
  hp->state = HP_S_BODY;
  hp->ev = HP_HEAD;
  return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  hp_t *hp = hp_of(p);
  if (len == 0) return 0;
  hp->body.off = (uint32_t)(at - hp->base);
  hp->body.len = (uint32_t)len;
  hp->body_bytes += len;
  hp->ev = HP_BODY;
  return HPE_PAUSED;
}

static int on_message_complete(llhttp_t *p) {
  hp_t *hp = hp_of(p);
  hp->state = HP_S_DONE;
  hp->ev = HP_DONE;
  return HPE_PAUSED;
}

static const llhttp_settings_t *settings(void) {
  static llhttp_settings_t s;
  static int ready;
  if (!ready) {
    llhttp_settings_init(&s);
    s.on_message_begin = on_message_begin;
    s.on_method = on_method;
    s.on_url = on_url;
    s.on_header_field = on_header_field;
    s.on_header_field_complete = on_header_field_complete;
    s.on_header_value = on_header_value;
    s.on_header_value_complete = on_header_value_complete;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
    ready = 1;
  }
  return &s;
}

static void reset_message(hp_t *hp) {
  hp->state = HP_S_IDLE;
  hp->head_start = hp->head_end = hp->pos;
  memset(&hp->method, 0, sizeof(hp_span_t) * 4);
  memset(&hp->te, 0, sizeof(hp->te));
  memset(&hp->body, 0, sizeof(hp->body));
  hp->nh = 0;
  hp->content_length = -1;
  hp->flags = 0;
  hp->host_count = hp->cl_count = hp->te_count = hp->in_value = 0;
  hp->cur = F_OTHER;
  hp->body_bytes = 0;
  hp->ntrailers = 0;
  hp->status = 0;
  hp->reason = NULL;
}

void hp_init(hp_t *hp, const hp_limits_t *lim) {
  memset(hp, 0, sizeof(*hp));
  hp->lim = *lim;
  llhttp_init(&hp->p, HTTP_REQUEST, settings());
  hp->p.data = hp;
  reset_message(hp);
}

void hp_free(hp_t *hp) {
  free(hp->hname);
  free(hp->hval);
  hp->hname = hp->hval = NULL;
  hp->hcap = 0;
}

static int to_error(hp_t *hp, int status, const char *reason) {
  if (!hp->status) { /* else a callback already said why */
    hp->status = status;
    hp->reason = reason;
  }
  hp->state = HP_S_ERROR;
  return HP_ERROR;
}

int hp_feed(hp_t *hp, const char *base, size_t end) {
  if (hp->state == HP_S_ERROR) return HP_ERROR;
  if (hp->state == HP_S_DONE) return HP_DONE;
  if (hp->state == HP_S_UPGRADE) return to_error(hp, 0, NULL);
  if (hp->state == HP_S_IDLE) hp->head_start = hp->pos;
  size_t stop = end;
  int in_head = hp->state == HP_S_IDLE || hp->state == HP_S_HEAD;
  if (in_head) {
    size_t cap = hp->head_start + hp->lim.max_header_bytes;
    if (stop > cap) stop = cap;
  }
  if (stop < hp->pos) stop = hp->pos;
  hp->base = base;
  hp->ev = HP_NEED;
  llhttp_errno_t e = llhttp_execute(&hp->p, base + hp->pos, stop - hp->pos);
  hp->base = NULL;
  switch (e) {
  case HPE_OK:
    hp->pos = stop;
    if (in_head && stop < end)
      return to_error(hp, 431, "request head too large");
    return HP_NEED;
  case HPE_PAUSED:
    hp->pos = (size_t)(llhttp_get_error_pos(&hp->p) - base);
    llhttp_resume(&hp->p);
    if (hp->ev == HP_HEAD) {
      hp->head_end = hp->pos;
      hp->base = base;
      int r =
          scan_fields(hp, base + hp->head_start, hp->head_end - hp->head_start);
      if (!r) r = check_target(hp);
      hp->base = NULL;
      if (r) return to_error(hp, 0, NULL);
    }
    return hp->ev;
  case HPE_PAUSED_UPGRADE:
    hp->pos = (size_t)(llhttp_get_error_pos(&hp->p) - base);
    hp->state = HP_S_UPGRADE;
    return to_error(hp, 0, NULL);
  case HPE_USER:
    return to_error(hp, 0, NULL);
  default:
    return to_error(hp, 400, llhttp_get_error_reason(&hp->p));
  }
}

void hp_next_message(hp_t *hp, size_t drop) {
  hp->pos -= drop;
  reset_message(hp);
}

void hp_shift_body(hp_t *hp, size_t delta) {
  hp->pos -= delta;
}

const char *hp_method_name(const hp_t *hp) {
  return llhttp_method_name((llhttp_method_t)hp->method_id);
}

const char *hp_status_text(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 203:
    return "Non-Authoritative Information";
  case 204:
    return "No Content";
  case 205:
    return "Reset Content";
  case 206:
    return "Partial Content";
  case 300:
    return "Multiple Choices";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 402:
    return "Payment Required";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 406:
    return "Not Acceptable";
  case 407:
    return "Proxy Authentication Required";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 410:
    return "Gone";
  case 411:
    return "Length Required";
  case 412:
    return "Precondition Failed";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 416:
    return "Range Not Satisfiable";
  case 417:
    return "Expectation Failed";
  case 418:
    return "I'm a teapot";
  case 421:
    return "Misdirected Request";
  case 422:
    return "Unprocessable Content";
  case 425:
    return "Too Early";
  case 426:
    return "Upgrade Required";
  case 428:
    return "Precondition Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 451:
    return "Unavailable For Legal Reasons";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return NULL;
  }
}
