/* SPDX-License-Identifier: MIT */
/* http_client.c -- strict HTTP/1.1 response parsing for the client.
 *
 * Plain C over llhttp, without LuaJIT or libuv, so that the fuzz target
 * (host/fuzz_http_client.c) drives it alone; the Lua side reaches it
 * through the FFI (ffi_cdef.h), its glue is http_client_lua.c. */
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

/* The FFI surface keeps default visibility (see host.h). */
#pragma GCC visibility push(default)
#include "ffi_cdef.h"
#pragma GCC visibility pop

/* llhttp parses the response in its strict mode, in the same build as the
 * server's request parser (LLHTTP_STRICT_MODE). This file owns the
 * client's framing rules on top of it (RFC 9112 section 6.3): a HEAD
 * response, 1xx, 204 and 304 have no body whatever their fields say;
 * interim 1xx responses are skipped (100 Continue is reported, for a
 * request that waits for it); Content-Length and Transfer-Encoding are
 * checked as strictly as the server checks them in requests, since a
 * client behind which a proxy reuses connections is as exposed to
 * smuggling as a server is; the head and its fields are bounded.
 *
 * The parser is fed whatever a read returned, so a field may arrive in
 * pieces across feeds: names and values are copied into a buffer of the
 * parser's own (bounded by the head limit), and only body pieces point
 * into the data fed. Each callback that ends an event pauses llhttp, so
 * that one feed returns one event and the Lua side decides what next. */

/* Interim responses accepted before the final one. */
#define HC_MAX_INTERIM 16

enum { S_IDLE = 0, S_HEAD, S_BODY, S_DONE, S_ERROR };
enum { F_OTHER = 0, F_CL, F_TE, F_KA };

typedef struct {
  orrery_hresp pub; /* first: Lua sees this part */
  llhttp_t p;
  char *fbuf;
  uint32_t *sp;
  uint32_t flen, fcap, spcap;
  uint32_t max_head, max_fields;
  uint32_t head_bytes;    /* bytes of the current head (or trailer block) */
  const char *base, *end; /* the data being fed, during a feed only */
  const char *name_end;   /* where the last field name piece ended */
  uint8_t state, no_body, in_value, cur, cl_count, te_count, ninterim, ev;
} hc_t;

static hc_t *hc_of(llhttp_t *p) {
  return (hc_t *)p->data;
}

static int fail(hc_t *hc, const char *reason, int too_large) {
  hc->pub.reason = reason;
  hc->pub.too_large = (uint8_t)too_large;
  return HPE_USER;
}

/* a[0, n) equals the lower-case literal lit of length m, ignoring case. */
static int ieq(const char *a, size_t n, const char *lit, size_t m) {
  if (n != m) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
    if (c != lit[i]) return 0;
  }
  return 1;
}

/* Appends field bytes; the buffer is bounded by twice the head limit
 * (a head, then a trailer block of the same bound). */
static int put(hc_t *hc, const char *at, size_t len) {
  if (len == 0) return 0; /* fbuf may still be NULL */
  if (hc->flen + len > 2 * (size_t)hc->max_head)
    return fail(hc, "response fields too large", 1);
  if (hc->flen + len > hc->fcap) {
    uint32_t cap = hc->fcap ? hc->fcap : 1024;
    while (cap < hc->flen + len) cap *= 2;
    char *b = realloc(hc->fbuf, cap);
    if (!b) return fail(hc, "out of memory", 1);
    hc->fbuf = b;
    hc->fcap = cap;
    hc->pub.fields = b;
  }
  memcpy(hc->fbuf + hc->flen, at, len);
  hc->flen += (uint32_t)len;
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  hc_t *hc = hc_of(p);
  hc->state = S_HEAD;
  hc->pub.started = 1;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  hc_t *hc = hc_of(p);
  if (!hc->in_value) {
    uint32_t n = hc->pub.nfields;
    if (n >= hc->max_fields) return fail(hc, "too many response fields", 1);
    if (n == hc->spcap) {
      uint32_t cap = hc->spcap ? hc->spcap * 2 : 16;
      uint32_t *s = realloc(hc->sp, sizeof(uint32_t) * 4 * cap);
      if (!s) return fail(hc, "out of memory", 1);
      hc->sp = s;
      hc->spcap = cap;
      hc->pub.spans = s;
    }
    uint32_t *s = hc->sp + 4 * n;
    s[0] = hc->flen;
    s[1] = s[2] = s[3] = 0;
    hc->pub.nfields = n + 1;
    hc->in_value = 1; /* a field is open until its value completes */
  }
  if (put(hc, at, len)) return HPE_USER;
  hc->sp[4 * (hc->pub.nfields - 1) + 1] += (uint32_t)len;
  hc->name_end = at + len;
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  hc_t *hc = hc_of(p);
  uint32_t *s = hc->sp + 4 * (hc->pub.nfields - 1);
  if (s[1] == 0) return fail(hc, "empty field name", 0);
  const char *n = hc->fbuf + s[0];
  /* Whitespace between the name and the colon (RFC 9112 section 5.1) is
   * refused as the server refuses it: llhttp 8 lets it through. The byte
   * after the name is seen unless the name ended the data fed. */
  if (hc->name_end && hc->name_end < hc->end && *hc->name_end != ':')
    return fail(hc, "whitespace before colon", 0);
  hc->cur = F_OTHER;
  if (hc->state != S_HEAD) return 0;
#define IEQ(lit) ieq(n, s[1], lit, sizeof(lit) - 1)
  if (IEQ("content-length"))
    hc->cur = F_CL;
  else if (IEQ("transfer-encoding"))
    hc->cur = F_TE;
  else if (IEQ("keep-alive"))
    hc->cur = F_KA;
#undef IEQ
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  hc_t *hc = hc_of(p);
  uint32_t *s = hc->sp + 4 * (hc->pub.nfields - 1);
  if (s[3] == 0) s[2] = hc->flen;
  if (put(hc, at, len)) return HPE_USER;
  s[3] += (uint32_t)len;
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  hc_t *hc = hc_of(p);
  hc->in_value = 0;
  uint32_t *s = hc->sp + 4 * (hc->pub.nfields - 1);
  if (s[3] == 0) s[2] = hc->flen;
  if (s[3] && (memchr(hc->fbuf + s[2], '\r', s[3]) ||
               memchr(hc->fbuf + s[2], '\n', s[3])))
    return fail(hc, "obsolete line folding", 0);
  if (hc->cur == F_CL) hc->cl_count++;
  if (hc->cur == F_TE) hc->te_count++;
  if (hc->cur == F_KA) hc->pub.ka_field = hc->pub.nfields;
  return 0;
}

