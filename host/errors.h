/* SPDX-License-Identifier: MIT */
/* errors.h -- every error string the host hands to Lua, one list per
 * subsystem (in the manner of LuaJIT's lj_errmsg.h).
 *
 * Each list is an X-macro: ERRDEF(_) expands _(name, ...) once per entry,
 * so that the codes, their enum and their strings are written once and
 * cannot drift apart. The strings are the stable codes and messages that
 * docs/errors.md, docs/net.md, docs/http.md and docs/json.md document.
 * This header is plain C without libuv or Lua, so that the fuzz targets
 * can use the JSON lists; the libuv codes are only named here and
 * resolved where the list is expanded (errors.c). */
#ifndef ORRERY_ERRORS_H
#define ORRERY_ERRORS_H

/* -- Sockets (orrery.net, orrery.http): libuv error -> stable word -- */

/* Several libuv errors share a word; a libuv error not listed is handed
 * to Lua by its libuv name ("EPROTO"). */
#define NET_ERRDEF(_)                                                          \
  _(0, "ok")                                                                   \
  _(UV_EOF, "eof")                                                             \
  _(UV_ETIMEDOUT, "timeout")                                                   \
  _(UV_ECANCELED, "canceled")                                                  \
  _(UV_ECONNREFUSED, "refused")                                                \
  _(UV_ECONNRESET, "reset")                                                    \
  _(UV_ECONNABORTED, "aborted")                                                \
  _(UV_EPIPE, "closed")                                                        \
  _(UV_ENOTCONN, "closed")                                                     \
  _(UV_EBADF, "closed")                                                        \
  _(UV_EADDRINUSE, "address_in_use")                                           \
  _(UV_EADDRNOTAVAIL, "address_not_available")                                 \
  _(UV_EACCES, "permission_denied")                                            \
  _(UV_ENOENT, "not_found")                                                    \
  _(UV_EHOSTUNREACH, "unreachable")                                            \
  _(UV_ENETUNREACH, "unreachable")                                             \
  _(UV_EAI_NONAME, "no_such_host")                                             \
  _(UV_EAI_NODATA, "no_such_host")                                             \
  _(UV_EAI_AGAIN, "dns_temporary_failure")                                     \
  _(UV_EMFILE, "too_many_open_files")                                          \
  _(UV_ENFILE, "too_many_open_files")                                          \
  _(UV_ENOMEM, "out_of_memory")                                                \
  _(UV_ENOBUFS, "out_of_memory")                                               \
  _(UV_EINVAL, "invalid")                                                      \
  _(NET_ETLS, "tls")

/* A failure in the TLS layer (host/tls.c), outside libuv's codes: Lua
 * sees "tls: " and the readable reason that tls_reason gives. */
#define NET_ETLS (-7000)
/* Reasons of the TLS layer's own; the others are OpenSSL's
 * ("certificate has expired", "hostname mismatch", "wrong version
 * number", ...). */
#define TLS_MSG_HANDSHAKE_EOF "connection closed during the handshake"
#define TLS_MSG_HANDSHAKE_RESET "connection reset during the handshake"

/* The stable word for a libuv error code (0 is "ok"). */
const char *err_net(int uverr);

/* -- HTTP request bodies (req:body(), req:read()) -- */

#define BODY_ERRDEF(_)                                                         \
  _(OK, "ok")                                                                  \
  _(TOO_LARGE, "too_large") /* over the request's body limit */                \
  _(TIMEOUT, "timeout")     /* read_body_timeout passed */                     \
  _(CLOSED, "closed")       /* the client went away */                         \
  _(BAD, "bad_request")     /* a framing error in the body */

enum {
#define BODY_ENUM(name, str) B_##name,
  BODY_ERRDEF(BODY_ENUM)
#undef BODY_ENUM
      B__MAX
};

/* The stable word for a body error B_*. */
const char *err_body(int code);

/* -- JSON decoding (host/json_parse.c): code -> message -- */

#define JSON_ERRDEF(_)                                                         \
  _(OK, "ok")                                                                  \
  _(EEND, "unexpected end of input") /* inside a value */                      \
  _(EVALUE, "expected a value")                                                \
  _(ELITERAL, "invalid literal")   /* misspelt true, false, null */            \
  _(ENUMBER, "invalid number")     /* the number grammar broken */             \
  _(ERANGE, "number out of range") /* too large for a double */                \
  _(ECTRL, "control character in string")                                      \
  _(EESCAPE, "invalid escape")    /* unknown or malformed */                   \
  _(ESURROGATE, "lone surrogate") /* a \u escape, unpaired */                  \
  _(EUTF8, "invalid UTF-8")                                                    \
  _(EKEY, "expected a string key")                                             \
  _(ECOLON, "expected ':'") /* after a key */                                  \
  _(EARRAY, "expected ',' or ']'")                                             \
  _(EOBJECT, "expected ',' or '}'")                                            \
  _(ETRAILING, "trailing data") /* after the top-level value */                \
  _(EDEPTH, "too deep")         /* nesting deeper than max_depth */            \
  _(ESINK, "out of memory")     /* a sink callback failed */

enum {
#define JSON_ENUM(name, str) JSON_##name,
  JSON_ERRDEF(JSON_ENUM)
#undef JSON_ENUM
      JSON__MAX
};

/* -- JSON encoding (host/json.c): printf formats, raised as
 * "orrery.json.encode: <message> at <path>" -- */

#define JSON_ENCDEF(_)                                                         \
  _(NAN, "cannot encode NaN")                                                  \
  _(INF, "cannot encode inf")                                                  \
  _(NINF, "cannot encode -inf")                                                \
  _(TYPE, "cannot encode %s")                                                  \
  _(KEY_TYPE, "cannot encode %s key")                                          \
  _(ARRAY_KEY_TYPE, "cannot encode %s key in an array")                        \
  _(NOT_INDEX, "%s key %s is not an array index%s")                            \
  _(INF_KEY, "cannot encode an infinite key")                                  \
  _(DUP_KEY, "duplicate key \"%s\" (number and string)")                       \
  _(MIXED, "table has both string and number keys (use json.object)")          \
  _(SPARSE, "sparse array (use json.array or json.object)")                    \
  _(TOO_SPARSE, "array too sparse (index %.0f, %.0f values)")                  \
  _(UTF8, "invalid UTF-8 in %s at byte %zu")                                   \
  _(CYCLE, "cycle (a table contains itself)")                                  \
  _(DEPTH, "nesting deeper than max_depth (%d)")                               \
  _(STACK, "Lua stack overflow")                                               \
  _(ARRAY_LONG, "array too long")

enum {
#define JSON_ENC_ENUM(name, fmt) E_##name,
  JSON_ENCDEF(JSON_ENC_ENUM)
#undef JSON_ENC_ENUM
      E__MAX
};

#endif
