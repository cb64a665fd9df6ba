/* SPDX-License-Identifier: MIT */
/* tls.c -- the TLS transport: OpenSSL under a connection's buffers
 * (configurations and client sessions are in tls_cfg.c). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "errors.h"
#include "net_int.h"

/* A connection's TLS state (c->tp), freed by tls_close in the close
 * callback of the connection's last handle.
 *
 * OpenSSL reads and writes through one BIO of our own (tls_bio) instead
 * of memory BIOs: its reads are served straight from the bytes libuv just
 * read (in, the host's scratch buffer), and its records are appended to
 * out, which goes to the socket with one write. A memory BIO would add a
 * copy of every ciphertext byte coming in, and clearing one for reuse
 * (BIO_reset) zeroes its whole buffer. Plaintext is decrypted straight
 * into the connection's read buffer; ciphertext that arrived while that
 * buffer is full is kept in hold until the consumer makes room. */
typedef struct {
  SSL *ssl;
  tls_cfg_t *cfg;
  net_conn_t *c;
  const char *in; /* ciphertext to hand to OpenSSL: [inoff, inlen) */
  size_t inoff, inlen;
  char *hold; /* owned copy of what in held when reading paused */
  char *out;  /* records produced, not yet written */
  size_t olen, ocap;
  char *pend; /* plaintext written before the handshake ended */
  size_t plen, pcap;
  tmr_t kick; /* TMR_C: decrypts held-back input after net_resume */
  char *skey; /* a client's session key ("name:port"), or NULL */
  uint8_t started, done, oom;
  uint8_t asked; /* a client: the server asked for a certificate */
  char reason[120];
} tls_t;

static const net_ops_t tls_ops;

/* What a client says when a server's alert is about its certificate
 * (OpenSSL's reason follows in parentheses). */
#define TLS_MSG_CERT_REQUIRED "client certificate required"
#define TLS_MSG_CERT_REJECTED "client certificate rejected"

/* -- The BIO -- */

static int bio_write(BIO *b, const char *p, int n) {
  tls_t *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (n <= 0) return 0;
  if (t->ocap - t->olen < (size_t)n) {
    size_t cap = t->ocap ? t->ocap : 4096;
    while (cap - t->olen < (size_t)n) cap *= 2;
    char *o = realloc(t->out, cap);
    if (!o) {
      t->oom = 1;
      return -1;
    }
    t->out = o;
    t->ocap = cap;
  }
  memcpy(t->out + t->olen, p, (size_t)n);
  t->olen += (size_t)n;
  return n;
}

