/* SPDX-License-Identifier: MIT */
/* http_parse.c -- strict HTTP/1.1 request parsing over llhttp, with limits. */
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

/* Makes room for one more field: the first HP_INLINE live in hp_t. */
static int grow_fields(hp_t *hp) {
  uint32_t cap = hp->hcap * 2;
  if (cap > hp->lim.max_headers) cap = hp->lim.max_headers;
  if (cap <= hp->hcap) return -1;
  size_t sz = sizeof(hp_span_t) * cap;
  if (hp->hname == hp->inl_name) {
    hp_span_t *n = malloc(sz), *v = malloc(sz);
    if (!n || !v) {
      free(n);
      free(v);
      return -1;
    }
    memcpy(n, hp->inl_name, sizeof(hp->inl_name));
    memcpy(v, hp->inl_val, sizeof(hp->inl_val));
    hp->hname = n;
    hp->hval = v;
  } else {
    hp_span_t *n = realloc(hp->hname, sz);
    if (!n) return -1;
    hp->hname = n; /* larger than hcap says until hval follows: harmless */
    hp_span_t *v = realloc(hp->hval, sz);
    if (!v) return -1;
    hp->hval = v;
  }
  hp->hcap = cap;
  return 0;
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
    if (hp->nh == hp->hcap && grow_fields(hp))
      return fail(hp, 503, "out of memory");
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
  const char *p = s, *end = s + n;
  const char *nl = memchr(p, '\n', n); /* the request line */
  while (nl) {
    p = nl + 1;
    if (p >= end || *p == '\r') break; /* the empty line ending the head */
    if (*p == ' ' || *p == '\t') return fail(hp, 400, "obsolete line folding");
    for (; p < end && *p != ':'; p++)
      if (*p == ' ' || *p == '\t')
        return fail(hp, 400, "whitespace before colon");
    nl = memchr(p, '\n', (size_t)(end - p)); /* the value needs no scan */
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

/* Immutable and shared by every parser of every worker: llhttp only reads
 * its settings. Callbacks not named here are NULL, as llhttp_settings_init
 * would leave them. */
static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

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

/* -- The fast path --
 *
 * Most request heads have one shape: GET or HEAD, an origin-form target,
 * HTTP/1.1 (or 1.0 kept alive), a handful of fields with plain values and
 * nothing that frames a body or changes the connection. fast_head parses a
 * complete head of that shape directly, a few times cheaper than llhttp's
 * state machine. It accepts a subset of what the llhttp path accepts, with
 * the same result (host/fuzz_http_fast.c checks both paths against each
 * other); anything else, or a head not complete yet, is left to llhttp,
 * which therefore still decides every error. llhttp is not fed the heads
 * taken here: it stays at the start of a message, where it would be after
 * them, since only kept-alive messages without a body are taken. */

/* Byte classes of the fast path: C_TCHAR may be in a field name, C_TARGET
 * in an origin-form target as llhttp takes it in a path or query ('#', a
 * fragment rejected later, is left to llhttp), C_VALUE in a field value,
 * whitespace included (obs-text and controls are left to llhttp). */
enum { C_TCHAR = 1, C_TARGET = 2, C_VALUE = 4 };
/* clang-format off */
static const uint8_t fp_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 7, 6, 5, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6,
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0,
    /* 0x80 and above: none */
};
/* clang-format on */

#define FP_IS(c, k) (fp_class[(unsigned char)(c)] & (k))

/* The end of a field value starting at p: the first byte that is not
 * C_VALUE, or e. Sixteen bytes at a time where SSE2 is there. */
static const char *scan_value(const char *p, const char *e) {
#ifdef __SSE2__
  const __m128i lo = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f),
                tab = _mm_set1_epi8('\t');
  while (e - p >= 16) {
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    /* Signed: bytes from 0x80 are below 0x20 too. */
    __m128i stop =
        _mm_andnot_si128(_mm_cmpeq_epi8(x, tab), _mm_cmplt_epi8(x, lo));
    stop = _mm_or_si128(stop, _mm_cmpeq_epi8(x, del));
    int m = _mm_movemask_epi8(stop);
    if (m) return p + __builtin_ctz((unsigned)m);
    p += 16;
  }
#endif
  while (p < e && FP_IS(*p, C_VALUE)) p++;
  return p;
}

static int add_field(hp_t *hp, uint32_t noff, uint32_t nlen, uint32_t voff,
                     uint32_t vlen) {
  if (hp->nh == hp->hcap && grow_fields(hp)) return -1;
  hp->hname[hp->nh].off = noff;
  hp->hname[hp->nh].len = nlen;
  hp->hval[hp->nh].off = voff;
  hp->hval[hp->nh].len = vlen;
  hp->nh++;
  return 0;
}

/* Returns 1 with the head parsed (the message is complete: no body), 0 to
 * leave it to llhttp (fields it recorded are dropped by the caller). */
