/* SPDX-License-Identifier: MIT */
/* tls_cfg.c -- TLS configurations (an SSL_CTX and its settings, shared by
 * listeners and connections) and the client's session cache. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net_int.h"

/* TLS 1.2 suites: forward-secret key exchange with AEAD ciphers only
 * (Mozilla's "intermediate" list without DHE). TLS 1.3 keeps OpenSSL's
 * defaults, which are all AEAD. */
#define TLS12_CIPHERS                                                          \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                 \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                 \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* A client keeps the newest session of each peer (server name and port)
 * for resumption, at most TLS_SESSIONS of them per configuration, the
 * oldest dropped first. Sessions are keyed by the name that was verified,
 * so a session is only resumed with a peer of that name. */
#define TLS_SESSIONS 64

/* -- Client sessions -- */

static tls_sess_t *sess_find(tls_cfg_t *cfg, const char *key) {
  for (unsigned i = 0; i < cfg->nsess; i++)
    if (!strcmp(cfg->sess[i].key, key)) return &cfg->sess[i];
  return NULL;
}

static void sess_drop(tls_cfg_t *cfg, unsigned i) {
  free(cfg->sess[i].key);
  SSL_SESSION_free(cfg->sess[i].s);
  memmove(&cfg->sess[i], &cfg->sess[i + 1],
          (cfg->nsess - i - 1) * sizeof(tls_sess_t));
  cfg->nsess--;
}

/* OpenSSL hands over a new session (after the handshake in TLS 1.2, with
 * each ticket in TLS 1.3): it becomes the peer's newest. Returning 1
 * keeps the reference. */
static int sess_new(SSL *ssl, SSL_SESSION *s) {
  const char *key = SSL_get_app_data(ssl);
  tls_cfg_t *cfg = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  if (!cfg || !key || !SSL_SESSION_is_resumable(s)) return 0;
  if (!cfg->sess && !(cfg->sess = calloc(TLS_SESSIONS, sizeof(tls_sess_t))))
    return 0;
  tls_sess_t *e = sess_find(cfg, key);
  if (e) {
    SSL_SESSION_free(e->s);
    e->s = s;
    return 1;
  }
  char *k = strdup(key);
  if (!k) return 0;
  if (cfg->nsess == TLS_SESSIONS) sess_drop(cfg, 0);
  cfg->sess[cfg->nsess].key = k;
  cfg->sess[cfg->nsess].s = s;
  cfg->nsess++;
  return 1;
}

SSL_SESSION *tls_cfg_session(tls_cfg_t *cfg, const char *key) {
  tls_sess_t *e = cfg->sess ? sess_find(cfg, key) : NULL;
  return e ? e->s : NULL;
}

/* -- Configurations -- */

tls_cfg_t *tls_cfg_ref(tls_cfg_t *cfg) {
  cfg->refs++;
  return cfg;
}

void tls_cfg_unref(tls_cfg_t *cfg) {
  if (!cfg || --cfg->refs > 0) return;
  while (cfg->nsess) sess_drop(cfg, cfg->nsess - 1);
  free(cfg->sess);
  SSL_CTX_free(cfg->ctx);
  free(cfg);
}

int tls_cfg_is_server(const tls_cfg_t *cfg) {
  return cfg->server;
}