static int bio_read(BIO *b, char *p, int n) {
  tls_t *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  size_t avail = t->inlen - t->inoff;
  if (avail == 0) {
    BIO_set_retry_read(b); /* more comes with the next read */
    return -1;
  }
  if ((size_t)n > avail) n = (int)avail;
  memcpy(p, t->in + t->inoff, (size_t)n);
  t->inoff += (size_t)n;
  return n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b;
  (void)num;
  (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

/* The BIO's method table: made once per process and never changed or
 * freed afterwards (like net_plain_ops, it is constant data once made). */
static BIO_METHOD *bio_method;
static uv_once_t bio_once = UV_ONCE_INIT;

static void bio_method_init(void) {
  BIO_METHOD *m =
      BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "orrery");
  if (!m) return;
  BIO_meth_set_write(m, bio_write);
  BIO_meth_set_read(m, bio_read);
  BIO_meth_set_ctrl(m, bio_ctrl);
  BIO_meth_set_create(m, bio_create);
  bio_method = m;
}

/* -- Errors -- */

/* OpenSSL's error queue must be empty before an SSL call whose failure
 * SSL_get_error explains. ERR_clear_error empties it at a price: in
 * OpenSSL 3.0 it resets each of the queue's 16 slots, freeing two
 * strings in each, about 840 instructions (callgrind) even when the queue
 * is empty; called before every SSL_read_ex and SSL_write_ex that was
 * 11% of the instructions of a kept-alive HTTPS request on the server.
 * ERR_peek_error is a look at the queue's ends. */
static inline void err_reset(void) {
  if (ERR_peek_error()) ERR_clear_error();
}

/* An alert from a server that asked this client for a certificate says
 * what went wrong with it: there was none (TLS 1.3 says "certificate
 * required", TLS 1.2 only "handshake failure"), or the server did not
 * accept it. A TLS 1.3 server says so after the client's handshake is
 * done, so the client reads it as the answer to its first request. */
static int client_cert_alert(const tls_t *t, unsigned long e, char *out,
                             size_t len) {
  if (!t->asked || ERR_GET_LIB(e) != ERR_LIB_SSL) return 0;
  int r = ERR_GET_REASON(e);
  if (r < SSL_AD_REASON_OFFSET) return 0; /* not an alert */
  const char *what = NULL;
  if (!SSL_get_certificate(t->ssl)) {
    if (r == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED ||
        r == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE)
      what = TLS_MSG_CERT_REQUIRED;
  } else {
    switch (r) {
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
      what = TLS_MSG_CERT_REJECTED;
    }
  }
  if (!what) return 0;
  snprintf(out, len, "%s (%s)", what, ERR_reason_error_string(e));
  return 1;
}

/* Keeps the first reason a connection failed: the verification result
 * when the peer's certificate was rejected, what a server's alert says
 * about this client's certificate, else OpenSSL's reason. */
static void set_reason(tls_t *t) {
  if (!t->reason[0]) {
    long vr = SSL_get_verify_result(t->ssl);
    unsigned long e = ERR_peek_last_error();
    const char *r = NULL;
    if (t->cfg->verify && vr != X509_V_OK)
      r = X509_verify_cert_error_string(vr);
    else if (!t->cfg->server && e &&
             client_cert_alert(t, e, t->reason, sizeof(t->reason)))
      r = t->reason;
    else if (e)
      r = ERR_reason_error_string(e);
    if (t->oom) r = "out of memory";
    if (r != t->reason)
      snprintf(t->reason, sizeof(t->reason), "%s", r ? r : "handshake failed");
  }
  ERR_clear_error();
}

const char *tls_reason(const net_conn_t *c, int err) {
  if (!tls_is(c)) return NULL;
  const tls_t *t = c->tp;
  if (t->reason[0]) return t->reason;
  if (!t->done) {
    if (err == UV_EOF) return TLS_MSG_HANDSHAKE_EOF;
    if (err == UV_ECONNRESET) return TLS_MSG_HANDSHAKE_RESET;
  }
  return err_net(err);
}

/* -- Moving records -- */

/* Sends the records OpenSSL produced, through the plain transport's
 * write: straight to the socket when nothing is queued, the rest copied
 * into a write request. */
static int flush(net_conn_t *c, tls_t *t, co_t *co, net_wreq_t **w) {
  if (!t->olen) return 0;
  uv_buf_t b = uv_buf_init(t->out, (unsigned)t->olen);
  t->olen = 0;
  int r = net_plain_ops.write(c, &b, 1, co, w);
  if (t->ocap > 65536) { /* do not keep a large burst's buffer */
    free(t->out);
    t->out = NULL;
    t->ocap = 0;
  }
  return r;
}

static int encrypt(net_conn_t *c, tls_t *t, const char *p, size_t n) {
  size_t done;
  err_reset();
  if (n && !SSL_write_ex(t->ssl, p, n, &done)) {
    set_reason(t);
    c->werr = NET_ETLS;
    return NET_ETLS;
  }
  return 0;
}

/* Runs the handshake on what has arrived. 0 while it goes on or once it
 * is done, NET_ETLS when it failed (after sending OpenSSL's alert). */
static int handshake(net_conn_t *c, tls_t *t) {
  err_reset();
  int r = SSL_do_handshake(t->ssl);
  int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
  if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ) set_reason(t);
  int fr = flush(c, t, NULL, NULL);
  if (e == SSL_ERROR_WANT_READ) return fr < 0 ? fr : 0;
  if (e != SSL_ERROR_NONE) return NET_ETLS;
  t->done = 1;
  if (t->plen) { /* what the owner wrote meanwhile */
    int wr = encrypt(c, t, t->pend, t->plen);
    free(t->pend);
    t->pend = NULL;
    t->plen = t->pcap = 0;
    if (wr) return wr;
  }
  fr = flush(c, t, NULL, NULL);
  if (fr < 0) return fr;
  if (c->dialing) net_ready(c, 0);
  return 0;
}

/* Decrypts into rbuf until the input is used up or rbuf is full (at
 * rmax); 0, UV_EOF after the peer's close_notify, or an error. */
static int decrypt(net_conn_t *c, tls_t *t) {
  int rc = 0;
  err_reset(); /* once: a read that succeeds leaves the queue as it was */
  for (;;) {
    size_t room = net_rbuf_reserve(c, 2048);
    if (room == 0) {
      if (c->rcap < c->rmax) rc = UV_ENOMEM;
      break;
    }
    size_t got;
    if (SSL_read_ex(t->ssl, c->rbuf + c->rlen, room, &got)) {
      c->rlen += got;
      continue;
    }
    int e = SSL_get_error(t->ssl, 0);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      rc = UV_EOF;
    } else {
      set_reason(t);
      rc = NET_ETLS;
    }
    break;
  }
  /* Answers to post-handshake messages (a TLS 1.3 key update). */
  if (t->olen) flush(c, t, NULL, NULL);
  return rc;
}

