/* SPDX-License-Identifier: MIT */
/* fuzz_http_client.c -- libFuzzer target for the HTTP client's response
 * parser (http_client.c over llhttp), without LuaJIT or libuv.
 *
 * The input is fed the way the client feeds it: in reads whose sizes come
 * from the first input byte, each read a buffer of its own that is freed
 * once parsed (a field split across reads must have been copied), with
 * the second byte choosing a HEAD request. Events must come in a legal
 * order and every span must stay inside its buffer. Build: cmake
 * -DORRERY_FUZZ=ON with clang, then ./fuzz_http_client corpus/ */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.c"

static void check_fields(const orrery_hresp *r) {
  const hc_t *hc = (const hc_t *)r;
  for (uint32_t i = 0; i < r->nfields; i++) {
    const uint32_t *s = r->spans + 4 * i;
    if ((size_t)s[0] + s[1] > hc->flen || (size_t)s[2] + s[3] > hc->flen)
      abort();
  }
}

/* At the head: the Lua side copies head_len bytes of fields and the
 * spans of nhead of them, so every head field must lie in those bytes. */
static void check_head(const orrery_hresp *r) {
  if (r->ka_field > r->nhead || r->nhead > r->nfields) abort();
  for (uint32_t i = 0; i < r->nhead; i++) {
    const uint32_t *s = r->spans + 4 * i;
    if ((size_t)s[0] + s[1] > r->head_len || (size_t)s[2] + s[3] > r->head_len)
      abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t step = (size_t)(data[0] % 64) + 1;
  int head = data[1] & 1;
  data += 2;
  size -= 2;
  orrery_hresp *r = orrery_ffi_hresp_new(1024, 16);
  orrery_ffi_hresp_start(r, head);
  int seen_head = 0, done = 0;
  size_t fed = 0;
  while (!done && fed < size) {
    uint32_t n = (uint32_t)(size - fed < step ? size - fed : step);
    char *buf = malloc(n ? n : 1);
    memcpy(buf, data + fed, n);
    fed += n;
    uint32_t off = 0;
    for (int guard = 0; guard < 10000 && !done; guard++) {
      int ev = orrery_ffi_hresp_feed(r, buf, off, n);
      if (r->pos < off || r->pos > n) abort();
      off = r->pos;
      if (ev == ORRERY_HRESP_NEED) break;
      if (ev == ORRERY_HRESP_HEAD) {
        if (seen_head) abort();
        seen_head = 1;
        check_fields(r);
        check_head(r);
      } else if (ev == ORRERY_HRESP_BODY) {
        if (!seen_head || (size_t)r->body_off + r->body_len > n) abort();
        if (head) abort(); /* a response to HEAD has no body */
      } else if (ev == ORRERY_HRESP_CONTINUE) {
        if (seen_head) abort();
      } else {
        if (ev == ORRERY_HRESP_DONE) {
          if (!seen_head) abort();
          check_fields(r);
        }
        done = 1;
      }
    }
    free(buf);
  }
  if (!done) {
    int ev = orrery_ffi_hresp_eof(r);
    if (ev == ORRERY_HRESP_DONE && !seen_head) abort();
  }
  orrery_ffi_hresp_free(r);
  return 0;
}
