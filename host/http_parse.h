/* SPDX-License-Identifier: MIT */
/* http_parse.h -- strict HTTP/1.1 request parsing over llhttp, with limits.
 *
 * This is the parser core of the HTTP server, kept free of libuv and Lua so
 * that the fuzz target (host/fuzz_http.c) can drive it alone. The caller owns
 * a contiguous byte buffer; the parser records positions (offsets from the
 * buffer's start), never pointers, so the buffer may be reallocated between
 * calls. Bytes of a request head must stay where they are until the next
 * message starts (see hp_next_message). */
#ifndef ORRERY_HTTP_PARSE_H
#define ORRERY_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

typedef struct {
  uint32_t off, len;
} hp_span_t;

/* Header fields recorded without an allocation. */
#define HP_INLINE 8

/* Events returned by hp_feed. */
enum {
  HP_NEED = 0, /* every byte was consumed; feed more */
  HP_HEAD,     /* a request head is complete (fields below are valid) */
  HP_BODY,     /* a piece of decoded body is in hp->body */
  HP_DONE,     /* the message is complete */
  HP_ERROR     /* a protocol error: hp->status and hp->reason say which */
};

/* Parser states. */
enum {
  HP_S_IDLE = 0, /* no byte of the next message yet */
  HP_S_HEAD,     /* inside a request head */
  HP_S_BODY,     /* head delivered, body not complete */
  HP_S_DONE,     /* message complete */
  HP_S_UPGRADE,  /* no further message can follow on this connection */
  HP_S_ERROR
};

typedef struct {
  uint32_t max_header_bytes; /* request line plus header block (431) */
  uint32_t max_uri;          /* request-target length (414) */
  uint32_t max_headers;      /* number of header fields (431) */
} hp_limits_t;

/* Request flags. */
enum {
  HP_F_KEEP_ALIVE = 1,
  HP_F_CHUNKED = 2,
  HP_F_EXPECT_CONTINUE = 4,
  HP_F_UPGRADE = 8,
  HP_F_HAS_BODY = 16,
  HP_F_HAS_QUERY = 32
};

typedef struct hp_s {
  llhttp_t p;
  hp_limits_t lim;
  size_t pos; /* bytes before pos have been parsed */
  int state;
  int status;         /* HP_ERROR: the response status (400, 413, ...) */
  const char *reason; /* HP_ERROR: a short static description */
  /* The current request. */
  size_t head_start, head_end;
  hp_span_t method, url, path, query;
  hp_span_t *hname, *hval; /* inl_name, inl_val until more are needed */
  uint32_t nh, hcap;
  int64_t content_length; /* -1 when absent */
  uint32_t flags;
  uint8_t method_id, minor;
  uint8_t host_count, cl_count, te_count, in_value;
  uint8_t cur; /* which interesting field the current header is */
  uint8_t ev;  /* the event a callback paused for */
  uint32_t ntrailers;
  const char *base; /* the buffer, during hp_feed only */
  hp_span_t te;
  hp_span_t body; /* HP_BODY: the decoded piece */
  uint64_t body_bytes;
  uint8_t fast; /* parse common heads without llhttp (on by default) */
  hp_span_t inl_name[HP_INLINE], inl_val[HP_INLINE];
} hp_t;

void hp_init(hp_t *hp, const hp_limits_t *lim);
void hp_free(hp_t *hp);
/* Parses base[hp->pos, end) and stops at the first event. */
int hp_feed(hp_t *hp, const char *base, size_t end);
/* Starts the next message once the current one is HP_S_DONE: every
 * position is shifted down by `drop` (the caller moved its buffer). */
void hp_next_message(hp_t *hp, size_t drop);
/* Shifts positions after the head down by delta (the caller moved the
 * unparsed bytes that followed the head). */
void hp_shift_body(hp_t *hp, size_t delta);
const char *hp_method_name(const hp_t *hp);
/* Status line text for a status code ("Not Found"), or NULL. */
const char *hp_status_text(int status);

#endif
