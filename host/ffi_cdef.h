/* SPDX-License-Identifier: MIT */
/* ffi_cdef.h -- the FFI surface, in the C subset that ffi.cdef accepts.
 *
 * This file is the one source of truth for FFI declarations: the C side
 * includes it and the build embeds it so that lua/orrery/ffi.lua hands it to
 * ffi.cdef. These calls never call back into Lua and never raise; they
 * return status codes that the Lua side turns into values or errors. */
typedef struct orrery_chan orrery_chan;
typedef struct orrery_tmr orrery_tmr;

double orrery_ffi_now(void);
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
int orrery_ffi_wake(int32_t slot, int32_t code);
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

int orrery_ffi_http_next(orrery_http_head *h, int32_t code);
int orrery_ffi_http_respond(orrery_http_head *h, int32_t status,
                            const char *body, size_t len, const char *ctype,
                            int32_t flags);

/* JSON encoding helpers for the Lua encoder (host/json.c). */
size_t orrery_ffi_json_str_len(const char *s, size_t len);
size_t orrery_ffi_json_escape(char *out, const char *s, size_t len);
size_t orrery_ffi_json_number(char *out, double x);
