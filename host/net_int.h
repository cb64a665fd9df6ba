/* SPDX-License-Identifier: MIT */
/* net_int.h -- internals shared by the net layer's files (see net.h);
 * nothing outside stream.c, listen.c, dns.c, tls*.c and net_lua.c includes
 * it. */
#ifndef ORRERY_NET_INT_H
#define ORRERY_NET_INT_H

#include "net.h"
#include "tls.h"
#include "work.h"

/* Read buffers start at this size; empty ones of this size are pooled. */
#define RBUF_SIZE 8192
#define RBUF_POOL_MAX 64

/* Per-host registry of live sockets, swept when the Lua state closes so
 * that every handle is closed with a callback that frees it. It also holds
 * the pool of idle read buffers, the scratch buffer that libuv reads into
 * for a connection without a buffer (reads are synchronous from alloc to
 * read callback, so one is enough), the read deadlines, the descriptor
 * kept in reserve for shedding connections at the descriptor limit, and
 * counters for tests (net.core.stats). Allocated by the first connection
 * or listener, freed by the sweep (net_sweep), which happens after the
 * last Lua call. */
typedef struct net_state_s {
  net_conn_t *conns;
  net_listener_t *lis;
  char *pool; /* free read buffers, linked through their first bytes */
  uint32_t npool;
  tlist_t deadlines;
  int reserve_fd; /* -1 when none could be opened */
  /* Rate limit of the "too many open files" report (listen.c). */
  double emfile_logged;
  uint32_t emfile_quiet; /* failures not reported since */
  uint64_t nconns;       /* live connections */
  uint64_t rbuf_allocs;  /* read buffers allocated or grown, ever */
  uint64_t emfile;       /* accepts failed at the descriptor limit, ever */
  uint64_t shed;         /* connections closed at once for lack of fds */
  char scratch[RBUF_SIZE];
} net_state_t;

/* A listening socket. Accepting is ours, not libuv's, so that running out
 * of descriptors can be reported (listen.c): a uv_poll_t watches the
 * socket that u owns.
 *
 * Ownership: allocated by net_listen_tcp/unix, freed in the close callback
 * of the last of its two handles; the userdata is pinned until it is
 * closed, like a connection's. An accepted descriptor not yet handed to a
 * connection (pending) is closed with the listener. */
struct net_listener_s {
  net_stream_u u;
  uv_poll_t poll;
  tmr_t pause; /* TMR_C: polling resumes after a failure it cannot shed */
  host_t *host;
  net_listener_t *prev, *next;
  co_t *waiter;
  int pending; /* an accepted descriptor, or -1 */
  int err;
  uint8_t is_pipe, closing, polling, nhandles;
  int ref;
  char *path;     /* unix socket path, unlinked on close */
  tls_cfg_t *tls; /* a reference, or NULL: accepted connections are TLS */
};

/* stream.c */
net_state_t *net_state_of(host_t *h);
net_conn_t *net_conn_new(host_t *h, int is_pipe);
void net_close_now(net_conn_t *c);
/* Starts a connect (the connection is dialing until net_ready). */
int net_dial_tcp(host_t *h, const struct sockaddr *sa, net_conn_t **out);
int net_dial_unix(host_t *h, const char *path, net_conn_t **out);
/* The socket is connected: starts the transport; 0 or an error. */
int net_start(net_conn_t *c);
/* Starts reading the socket (for transports). */
void net_read_start(net_conn_t *c);
/* After a transport's input (r: 0 or the error that ends reading):
 * pauses reading at rmax, records the error, and hands the bytes to the
 * consumer (on_read, or a parked reader). A transport that produces
 * plaintext outside a socket read (after net_resume) calls it too. */
void net_input_done(net_conn_t *c, int r);
void net_sweep(host_t *h);
static inline void net_wake(host_t *h, co_t *co, int32_t code) {
  /* Once the main coroutine has ended nothing runs again: leave parked
   * coroutines alone while handles are torn down. */
  if (co && !h->exiting) sched_wake(h, co, code);
}

/* listen.c */
int net_listen_tcp(host_t *h, const struct sockaddr *sa, int backlog,
                   net_listener_t **out);
int net_listen_unix(host_t *h, const char *path, int backlog,
                    net_listener_t **out);
/* Takes an accepted connection: 0 and *out, UV_EAGAIN when none is
 * waiting (park with l->waiter set), or the error that accepting hit. */
int net_accept(net_listener_t *l, net_conn_t **out);
void net_lis_close(net_listener_t *l);
/* Connections accepted from now on use cfg (NULL: plain); the listener
 * takes a reference and drops the one it held. */
void net_lis_set_tls(net_listener_t *l, tls_cfg_t *cfg);

/* dns.c: a resolution job; the owner releases it with work_release. */
typedef struct {
  work_t w;
  struct addrinfo *res;
  int status; /* 0 or a libuv error, once ended */
  char name[];
} net_dns_t;
int net_dns_start(host_t *h, const char *name, net_dns_t **out);

#endif