static int fast_scan(hp_t *hp, const char *base, size_t end) {
  const char *s = base + hp->pos, *e = base + end, *p;
  if ((size_t)(e - s) > hp->lim.max_header_bytes)
    e = s + hp->lim.max_header_bytes;
  uint8_t method;
  if (e - s >= 4 && !memcmp(s, "GET ", 4)) {
    method = HTTP_GET;
    p = s + 4;
  } else if (e - s >= 5 && !memcmp(s, "HEAD ", 5)) {
    method = HTTP_HEAD;
    p = s + 5;
  } else {
    return 0;
  }
  const char *u = p, *q = NULL;
  if (p >= e || *p != '/') return 0;
  for (; p < e && FP_IS(*p, C_TARGET); p++)
    if (*p == '?' && !q) q = p;
  size_t ulen = (size_t)(p - u);
  if (ulen > hp->lim.max_uri) return 0;
  if (e - p < 11 || memcmp(p, " HTTP/1.", 8) || (p[8] != '0' && p[8] != '1') ||
      p[9] != '\r' || p[10] != '\n')
    return 0;
  uint8_t minor = (uint8_t)(p[8] - '0');
  p += 11;
  int keep = minor == 1, hosts = 0;
  hp->nh = 0;
  for (;;) {
    if (e - p < 2) return 0;
    if (p[0] == '\r') {
      if (p[1] != '\n') return 0;
      p += 2;
      break;
    }
    const char *n = p;
    while (p < e && FP_IS(*p, C_TCHAR)) p++;
    if (p == n || p >= e || *p != ':') return 0;
    size_t nlen = (size_t)(p - n);
    p++;
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    const char *v = p;
    p = scan_value(p, e);
    if (e - p < 2 || p[0] != '\r' || p[1] != '\n') return 0;
    size_t vlen = (size_t)(p - v);
    p += 2;
    switch (nlen) {
    case 4:
      if ((n[0] | 0x20) == 'h' && (n[1] | 0x20) == 'o' &&
          (n[2] | 0x20) == 's' && (n[3] | 0x20) == 't')
        hosts++;
      break;
    case 6:
      if (ieq(n, nlen, "expect")) return 0;
      break;
    case 7:
      if (ieq(n, nlen, "upgrade")) return 0;
      break;
    case 10:
      if (ieq(n, nlen, "connection")) {
        /* A value with trailing whitespace is left to llhttp: it does not
         * take "keep-alive<TAB>" for keep-alive, and both paths must
         * agree (fuzz_http_fast). */
        if (!ieq(v, vlen, "keep-alive")) return 0; /* close, a list, ... */
        keep = 1;
      }
      break;
    case 14:
      if (ieq(n, nlen, "content-length")) return 0;
      break;
    case 16:
      if (ieq(n, nlen, "proxy-connection")) return 0;
      break;
    case 17:
      if (ieq(n, nlen, "transfer-encoding")) return 0;
      break;
    }
    if (hp->nh >= hp->lim.max_headers) return 0;
    if (add_field(hp, (uint32_t)(n - base), (uint32_t)nlen,
                  (uint32_t)(v - base), (uint32_t)vlen))
      return 0;
  }
  if (!keep || hosts > 1 || (minor == 1 && hosts == 0)) return 0;
  hp->head_start = hp->pos;
  hp->head_end = (size_t)(p - base);
  hp->method.off = (uint32_t)hp->pos;
  hp->method.len = method == HTTP_GET ? 3 : 4;
  hp->url.off = (uint32_t)(u - base);
  hp->url.len = (uint32_t)ulen;
  hp->method_id = method;
  hp->minor = minor;
  hp->host_count = (uint8_t)hosts;
  /* What check_target makes of an origin-form target. */
  hp->path.off = hp->url.off;
  hp->path.len = (uint32_t)(q ? (size_t)(q - u) : ulen);
  if (q) {
    hp->flags |= HP_F_HAS_QUERY;
    hp->query.off = (uint32_t)(q + 1 - base);
    hp->query.len = (uint32_t)(u + ulen - q - 1);
  }
  hp->flags |= HP_F_KEEP_ALIVE;
  hp->pos = hp->head_end;
  hp->state = HP_S_DONE;
  return 1;
}

static int fast_head(hp_t *hp, const char *base, size_t end) {
  if (fast_scan(hp, base, end)) return 1;
  reset_message(hp);
  return 0;
}

void hp_init(hp_t *hp, const hp_limits_t *lim) {
  memset(hp, 0, sizeof(*hp));
  hp->lim = *lim;
  hp->fast = 1;
  hp->hname = hp->inl_name;
  hp->hval = hp->inl_val;
  hp->hcap = HP_INLINE;
  llhttp_init(&hp->p, HTTP_REQUEST, &settings);
  hp->p.data = hp;
  reset_message(hp);
}

void hp_free(hp_t *hp) {
  if (hp->hname != hp->inl_name) {
    free(hp->hname);
    free(hp->hval);
  }
  hp->hname = hp->inl_name;
  hp->hval = hp->inl_val;
  hp->hcap = HP_INLINE;
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
  if (hp->state == HP_S_IDLE) {
    if (hp->pos >= end) return HP_NEED;
    if (hp->fast && fast_head(hp, base, end)) return HP_HEAD;
    hp->head_start = hp->pos;
  }
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
  /* After a message that ends the connection or upgrades it, llhttp
   * takes no further message: neither must the fast path, which llhttp
   * does not see. */
  if (!(hp->flags & HP_F_KEEP_ALIVE) || (hp->flags & HP_F_UPGRADE))
    hp->fast = 0;
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