static int alpn_select(SSL *s, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg) {
  tls_cfg_t *cfg = arg;
  unsigned char *sel;
  (void)s;
  if (SSL_select_next_proto(&sel, outlen, cfg->alpn, cfg->alpn_len, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK; /* go on without ALPN */
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* A readable reason for a file that OpenSSL could not use: the system's
 * when it cannot be opened, else OpenSSL's. */
static void file_err(char *err, size_t len, const char *what, const char *opt,
                     const char *path) {
  const char *why = NULL;
  FILE *f = fopen(path, "r");
  if (!f)
    why = strerror(errno);
  else
    fclose(f);
  unsigned long e = ERR_peek_last_error();
  if (!why && e) why = ERR_reason_error_string(e);
  snprintf(err, len, "option %s: cannot load %s %s: %s", opt, what, path,
           why ? why : "unusable");
  ERR_clear_error();
}

/* A server that asks for client certificates: they are verified against
 * ca_file, whose subjects the CertificateRequest lists (so that a client
 * holding several certificates can pick the right one). Returns 0, or -1
 * with err set. */
static int server_verify(SSL_CTX *ctx, const tls_opts_t *o, char *err,
                         size_t errlen) {
  if (o->verify_client == TLS_VERIFY_NONE) return 0;
  if (!o->ca_file) {
    snprintf(err, errlen, "option tls.verify needs tls.ca_file");
    return -1;
  }
  if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1) {
    file_err(err, errlen, "CA file", "tls.ca_file", o->ca_file);
    return -1;
  }
  STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
  if (!names) {
    file_err(err, errlen, "CA file", "tls.ca_file", o->ca_file);
    return -1;
  }
  SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
  int mode = SSL_VERIFY_PEER;
  if (o->verify_client == TLS_VERIFY_REQUIRE)
    mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  SSL_CTX_set_verify(ctx, mode, NULL);
  return 0;
}

tls_cfg_t *tls_cfg_new(const tls_opts_t *o, char *err, size_t errlen) {
  ERR_clear_error();
  if (o->server && (!o->cert || !o->key)) {
    snprintf(err, errlen, "option %s is required for a server",
             o->cert ? "tls.key" : "tls.cert");
    return NULL;
  }
  if (!o->cert != !o->key) {
    snprintf(err, errlen, "options tls.cert and tls.key go together");
    return NULL;
  }
  tls_cfg_t *cfg = calloc(1, sizeof(*cfg) + o->alpn_len);
  SSL_CTX *ctx =
      SSL_CTX_new(o->server ? TLS_server_method() : TLS_client_method());
  if (!cfg || !ctx) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  cfg->ctx = ctx;
  cfg->refs = 1;
  cfg->server = (uint8_t)(o->server != 0);
  cfg->verify = (uint8_t)(o->server ? o->verify_client != TLS_VERIFY_NONE
                                    : o->verify != 0);
  SSL_CTX_set_app_data(ctx, cfg); /* for sess_new */
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* Idle connections give their record buffers back to OpenSSL. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) {
    snprintf(err, errlen, "no usable TLS 1.2 cipher");
    goto fail;
  }
  if (o->cert) {
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
      file_err(err, errlen, "certificate", "tls.cert", o->cert);
      goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1) {
      file_err(err, errlen, "key", "tls.key", o->key);
      goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      snprintf(err, errlen,
               "option tls.key: %s does not match the certificate %s", o->key,
               o->cert);
      goto fail;
    }
  }
  if (o->server) {
    /* Resumption with client certificates needs a session id context
     * (OpenSSL refuses to resume without one once it verifies peers). */
    static const unsigned char sid[] = "orrery";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    if (server_verify(ctx, o, err, errlen)) goto fail;
    if (o->alpn_len) {
      memcpy(cfg->alpn, o->alpn, o->alpn_len);
      cfg->alpn_len = o->alpn_len;
      SSL_CTX_set_alpn_select_cb(ctx, alpn_select, cfg);
    }
  } else {
    SSL_CTX_set_verify(ctx, o->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       NULL);
    if (o->ca_file) {
      if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1) {
        file_err(err, errlen, "CA file", "tls.ca_file", o->ca_file);
        goto fail;
      }
    } else if (o->verify && SSL_CTX_set_default_verify_paths(ctx) != 1) {
      snprintf(err, errlen, "cannot load the system's trusted certificates");
      goto fail;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, sess_new);
    /* SSL_CTX_set_alpn_protos answers 0 on success. */
    if (o->alpn_len && SSL_CTX_set_alpn_protos(ctx, o->alpn, o->alpn_len)) {
      snprintf(err, errlen, "option tls.alpn: unusable");
      goto fail;
    }
  }
  ERR_clear_error();
  return cfg;
fail:
  ERR_clear_error();
  SSL_CTX_free(ctx);
  free(cfg);
  return NULL;
}
