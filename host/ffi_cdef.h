/* SPDX-License-Identifier: MIT */
/* ffi_cdef.h -- the FFI surface, in the C subset that ffi.cdef accepts.
 *
 * This file is the one source of truth for FFI declarations: the C side
 * includes it and the build embeds it so that lua/orrery/ffi.lua hands it to
 * ffi.cdef. These calls never call back into Lua and never raise; they
 * return status codes that the Lua side turns into values or errors. */
typedef struct orrery_chan orrery_chan;
typedef struct orrery_tmr orrery_tmr;

/* -- The parking protocol (docs/architecture.md) --
 *
 * Every blocking primitive, FFI or C API, answers with one status: done
 * (its results are in place), declined (it cannot complete now and was
 * told not to wait, or cannot wait outside a coroutine) or parked (the
 * calling coroutine is parked: it must yield, and the wake code it resumes
 * with says what happened). A primitive that completes in several ways
 * numbers its done variants from ORRERY_DONE_MORE up. C API primitives
 * return their results when done, and ORRERY_PARKED plus the coroutine's
 * slot when parked. */
enum {
  ORRERY_DONE = 0,
  ORRERY_DECLINED = 1,
  ORRERY_PARKED = 2,
  ORRERY_DONE_MORE = 3
};

/* Wake codes. Non-negative codes belong to the primitive that parked (a
 * channel's is ((case + 1) << 2) | ORRERY_CHAN_ST_*); negative codes end
 * the wait from outside. */
enum {
  ORRERY_WAKE_OK = 0,
  ORRERY_WAKE_TIMEOUT = -1,  /* the operation's own timeout */
  ORRERY_WAKE_CANCELED = -2, /* its context was cancelled */
  ORRERY_WAKE_DEADLINE = -3  /* its context's deadline passed */
};

/* Channel operations: the done variants say which value moves where. */
enum {
  ORRERY_CHAN_BUF = 3,     /* io[1]: buffer index to store to / take from */
  ORRERY_CHAN_PEER = 4,    /* io[1]: peer slot, io[2]: peer case (-1 single) */
  ORRERY_CHAN_BUFPEER = 5, /* take buf[io[1]], refill it from io[2]/io[3] */
  ORRERY_CHAN_CLOSED = 6,
  ORRERY_CHAN_ST_OK = 0, /* wake status of a channel case */
  ORRERY_CHAN_ST_CLOSED = 1
};

double orrery_ffi_now(void);
/* Wall-clock time (CLOCK_REALTIME) in seconds since the epoch, for
 * timestamps people read (log lines); deadlines use orrery_ffi_now. */
double orrery_ffi_wall_now(void);
int32_t orrery_ffi_co_slot(void);
uint64_t orrery_ffi_co_id(void);

orrery_chan *orrery_ffi_chan_new(int32_t cap, uint64_t *id);
void orrery_ffi_chan_free(orrery_chan *c);
int orrery_ffi_chan_send(orrery_chan *c, int32_t *io, int block,
                         double timeout);
int orrery_ffi_chan_recv(orrery_chan *c, int32_t *io, int block,
                         double timeout);
int orrery_ffi_chan_close(orrery_chan *c);
int32_t orrery_ffi_chan_len(const orrery_chan *c);
int32_t orrery_ffi_chan_cap(const orrery_chan *c);
int orrery_ffi_chan_closed(const orrery_chan *c);
int orrery_ffi_select(int32_t n, orrery_chan **chans, const int8_t *kinds,
                      int32_t *io, int block, double timeout);

int orrery_ffi_sleep(double secs);
uint32_t orrery_ffi_co_token(int32_t slot);
int orrery_ffi_wake(int32_t slot, uint32_t token, int32_t code);
int32_t orrery_ffi_wake_all(int32_t code);
void orrery_ffi_co_bind(int32_t slot, int rooted);
int32_t orrery_ffi_foreign_enter(void);
void orrery_ffi_foreign_leave(int32_t slot);

orrery_tmr *orrery_ffi_timer_new(int32_t id);
void orrery_ffi_timer_free(orrery_tmr *t);
void orrery_ffi_timer_start(orrery_tmr *t, double secs);
int orrery_ffi_timer_stop(orrery_tmr *t);

/* HTTP server connections (host/http_server.c, responses in
 * host/http_response.c). A request head is handed
 * to Lua as positions in the connection's read buffer, valid until its
 * response has been sent. */
typedef struct orrery_http_head {
  const char *buf;
  const char *reason; /* a protocol error: why it was answered */
  uint32_t path_off, path_len, query_off, query_len;
  int32_t seq;
  int32_t status; /* a protocol error: the status answered */
  uint8_t method; /* llhttp's method number */
  uint8_t minor;  /* HTTP/1.minor */
  uint8_t has_query;
} orrery_http_head;

/* orrery_ffi_http_next: done variants, and a wake code of the server's. */
enum {
  ORRERY_HTTP_HEAD = 3,        /* h describes the next request */
  ORRERY_HTTP_ERROR = 4,       /* a protocol error, already answered */
  ORRERY_HTTP_CLOSE = 5,       /* no more requests on this connection */
  ORRERY_HTTP_SHUTDOWN = 28672 /* wake code: the server is shutting down */
};

int orrery_ffi_http_next(orrery_http_head *h, int32_t code);
int orrery_ffi_http_respond(orrery_http_head *h, int32_t status,
                            const char *body, size_t len, const char *ctype,
                            int32_t flags);