/* Forgets the fields of an interim response. */
static void drop_fields(hc_t *hc) {
  hc->pub.nfields = 0;
  hc->flen = 0;
  hc->cl_count = hc->te_count = 0;
  hc->pub.ka_field = 0;
}

static int on_headers_complete(llhttp_t *p) {
  hc_t *hc = hc_of(p);
  orrery_hresp *r = &hc->pub;
  int st = p->status_code;
  if (p->http_major != 1 || p->http_minor > 1)
    return fail(hc, "unsupported HTTP version", 0);
  if (st < 100 || st > 599) return fail(hc, "bad status code", 0);
  if (st == 101) return fail(hc, "unexpected 101 Switching Protocols", 0);
  if (st < 200) {
    /* An interim response: no body; llhttp takes the next message. */
    if (++hc->ninterim > HC_MAX_INTERIM)
      return fail(hc, "too many interim responses", 0);
    p->flags |= F_SKIPBODY;
    drop_fields(hc);
    hc->state = S_IDLE;
    if (st == 100) {
      hc->ev = ORRERY_HRESP_CONTINUE;
      return HPE_PAUSED;
    }
    return 0;
  }
  if (hc->cl_count > 1) return fail(hc, "duplicate Content-Length", 0);
  if (hc->te_count > 1) return fail(hc, "repeated Transfer-Encoding", 0);
  int no_body = hc->no_body || st == 204 || st == 304;
  if (hc->te_count && !no_body) {
    if (p->http_minor == 0) return fail(hc, "Transfer-Encoding in HTTP/1.0", 0);
    if (hc->cl_count)
      return fail(hc, "both Content-Length and Transfer-Encoding", 0);
    if (!(p->flags & F_CHUNKED))
      return fail(hc, "unsupported transfer coding", 0);
  }
  if (no_body) p->flags |= F_SKIPBODY;
  r->status = st;
  r->minor = (uint8_t)p->http_minor;
  r->nhead = r->nfields;
  r->head_len = hc->flen;
  r->chunked = !no_body && (p->flags & F_CHUNKED) ? 1 : 0;
  /* The length of the body that follows: 0 when there is none whatever
   * the fields say, -1 when it is chunked or runs to the close. */
  if (no_body)
    r->content_length = 0;
  else if (hc->cl_count && !r->chunked)
    r->content_length = (int64_t)p->content_length;
  else
    r->content_length = -1;
  r->keep_alive = (uint8_t)llhttp_should_keep_alive(p);
  hc->state = S_BODY;
  hc->ev = ORRERY_HRESP_HEAD;
  return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  hc_t *hc = hc_of(p);
  if (len == 0) return 0;
  hc->pub.body_off = (uint32_t)(at - hc->base);
  hc->pub.body_len = (uint32_t)len;
  hc->pub.body_bytes += len;
  hc->ev = ORRERY_HRESP_BODY;
  return HPE_PAUSED;
}

