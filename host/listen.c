/* SPDX-License-Identifier: MIT */
/* listen.c -- listeners: bind, listen, accept, and shedding connections at
 * the descriptor limit. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#include "net_int.h"

/* libuv accepts by itself once a stream listens, and at the descriptor
 * limit it quietly closes what it cannot accept. We accept here instead
 * (a uv_poll_t on the listening socket, one descriptor held until Lua
 * takes it, as libuv does) so that the server does the same shedding and
 * says so, like nginx: "accept4() failed (24: Too many open files)". */

static void on_poll(uv_poll_t *p, int status, int events);

static void start_polling(net_listener_t *l) {
  if (l->polling || l->closing || l->nhandles < 2) return;
  if (uv_poll_start(&l->poll, UV_READABLE, on_poll) == 0) l->polling = 1;
}

static void stop_polling(net_listener_t *l) {
  if (!l->polling) return;
  uv_poll_stop(&l->poll);
  l->polling = 0;
}

static void wake_waiter(net_listener_t *l) {
  co_t *co = l->waiter;
  l->waiter = NULL;
  net_wake(l->host, co, 0);
}

/* At most one report a second; the next one counts those left out. */
static void report_emfile(net_state_t *st, int err, uint32_t closed) {
  double now = sched_now();
  if (st->emfile_logged > 0 && now - st->emfile_logged < 1.0) {
    st->emfile_quiet++;
    return;
  }
  char msg[256];
  int n = snprintf(msg, sizeof(msg), "orrery: accept4() failed (%d: %s)", err,
                   strerror(err));
  if (closed && n < (int)sizeof(msg))
    n += snprintf(msg + n, sizeof(msg) - n, ", closed %u connection%s", closed,
                  closed == 1 ? "" : "s");
  if (st->emfile_quiet && n < (int)sizeof(msg))
    snprintf(msg + n, sizeof(msg) - n, " (%u more failures since %.1f s)",
             st->emfile_quiet, now - st->emfile_logged);
  fprintf(stderr, "%s\n", msg);
  st->emfile_logged = now;
  st->emfile_quiet = 0;
}

/* Out of descriptors: give back the one kept in reserve, accept and close
 * everything waiting (the clients see the connection closed instead of
 * hanging in the backlog), and take the reserve again. Without a reserve
 * nothing can be shed, so polling pauses for 100 ms instead of spinning
 * on a socket that stays readable. */
