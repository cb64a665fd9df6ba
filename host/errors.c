/* SPDX-License-Identifier: MIT */
/* errors.c -- the error strings of errors.h, by code. */
#include <uv.h>

#include "errors.h"

const char *err_net(int uverr) {
  switch (uverr) {
#define NET_CASE(code, word)                                                   \
  case code:                                                                   \
    return word;
    NET_ERRDEF(NET_CASE)
#undef NET_CASE
  default:
    return uv_err_name(uverr);
  }
}

static const char *const body_msg[] = {
#define BODY_MSG(name, word) [B_##name] = word,
    BODY_ERRDEF(BODY_MSG)
#undef BODY_MSG
};

const char *err_body(int code) {
  if (code <= B_OK || code >= B__MAX) return body_msg[B_BAD];
  return body_msg[code];
}
