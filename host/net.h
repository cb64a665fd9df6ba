/* SPDX-License-Identifier: MIT */
/* net.h -- streams over transports: the connection API that orrery.net
 * (net_lua.c) and the HTTP server (http_server.c) share. */
#ifndef ORRERY_NET_H
#define ORRERY_NET_H

#include "host.h"
#include "tlist.h"

/* The net layer, one job per file:
 *   stream.c   connections: read buffers and their pool, reading, writing,
 *              shutdown, close and linger, read deadlines; the plain
 *              transport (TCP and unix sockets)
 *   listen.c   listeners and accept
 *   dns.c      name resolution, a thread-pool job (work.h)
 *   tls.c      the TLS transport (OpenSSL; tls.h)
 *   tls_cfg.c  TLS configurations (SSL_CTX) and client sessions
 *   net_lua.c  orrery.net.core, the Lua glue
 * Internals shared by these files are in net_int.h. */

typedef struct net_conn_s net_conn_t;
typedef struct net_listener_s net_listener_t;

typedef union {
  uv_handle_t h;
  uv_stream_t s;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} net_stream_u;

/* Write requests: one allocation holding the request and the bytes that
 * could not be written at once. Allocated by net_queue_write, freed in its
 * write callback. */
typedef struct net_wreq_s {
  uv_write_t req;
  net_conn_t *c;
  co_t *co;
  size_t len;
  char data[];
} net_wreq_t;

/* A transport: what lies between a connection's buffers and its socket.
 * The plain one (net_plain_ops, stream.c) reads into the connection's read
 * buffer and writes with write/writev directly. The TLS transport (tls.c,
 * OpenSSL over a BIO of its own) keeps its state in tp and fits the same
 * slots:
 *
 *   start     the socket is connected (accepted, or dialled): begin the
 *             handshake and start reading. Returns 0 when the stream is
 *             usable now, 1 when the transport calls net_ready later (the
 *             handshake is under way; a dialling coroutine stays parked
 *             and no plaintext reaches rbuf until then), or an error.
 *   alloc     where the next bytes from the socket go (libuv's alloc
 *             callback): ciphertext goes to the transport's own buffer.
 *   input     n > 0 bytes from the socket are in buf: append plaintext to
 *             rbuf (net_rbuf_reserve makes room), answer handshake records
 *             with net_queue_write. Returns 0 or an error, which ends
 *             reading like a socket error.
 *   resume    the consumer made room in rbuf (may be NULL): decrypt what
 *             the transport held back while rbuf was full.
 *   write     encrypt bufs and queue the records (net_queue_write);
 *             returns like net_write. Only called while the connection is
 *             open and no write error has happened.
 *   shutdown  end the write side after pending writes: a close_notify
 *             record, then uv_shutdown with cb. Returns 0 or an error.
 *   close     in the close callback of the connection's last handle:
 *             free tp. May be NULL.
 *
 * The read path costs one indirect call per read and the write path one
 * per write; no slot copies plaintext on the plain path. */
typedef struct net_ops_s {
  const char *name;
  int (*start)(net_conn_t *c);
  void (*alloc)(net_conn_t *c, uv_buf_t *buf);
  int (*input)(net_conn_t *c, size_t n, const uv_buf_t *buf);
  void (*resume)(net_conn_t *c);
  int (*write)(net_conn_t *c, const uv_buf_t *bufs, unsigned n, co_t *co,
               net_wreq_t **w);
  int (*shutdown)(net_conn_t *c, uv_shutdown_cb cb);
  void (*close)(net_conn_t *c);
} net_ops_t;

extern const net_ops_t net_plain_ops;

/* A connected stream (TCP or unix socket).
 *
 * Ownership: stream.c allocates a net_conn_t when a connection is accepted
 * or dialled and frees it only from the close callback of its last handle
 * (the stream, plus the linger timer once used), after the transport's
 * close and the owner's ud_free. The Lua userdata that fronts it holds a
 * pointer and is pinned in the registry (ref) until the Lua side closes
 * it; closing detaches the userdata, so later calls see "closed".
 *
 * Reading is always on while the connection is open: bytes land in rbuf
 * [0, rlen) and the consumer (a plain read, or the HTTP layer through
 * on_read) takes them from rstart. When rbuf reaches rmax the connection
 * stops reading until the consumer makes room (net_resume). An empty read
 * buffer goes back to a per-host pool (net_shrink), so that an idle
 * connection holds no buffer. While it has none, libuv reads into a
 * per-host scratch buffer and a real one is taken only when bytes arrive:
 * the end of input (the last read of every connection) costs no
 * allocation. */