static void shed(net_listener_t *l, int lfd, int err) {
  net_state_t *st = l->host->net;
  uint32_t closed = 0;
  int again = err;
  if (st->reserve_fd >= 0) {
    close(st->reserve_fd);
    for (;;) {
      int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (fd >= 0) {
        close(fd);
        closed++;
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;
      again = errno;
      break;
    }
    st->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  st->emfile++;
  st->shed += closed;
  report_emfile(st, err, closed);
  if (again == EMFILE || again == ENFILE) {
    stop_polling(l);
    timer_start(l->host, &l->pause, sched_now() + 0.1);
  }
}

static void on_pause(tmr_t *t) {
  net_listener_t *l =
      (net_listener_t *)((char *)t - offsetof(net_listener_t, pause));
  if (l->pending < 0 && !l->err) start_polling(l);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  net_listener_t *l = p->data;
  uv_os_fd_t lfd;
  (void)events;
  if (status < 0 || uv_fileno(&l->u.h, &lfd)) {
    l->err = status < 0 ? status : UV_EBADF;
    stop_polling(l);
    wake_waiter(l);
    return;
  }
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      l->pending = fd;
      stop_polling(l); /* until Lua takes it: the backlog queues the rest */
      wake_waiter(l);
      return;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    if (errno == EMFILE || errno == ENFILE) {
      shed(l, lfd, errno);
      return;
    }
    l->err = -errno;
    stop_polling(l);
    wake_waiter(l);
    return;
  }
}

static void on_lis_close(uv_handle_t *hd) {
  net_listener_t *l = hd->data;
  if (--l->nhandles) return;
  tls_cfg_unref(l->tls);
  free(l->path);
  free(l);
}

void net_lis_close(net_listener_t *l) {
  if (l->closing) return;
  l->closing = 1;
  net_state_t *st = l->host->net;
  if (l->prev)
    l->prev->next = l->next;
  else if (st && st->lis == l)
    st->lis = l->next;
  if (l->next) l->next->prev = l->prev;
  timer_stop(l->host, &l->pause);
  if (l->pending >= 0) close(l->pending);
  l->pending = -1;
  wake_waiter(l);
  if (l->path) unlink(l->path);
  /* The poll handle goes first: closing the stream closes the socket. */
  if (l->nhandles == 2) uv_close((uv_handle_t *)&l->poll, on_lis_close);
  uv_close(&l->u.h, on_lis_close);
}

static net_listener_t *lis_new(host_t *h, int is_pipe) {
  net_state_t *st = net_state_of(h);
  if (!st) return NULL;
  if (st->reserve_fd < 0)
    st->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  net_listener_t *l = calloc(1, sizeof(*l));
  if (!l) return NULL;
  if (is_pipe)
    uv_pipe_init(h->loop, &l->u.pipe, 0);
  else
    uv_tcp_init(h->loop, &l->u.tcp);
  l->u.h.data = l;
  l->poll.data = l;
  l->nhandles = 1;
  l->host = h;
  l->is_pipe = (uint8_t)is_pipe;
  l->pending = -1;
  l->ref = LUA_NOREF;
  l->pause.kind = TMR_C;
  l->pause.fn = on_pause;
  l->next = st->lis;
  if (st->lis) st->lis->prev = l;
  st->lis = l;
  return l;
}

/* Listens on fd, a bound socket, and hands it to the listener's stream
 * (which owns it from then on) and to its poll handle. On failure fd is
 * closed. */
static int lis_start(net_listener_t *l, int fd, int backlog) {
  int r = listen(fd, backlog) ? -errno : 0;
  if (!r)
    r = l->is_pipe ? uv_pipe_open(&l->u.pipe, fd) : uv_tcp_open(&l->u.tcp, fd);
  if (r) {
    close(fd);
    return r;
  }
  r = uv_poll_init_socket(l->host->loop, &l->poll, fd);
  if (r) return r;
  l->nhandles = 2;
  start_polling(l);
  return 0;
}

int net_listen_tcp(host_t *h, const struct sockaddr *sa, int backlog,
                   net_listener_t **out) {
  net_listener_t *l = lis_new(h, 0);
  if (!l) return UV_ENOMEM;
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int r = fd < 0 ? -errno : 0;
  if (!r) {
    int on = 1, off = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    /* "::" listens on IPv4 too, as with libuv's uv_tcp_bind. */
    if (sa->sa_family == AF_INET6)
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    if (bind(fd, sa, len)) {
      r = -errno;
      close(fd);
    } else {
      r = lis_start(l, fd, backlog);
    }
  }
  if (r) {
    net_lis_close(l);
    return r;
  }
  *out = l;
  return 0;
}

int net_listen_unix(host_t *h, const char *path, int backlog,
                    net_listener_t **out) {
  struct sockaddr_un sun;
  if (strlen(path) >= sizeof(sun.sun_path)) return UV_ENAMETOOLONG;
  net_listener_t *l = lis_new(h, 1);
  if (!l) return UV_ENOMEM;
  memset(&sun, 0, sizeof(sun));
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, strlen(path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int r = fd < 0 ? -errno : 0;
  if (!r) {
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun))) {
      r = -errno;
      close(fd);
    } else {
      l->path = strdup(path); /* ours now: unlinked on close */
      r = lis_start(l, fd, backlog);
    }
  }
  if (r) {
    net_lis_close(l);
    return r;
  }
  *out = l;
  return 0;
}

void net_lis_set_tls(net_listener_t *l, tls_cfg_t *cfg) {
  if (cfg) tls_cfg_ref(cfg);
  tls_cfg_unref(l->tls);
  l->tls = cfg;
}

/* A TLS listener's connections start their handshake here; net_start
 * answers 1 for them (the handshake goes on while the owner reads). */
int net_accept(net_listener_t *l, net_conn_t **out) {
  if (l->pending >= 0) {
    int fd = l->pending;
    l->pending = -1;
    start_polling(l);
    net_conn_t *c = net_conn_new(l->host, l->is_pipe);
    if (!c) {
      close(fd);
      return UV_ENOMEM;
    }
    int r =
        l->is_pipe ? uv_pipe_open(&c->u.pipe, fd) : uv_tcp_open(&c->u.tcp, fd);
    if (r) {
      close(fd);
      net_close_now(c);
      return r;
    }
    if (!c->is_pipe) uv_tcp_nodelay(&c->u.tcp, 1);
    r = l->tls ? tls_attach(c, l->tls, NULL, NULL) : 0;
    if (!r) r = net_start(c);
    if (r < 0) {
      net_close_now(c);
      return r;
    }
    *out = c;
    return 0;
  }
  if (l->err) {
    int e = l->err;
    l->err = 0;
    start_polling(l);
    return e;
  }
  return UV_EAGAIN;
}