/* HTTP client responses (host/http_client.c): llhttp in response mode,
 * fed the bytes a connection reads, one event per call. Field names and
 * values are copied into `fields` (spans: name offset, name length, value
 * offset, value length per field; header fields first, then trailers), so
 * that the data fed may be a different string each time; a body piece is
 * a span of the data last fed. */
typedef struct orrery_hresp {
  const char *fields;
  const uint32_t *spans;
  const char *reason;     /* ORRERY_HRESP_ERROR: why, a static string */
  uint64_t body_bytes;    /* decoded body bytes so far */
  int64_t content_length; /* of the body: 0 for none, -1 chunked or to close */
  uint32_t nfields;       /* header fields, then trailer fields */
  uint32_t nhead;         /* how many of them are header fields */
  uint32_t pos;           /* the first byte of the data last fed not parsed */
  uint32_t body_off, body_len; /* ORRERY_HRESP_BODY: a piece of that data */
  int32_t status;
  uint8_t minor;
  uint8_t keep_alive; /* the connection may carry another exchange */
  uint8_t chunked;
  uint8_t too_large; /* ORRERY_HRESP_ERROR: a limit, not a protocol error */
  uint8_t started;   /* a byte of the response arrived */
  uint32_t head_len; /* ORRERY_HRESP_HEAD: bytes of fields of the head */
  uint32_t ka_field; /* 1 + index of the head's last Keep-Alive field, or 0 */
} orrery_hresp;

/* orrery_ffi_hresp_feed and orrery_ffi_hresp_eof: events. */
enum {
  ORRERY_HRESP_NEED = 0,    /* every byte was parsed; feed more */
  ORRERY_HRESP_HEAD = 1,    /* the final response head is complete */
  ORRERY_HRESP_BODY = 2,    /* body_off, body_len: a piece of decoded body */
  ORRERY_HRESP_DONE = 3,    /* the response is complete, trailers included */
  ORRERY_HRESP_ERROR = 4,   /* reason says why; too_large for a limit */
  ORRERY_HRESP_CONTINUE = 5 /* an interim 100 Continue arrived */
};

orrery_hresp *orrery_ffi_hresp_new(uint32_t max_head, uint32_t max_fields);
void orrery_ffi_hresp_free(orrery_hresp *r);
/* Prepares for the response to the next request; no_body: it was HEAD. */
void orrery_ffi_hresp_start(orrery_hresp *r, int no_body);
/* Parses data[off, len) up to the first event; r->pos says how far. */
int orrery_ffi_hresp_feed(orrery_hresp *r, const char *data, uint32_t off,
                          uint32_t len);
/* The peer closed: DONE for a body delimited by the close, else ERROR
 * (NEED when no byte of a response had arrived). */
int orrery_ffi_hresp_eof(orrery_hresp *r);

/* The HTTP client's pool (host/http_client_lua.c); conn is an
 * orrery.net.conn userdata. 1 when the idle connection can carry a
 * request (the peer has not ended it, no byte is waiting), which then
 * keeps the loop alive again; else 0. */
int orrery_ffi_hconn_take(void *conn);
/* 1 when a read of conn would not park (bytes buffered, or it ended). */
int orrery_ffi_hconn_ready(void *conn);
/* The bytes buffered on conn, read in place: how many (0 once it is
 * closing), where (valid until the next consume or read), and consume,
 * which gives up the first n of them. */
uint32_t orrery_ffi_hconn_avail(void *conn);
const char *orrery_ffi_hconn_data(void *conn);
void orrery_ffi_hconn_consume(void *conn, uint32_t n);

/* JSON encoding helpers for the Lua encoder (host/json.c). */
size_t orrery_ffi_json_str_len(const char *s, size_t len);
size_t orrery_ffi_json_escape(char *out, const char *s, size_t len);
size_t orrery_ffi_json_number(char *out, double x);

/* The log writer (host/logw.c): a thread that writes the lines orrery.log
 * hands over, so that a slow output never blocks the loop. put copies the
 * bytes (urgent: an error line is among them, write it without delay)
 * and returns 0, or 1 when the queue is past max_bytes and the
 * lines were dropped (counted); switch makes the writer go on to fd once
 * the items before it are written (owned: it closes fd when done); sync
 * waits up to timeout seconds for what was handed over to be written (1,
 * or 0 on timeout); close drains up to timeout, then ends the thread and
 * frees the writer (0: the output is stalled, the thread is left to end
 * on its own). open returns a descriptor or a negative errno. */
typedef struct orrery_logw orrery_logw;
typedef struct orrery_logw_stats {
  uint64_t queued_bytes, max_bytes, dropped_lines, dropped_bytes;
  uint64_t write_errors, written_bytes, written_lines, batches;
  int32_t last_errno;
} orrery_logw_stats;
orrery_logw *orrery_ffi_logw_new(int32_t fd, int32_t owned, double max_bytes);
int orrery_ffi_logw_put(orrery_logw *w, const char *p, size_t len,
                        int32_t lines, int32_t urgent);
int orrery_ffi_logw_switch(orrery_logw *w, int32_t fd, int32_t owned);
void orrery_ffi_logw_set_max(orrery_logw *w, double max_bytes);
int orrery_ffi_logw_sync(orrery_logw *w, double timeout);
void orrery_ffi_logw_stats(orrery_logw *w, orrery_logw_stats *s);
int orrery_ffi_logw_close(orrery_logw *w, double timeout);
int32_t orrery_ffi_logw_open(const char *path);
void orrery_ffi_logw_close_fd(int32_t fd);
const char *orrery_ffi_strerror(int32_t err);