struct net_conn_s {
  net_stream_u u;
  union { /* a shutdown is only possible once the connect has completed */
    uv_shutdown_t sreq;
    uv_connect_t creq;
  };
  const net_ops_t *ops;
  void *tp;           /* the transport's state (NULL for plain) */
  uv_timer_t *linger; /* allocated when the close lingers */
  host_t *host;
  net_conn_t *prev, *next; /* live connections, for the exit sweep */
  char *rbuf;
  size_t rstart, rlen, rcap, rmax;
  int rerr;    /* 0 while readable; UV_EOF or an error once the side ended */
  int werr;    /* first write error */
  co_t *rco;   /* coroutine parked for input */
  int nwrites; /* uv_write requests in flight */
  uint8_t is_pipe, paused, closing, dead, lingering, nhandles, shut, dialing;
  int ref; /* registry reference pinning the userdata, or LUA_NOREF */
  /* Read deadline (see net_deadline); dl.when keeps its value once it
   * has passed. */
  tl_entry_t dl;
  /* Hook run after bytes (or the end of input) arrive, instead of waking
   * rco directly; the HTTP server parses there. */
  void (*on_read)(net_conn_t *c);
  /* Hook run when the read deadline passes. */
  void (*on_deadline)(net_conn_t *c);
  void *ud; /* the owner's state (http_server.c) */
  void (*ud_free)(void *ud);
  int cerr; /* result of a connect */
};

net_conn_t *net_check(lua_State *L, int idx);
/* Writes bufs: returns 0 when everything went out at once, 1 when the rest
 * was queued (co, if given, is woken with 0 when it completes; *w is the
 * request so that an unpark callback can detach co), or a negative libuv
 * error. */
int net_write(net_conn_t *c, const uv_buf_t *bufs, unsigned n, co_t *co,
              net_wreq_t **w);
/* Queues bufs without trying the socket first, skipping their first skip
 * bytes; returns 1 or a negative error (for transports). */
int net_queue_write(net_conn_t *c, const uv_buf_t *bufs, unsigned n,
                    size_t skip, co_t *co, net_wreq_t **w);
/* Ends the connection. With linger_ms > 0 the write side is shut down
 * after pending writes and input is drained until EOF or the timeout, so
 * that a response is not lost to a reset caused by unread input. */
void net_close(net_conn_t *c, unsigned linger_ms);
/* Detaches and unpins the userdata at idx and closes its connection. */
void net_release(lua_State *L, int idx, unsigned linger_ms);
/* Starts reading again after the consumer made room in rbuf. */
void net_resume(net_conn_t *c);
/* Hands an empty read buffer back to the host's pool. */
void net_shrink(net_conn_t *c);
/* Drops the first n unread bytes of rbuf (the consumer took them): an
 * emptied buffer goes back to the pool, a half-consumed one is compacted,
 * and reading resumes if it was paused for room. */
void net_consume(net_conn_t *c, size_t n);
/* Makes room for at least want more bytes after rlen (within rmax);
 * returns the room there is, 0 without memory or at rmax (for
 * transports). */
size_t net_rbuf_reserve(net_conn_t *c, size_t want);
/* The stream became usable (status 0) or failed: wakes a dialler. */
void net_ready(net_conn_t *c, int status);
/* Sets the read deadline to ms milliseconds from now (0 clears it); when
 * it passes, on_deadline runs once, at most ms/16 late. The deadlines are
 * a deadline list set (tlist.h) of the host: setting one is at most an
 * unlink and an append, and one timer serves them all, so a connection
 * that is served many times within its timeout costs no timer operation
 * per request. */
void net_deadline(net_conn_t *c, uint32_t ms);
/* Whether the read deadline is set and has passed. */
int net_deadline_passed(net_conn_t *c);
/* Like net_park without touching the Lua stack (for FFI calls). */
void net_park_co(co_t *co, sched_undo_fn fn, void *data, const char *what,
                 double timeout);
/* Parks the current coroutine on I/O and returns ORRERY_PARKED, slot to
 * Lua (the parking protocol of C API primitives, ffi_cdef.h). */
int net_park(lua_State *L, sched_undo_fn fn, void *data, const char *what,
             double timeout);
void net_unpark_read(co_t *co, void *data);
void net_unpark_write(co_t *co, void *data);
const char *net_errstr(int uverr);
int net_peer(net_conn_t *c, char *ip, size_t n, int *port);

/* http_server.c */
int luaopen_orrery_http_core(lua_State *L);
/* net_lua.c */
int luaopen_orrery_net_core(lua_State *L);

#endif
