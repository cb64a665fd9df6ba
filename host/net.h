/* SPDX-License-Identifier: MIT */
/* net.h -- stream sockets shared by tcp.c (orrery.net) and http_server.c. */
#ifndef ORRERY_NET_H
#define ORRERY_NET_H

#include "host.h"

typedef struct net_conn_s net_conn_t;
typedef struct net_listener_s net_listener_t;

typedef union {
  uv_handle_t h;
  uv_stream_t s;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} net_stream_u;

/* A connected stream (TCP or unix socket).
 *
 * Ownership: tcp.c allocates a net_conn_t when a connection is accepted or
 * dialled and frees it only from the close callback of its last handle (the
 * stream, plus the linger timer once used). The Lua userdata that fronts it
 * holds a pointer and is pinned in the registry (ref) until the Lua side
 * closes it; closing detaches the userdata, so later calls see "closed".
 *
 * Reading is always on while the connection is open: bytes land in rbuf
 * [0, rlen) and the consumer (a plain read, or the HTTP layer through
 * on_read) takes them from rstart. When rbuf reaches rmax the connection
 * stops reading until the consumer makes room (net_resume). An empty read
 * buffer goes back to a per-host pool (net_shrink), so that an idle
 * connection holds no buffer; libuv asks for one only when bytes are
 * there to be read. */
struct net_conn_s {
  net_stream_u u;
  union { /* a shutdown is only possible once the connect has completed */
    uv_shutdown_t sreq;
    uv_connect_t creq;
  };
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
  /* Read deadline (see net_deadline): loop time in milliseconds, 0 when
   * unset; it keeps its value once it has passed. */
  uint64_t dl;
  uint64_t dpos;             /* the deadline that placed it in its list */
  net_conn_t *dprev, *dnext; /* in the deadline list of its duration */
  uint32_t dlist;            /* 1 + index of that list, 0 when in none */
  /* Hook run after bytes (or the end of input) arrive, instead of waking
   * rco directly; the HTTP server parses there. */
  void (*on_read)(net_conn_t *c);
  /* Hook run when the read deadline passes. */
  void (*on_deadline)(net_conn_t *c);
  void *ud; /* the owner's state (http_server.c) */
  void (*ud_free)(void *ud);
  int cerr; /* result of a connect */
};

/* Write requests: one allocation holding the request and the bytes that
 * could not be written at once. */
typedef struct net_wreq_s {
  uv_write_t req;
  net_conn_t *c;
  co_t *co;
  size_t len;
  char data[];
} net_wreq_t;

net_conn_t *net_check(lua_State *L, int idx);
/* Writes bufs: returns 0 when everything went out at once, 1 when the rest
 * was queued (co, if given, is woken with 0 when it completes; *w is the
 * request so that an unpark callback can detach co), or a negative libuv
 * error. */
int net_write(net_conn_t *c, const uv_buf_t *bufs, unsigned n, co_t *co,
              net_wreq_t **w);
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
/* Sets the read deadline to ms milliseconds from now (0 clears it); when
 * it passes, on_deadline runs once, at most ms/16 late. Connections are
 * kept in one list per duration, each ordered by deadline, so that setting
 * a deadline is at most an unlink and an append, and one libuv timer per
 * host serves them all: a connection that is served many times within its
 * timeout costs no timer operation per request. */
void net_deadline(net_conn_t *c, uint32_t ms);
/* The loop's time in milliseconds, the clock of net_deadline. */
uint64_t net_now_ms(net_conn_t *c);
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
/* tcp.c */
int luaopen_orrery_net_core(lua_State *L);

#endif