static int on_message_complete(llhttp_t *p) {
  hc_t *hc = hc_of(p);
  if (hc->state != S_BODY) return 0; /* an interim response */
  hc->state = S_DONE;
  hc->ev = ORRERY_HRESP_DONE;
  return HPE_PAUSED;
}

static const llhttp_settings_t hc_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* -- FFI surface -- */

orrery_hresp *orrery_ffi_hresp_new(uint32_t max_head, uint32_t max_fields) {
  hc_t *hc = calloc(1, sizeof(*hc));
  if (!hc) return NULL;
  hc->max_head = max_head;
  hc->max_fields = max_fields;
  orrery_ffi_hresp_start(&hc->pub, 0);
  return &hc->pub;
}

void orrery_ffi_hresp_free(orrery_hresp *r) {
  hc_t *hc = (hc_t *)r;
  if (!hc) return;
  free(hc->fbuf);
  free(hc->sp);
  free(hc);
}

void orrery_ffi_hresp_start(orrery_hresp *r, int no_body) {
  hc_t *hc = (hc_t *)r;
  /* A fresh llhttp per response: after an error or a close-delimited
   * body llhttp takes no further message, and a connection is only
   * reused after an exchange that ended cleanly anyway. */
  llhttp_init(&hc->p, HTTP_RESPONSE, &hc_settings);
  hc->p.data = hc;
  drop_fields(hc);
  hc->state = S_IDLE;
  hc->no_body = (uint8_t)(no_body != 0);
  hc->in_value = 0;
  hc->ninterim = 0;
  hc->head_bytes = 0;
  hc->ev = ORRERY_HRESP_NEED;
  memset(r, 0, sizeof(*r));
  r->fields = hc->fbuf;
  r->spans = hc->sp;
  r->content_length = -1;
}

static int to_error(hc_t *hc, const char *reason, int too_large) {
  if (!hc->pub.reason) { /* else a callback already said why */
    hc->pub.reason = reason;
    hc->pub.too_large = (uint8_t)too_large;
  }
  hc->state = S_ERROR;
  return ORRERY_HRESP_ERROR;
}

int orrery_ffi_hresp_feed(orrery_hresp *r, const char *data, uint32_t off,
                          uint32_t len) {
  hc_t *hc = (hc_t *)r;
  if (hc->state == S_ERROR) return ORRERY_HRESP_ERROR;
  if (hc->state == S_DONE) {
    r->pos = off;
    return ORRERY_HRESP_DONE;
  }
  if (off > len) off = len;
  /* Heads (and the trailer block) are bounded: llhttp sees at most what
   * is left of the limit, and a head that does not end within it is too
   * large rather than waited for. */
  uint32_t stop = len;
  int in_head = hc->state == S_IDLE || hc->state == S_HEAD ||
                (hc->state == S_BODY && hc->pub.nfields > hc->pub.nhead);
  if (in_head && stop - off > hc->max_head - hc->head_bytes)
    stop = off + (hc->max_head - hc->head_bytes);
  hc->base = data;
  hc->end = data + stop;
  hc->ev = ORRERY_HRESP_NEED;
  llhttp_errno_t e = llhttp_execute(&hc->p, data + off, stop - off);
  hc->base = hc->end = hc->name_end = NULL;
  uint32_t pos = stop;
  if (e == HPE_PAUSED || e == HPE_USER || e == HPE_PAUSED_UPGRADE) {
    const char *ep = llhttp_get_error_pos(&hc->p);
    if (ep) pos = (uint32_t)(ep - data);
  }
  if (in_head) hc->head_bytes += pos - off;
  if (hc->ev == ORRERY_HRESP_HEAD) hc->head_bytes = 0;
  r->pos = pos;
  switch (e) {
  case HPE_OK:
    if (in_head && stop < len)
      return to_error(hc, "response head too large", 1);
    return ORRERY_HRESP_NEED;
  case HPE_PAUSED:
    llhttp_resume(&hc->p);
    return hc->ev;
  case HPE_USER:
    return to_error(hc, "bad response", 0);
  default:
    return to_error(hc, llhttp_get_error_reason(&hc->p), 0);
  }
}

int orrery_ffi_hresp_eof(orrery_hresp *r) {
  hc_t *hc = (hc_t *)r;
  if (hc->state == S_DONE) return ORRERY_HRESP_DONE;
  if (hc->state == S_ERROR) return ORRERY_HRESP_ERROR;
  if (!r->started) return ORRERY_HRESP_NEED;
  if (hc->state != S_BODY)
    return to_error(hc, "connection closed in the response head", 0);
  hc->ev = ORRERY_HRESP_NEED;
  llhttp_errno_t e = llhttp_finish(&hc->p);
  if ((e == HPE_OK || e == HPE_PAUSED) && hc->state == S_DONE)
    return ORRERY_HRESP_DONE;
  return to_error(hc, "connection closed in the response body", 0);
}