/* Runs OpenSSL on the pending input; keeps a copy of what it did not use
 * (reading pauses at rmax, and in points into the scratch buffer). */
static int run(net_conn_t *c, tls_t *t) {
  int r = 0;
  if (!t->done) r = handshake(c, t);
  if (!r && t->done) r = decrypt(c, t);
  size_t left = t->inlen - t->inoff;
  if (!r && left && t->in != t->hold) {
    char *h = malloc(left);
    if (!h) return UV_ENOMEM;
    memcpy(h, t->in + t->inoff, left);
    t->hold = h;
    t->in = h;
    t->inoff = 0;
    t->inlen = left;
  } else if (!left) {
    free(t->hold);
    t->hold = NULL;
    t->in = NULL;
    t->inoff = t->inlen = 0;
  }
  return r;
}

/* -- The transport -- */

static int tls_start(net_conn_t *c) {
  tls_t *t = c->tp;
  t->started = 1;
  net_read_start(c);
  if (!t->cfg->server) { /* the ClientHello */
    int r = handshake(c, t);
    if (r) return r;
  }
  return 1;
}

/* Ciphertext goes to the host's scratch buffer: reads are synchronous
 * from the alloc callback to the read callback, and OpenSSL reads from
 * there directly, so an idle TLS connection holds no input buffer. */
static void tls_alloc(net_conn_t *c, uv_buf_t *buf) {
  net_state_t *st = c->host->net;
  buf->base = st->scratch;
  buf->len = sizeof(st->scratch);
}

static int tls_input(net_conn_t *c, size_t n, const uv_buf_t *buf) {
  tls_t *t = c->tp;
  if (t->hold) { /* reading was paused with input held: keep the order */
    char *h = realloc(t->hold, t->inlen - t->inoff + n);
    if (!h) return UV_ENOMEM;
    memmove(h, h + t->inoff, t->inlen - t->inoff);
    t->inlen -= t->inoff;
    t->inoff = 0;
    memcpy(h + t->inlen, buf->base, n);
    t->inlen += n;
    t->hold = h;
    t->in = h;
  } else {
    t->in = buf->base;
    t->inoff = 0;
    t->inlen = n;
  }
  return run(c, t);
}

static void on_kick(tmr_t *k) {
  tls_t *t = (tls_t *)((char *)k - offsetof(tls_t, kick));
  net_conn_t *c = t->c;
  if (c->closing || c->rerr || c->paused) return;
  size_t before = c->rlen;
  int r = run(c, t);
  if (r || c->rlen != before) net_input_done(c, r);
}

/* The consumer made room: what OpenSSL holds (a record partly copied
 * out) or hold still has is decrypted on the next turn of the loop, not
 * here, since the consumer is in the middle of its own bookkeeping. */
static void tls_resume(net_conn_t *c) {
  tls_t *t = c->tp;
  if (t->done && (t->hold || SSL_has_pending(t->ssl)))
    timer_start(c->host, &t->kick, sched_now());
}

static int tls_write(net_conn_t *c, const uv_buf_t *bufs, unsigned n, co_t *co,
                     net_wreq_t **w) {
  tls_t *t = c->tp;
  if (!t->done) {
    /* Before the handshake ends (a server that writes first): kept and
     * encrypted when it does. */
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) total += bufs[i].len;
    if (t->pcap - t->plen < total) {
      size_t cap = t->plen + total;
      char *p = realloc(t->pend, cap);
      if (!p) return UV_ENOMEM;
      t->pend = p;
      t->pcap = cap;
    }
    for (unsigned i = 0; i < n; i++) {
      memcpy(t->pend + t->plen, bufs[i].base, bufs[i].len);
      t->plen += bufs[i].len;
    }
    return 0;
  }
  for (unsigned i = 0; i < n; i++) {
    int r = encrypt(c, t, bufs[i].base, bufs[i].len);
    if (r) return r;
  }
  return flush(c, t, co, w);
}

static int tls_shutdown(net_conn_t *c, uv_shutdown_cb cb) {
  tls_t *t = c->tp;
  if (t->done && !c->werr) { /* close_notify, best effort */
    err_reset();
    SSL_shutdown(t->ssl);
    err_reset();
    flush(c, t, NULL, NULL);
  }
  return uv_shutdown(&c->sreq, &c->u.s, cb);
}

static void tls_close(net_conn_t *c) {
  tls_t *t = c->tp;
  if (!t) return;
  if (t->kick.hidx && c->host->heap) timer_stop(c->host, &t->kick);
  SSL_free(t->ssl);
  tls_cfg_unref(t->cfg);
  free(t->skey);
  free(t->hold);
  free(t->out);
  free(t->pend);
  free(t);
  c->tp = NULL;
}

