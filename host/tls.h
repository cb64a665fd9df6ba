/* SPDX-License-Identifier: MIT */
/* tls.h -- TLS configurations (an SSL_CTX and its settings) and the TLS
 * transport, which runs OpenSSL under a connection's buffers (net.h). */
#ifndef ORRERY_TLS_H
#define ORRERY_TLS_H

#include <openssl/ssl.h>

#include "net.h"

/* A TLS configuration: one SSL_CTX with the settings that go with it
 * (server or client, verification, ALPN).
 *
 * Ownership: reference counted. tls_cfg_new returns it with one reference
 * (the Lua userdata's, net_lua.c); a listener holds one for the
 * connections it will accept (net_lis_set_tls swaps it, which is how a
 * SIGHUP reload hands new connections a new certificate), and every TLS
 * connection holds one until its close callback (tls.c), so that a
 * connection keeps the configuration it started with. The last
 * tls_cfg_unref frees the SSL_CTX. The count is not atomic: a
 * configuration belongs to one worker. */
typedef struct tls_cfg_s tls_cfg_t;

/* -- Internals of tls.c and tls_cfg.c -- */

typedef struct {
  char *key; /* "name:port" */
  SSL_SESSION *s;
} tls_sess_t;

struct tls_cfg_s {
  SSL_CTX *ctx; /* its app data points back here */
  int refs;
  uint8_t server, verify;
  unsigned nsess;
  tls_sess_t *sess; /* client: TLS_SESSIONS slots, allocated when needed */
  unsigned alpn_len;
  unsigned char alpn[]; /* a server's protocols, wire format */
};

/* The newest session cfg holds for key, or NULL (a client's). */
SSL_SESSION *tls_cfg_session(tls_cfg_t *cfg, const char *key);

/* -- The API -- */

enum { TLS_VERIFY_NONE, TLS_VERIFY_OPTIONAL, TLS_VERIFY_REQUIRE };

typedef struct {
  int server;
  const char *cert; /* PEM chain file; required for a server */
  const char *key;  /* PEM private key file; required with cert */
  /* A client trusts these CAs instead of the system store; a server
   * verifies client certificates against them (and names them in its
   * CertificateRequest). */
  const char *ca_file;
  int verify; /* client: verify the peer (0: the insecure opt-out) */
  /* A server: ask for a client certificate, and either require one
   * (TLS_VERIFY_REQUIRE) or accept a client without one
   * (TLS_VERIFY_OPTIONAL); a certificate sent must verify either way. */
  int verify_client;
  /* ALPN protocols in wire format (length-prefixed names), or NULL: a
   * server picks the first of its own that the client offers, a client
   * offers them. */
  const unsigned char *alpn;
  unsigned alpn_len;
} tls_opts_t;

/* Makes a configuration, or returns NULL with a readable reason in err
 * (naming the option and file that could not be used). */
tls_cfg_t *tls_cfg_new(const tls_opts_t *o, char *err, size_t errlen);
tls_cfg_t *tls_cfg_ref(tls_cfg_t *cfg);
void tls_cfg_unref(tls_cfg_t *cfg);
int tls_cfg_is_server(const tls_cfg_t *cfg);

/* Makes c, a connection that has not started yet (accepted, or dialling),
 * a TLS connection under cfg. A client's server_name is sent as SNI and
 * checked against the peer's certificate (an IP address is only
 * checked); NULL sends none. A client with a session_key (the peer:
 * "name:port") resumes the newest session cfg holds for that key, and
 * keeps the sessions the peer hands it there. Returns 0 or a negative
 * libuv error. */
int tls_attach(net_conn_t *c, tls_cfg_t *cfg, const char *server_name,
               const char *session_key);
int tls_is(const net_conn_t *c);
/* Why the TLS layer failed (the error NET_ETLS, or a connection that
 * ended during its handshake), as a readable phrase: "certificate has
 * expired", "hostname mismatch", ... NULL when c is not TLS. */
const char *tls_reason(const net_conn_t *c, int err);
/* Whether the handshake has completed; whether it has started (the
 * socket is connected) and not completed. */
int tls_done(const net_conn_t *c);
int tls_handshaking(const net_conn_t *c);

typedef struct {
  const char *protocol; /* "TLSv1.3" */
  const char *cipher;
  const unsigned char *alpn; /* not NUL-terminated */
  unsigned alpn_len;
  const char *server_name; /* a server: the SNI the client sent */
  /* The peer's certificate was checked and passed: on a client, the
   * server's chain and name; on a server that asks for client
   * certificates, the client's chain. */
  int verified;
  int resumed;       /* the handshake resumed an earlier session */
  char subject[256]; /* the peer's certificate ("" without one) */
  char issuer[256];
  char serial[80]; /* hex */
} tls_info_t;

/* Fills info for a TLS connection whose handshake is done; 0, or
 * UV_EINVAL when c is not TLS or not ready. */
int tls_info(const net_conn_t *c, tls_info_t *info);

#endif