static const net_ops_t tls_ops = {
    .name = "tls",
    .start = tls_start,
    .alloc = tls_alloc,
    .input = tls_input,
    .resume = tls_resume,
    .write = tls_write,
    .shutdown = tls_shutdown,
    .close = tls_close,
};

int tls_is(const net_conn_t *c) {
  return c && c->ops == &tls_ops && c->tp;
}

int tls_done(const net_conn_t *c) {
  return tls_is(c) && ((const tls_t *)c->tp)->done;
}

int tls_handshaking(const net_conn_t *c) {
  const tls_t *t = tls_is(c) ? c->tp : NULL;
  return t && t->started && !t->done;
}

/* A client's certificate callback, called when the server asks for a
 * certificate (before the client sends its own, if it has one). */
static int on_cert_request(SSL *ssl, void *arg) {
  (void)ssl;
  ((tls_t *)arg)->asked = 1;
  return 1;
}

static int is_ip(const char *s) {
  unsigned char b[16];
  return uv_inet_pton(AF_INET, s, b) == 0 || uv_inet_pton(AF_INET6, s, b) == 0;
}

int tls_attach(net_conn_t *c, tls_cfg_t *cfg, const char *server_name,
               const char *session_key) {
  uv_once(&bio_once, bio_method_init);
  if (!bio_method) return UV_ENOMEM;
  tls_t *t = calloc(1, sizeof(*t));
  if (!t) return UV_ENOMEM;
  t->ssl = SSL_new(cfg->ctx);
  BIO *b = t->ssl ? BIO_new(bio_method) : NULL;
  if (!b) {
    SSL_free(t->ssl);
    free(t);
    return UV_ENOMEM;
  }
  BIO_set_data(b, t);
  SSL_set_bio(t->ssl, b, b); /* one BIO both ways: one reference */
  int ok = 1;
  if (cfg->server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    SSL_set_cert_cb(t->ssl, on_cert_request, t);
    if (server_name && *server_name) {
      if (is_ip(server_name)) { /* no SNI for addresses (RFC 6066) */
        if (cfg->verify)
          ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl),
                                             server_name);
      } else {
        ok = SSL_set_tlsext_host_name(t->ssl, server_name);
        if (ok && cfg->verify) ok = SSL_set1_host(t->ssl, server_name);
      }
    }
  }
  if (!ok) {
    ERR_clear_error();
    SSL_free(t->ssl);
    free(t);
    return UV_EINVAL;
  }
  if (!cfg->server && session_key) {
    t->skey = strdup(session_key);
    SSL_SESSION *s = t->skey ? tls_cfg_session(cfg, t->skey) : NULL;
    if (s) SSL_set_session(t->ssl, s); /* takes its own reference */
    /* tls_cfg.c keeps the sessions the peer hands out under this key. */
    SSL_set_app_data(t->ssl, t->skey);
  }
  t->cfg = tls_cfg_ref(cfg);
  t->c = c;
  t->kick.kind = TMR_C;
  t->kick.fn = on_kick;
  c->tp = t;
  c->ops = &tls_ops;
  return 0;
}

static void name_str(X509_NAME *n, char *out, size_t len) {
  out[0] = 0;
  BIO *m = BIO_new(BIO_s_mem());
  if (!m) return;
  X509_NAME_print_ex(m, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  int k = BIO_read(m, out, (int)len - 1);
  out[k > 0 ? k : 0] = 0;
  BIO_free(m);
}

int tls_info(const net_conn_t *c, tls_info_t *info) {
  if (!tls_done(c)) return UV_EINVAL;
  const tls_t *t = c->tp;
  memset(info, 0, sizeof(*info));
  info->protocol = SSL_get_version(t->ssl);
  info->cipher = SSL_get_cipher_name(t->ssl);
  SSL_get0_alpn_selected(t->ssl, &info->alpn, &info->alpn_len);
  info->server_name = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
  X509 *peer = SSL_get0_peer_certificate(t->ssl);
  if (peer) {
    name_str(X509_get_subject_name(peer), info->subject, sizeof(info->subject));
    name_str(X509_get_issuer_name(peer), info->issuer, sizeof(info->issuer));
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(peer), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    if (hex) snprintf(info->serial, sizeof(info->serial), "%s", hex);
    OPENSSL_free(hex);
    BN_free(bn);
  }
  info->resumed = SSL_session_reused(t->ssl);
  info->verified =
      t->cfg->verify && peer && SSL_get_verify_result(t->ssl) == X509_V_OK;
  err_reset();
  return 0;
}
