/* SPDX-License-Identifier: MIT */
/* fuzz_http.c -- libFuzzer target for the HTTP request parser core
 * (http_parse.c over llhttp), without LuaJIT or libuv.
 *
 * The input is fed to the parser the way the server does it: in pieces
 * whose sizes come from the first input byte, with the buffer compacted
 * between messages and bodies, so that the offset bookkeeping is exercised
 * along with the parser. Build: cmake -DORRERY_FUZZ=ON with clang, then
 * ./fuzz_http -max_len=4096 corpus/ */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.c"

static void check_span(hp_span_t s, size_t len) {
  if ((size_t)s.off + s.len > len) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t step = (size_t)(data[0] % 64) + 1;
  data++;
  size--;
  hp_limits_t lim = {2048, 512, 32};
  hp_t hp;
  hp_init(&hp, &lim);
  char *buf = malloc(size + 1);
  size_t len = 0, fed = 0;
  for (int guard = 0; guard < 100000; guard++) {
    int ev = hp_feed(&hp, buf, len);
    if (ev == HP_NEED) {
      if (fed == size) break;
      size_t n = size - fed < step ? size - fed : step;
      memcpy(buf + len, data + fed, n);
      len += n;
      fed += n;
      continue;
    }
    if (ev == HP_ERROR) {
      if (hp.status && !hp_status_text(hp.status)) abort();
      break;
    }
    if (ev == HP_HEAD) {
      check_span(hp.url, len);
      check_span(hp.path, len);
      check_span(hp.query, len);
      for (uint32_t i = 0; i < hp.nh; i++) {
        check_span(hp.hname[i], len);
        check_span(hp.hval[i], len);
      }
      if (hp.head_end > len || hp.head_start > hp.head_end) abort();
      (void)hp_method_name(&hp);
      continue;
    }
    if (ev == HP_BODY) {
      check_span(hp.body, len);
      /* Drop the consumed body bytes, keeping the head in place. */
      size_t keep = hp.head_end;
      if (hp.pos > keep) {
        memmove(buf + keep, buf + hp.pos, len - hp.pos);
        len -= hp.pos - keep;
        hp_shift_body(&hp, hp.pos - keep);
      }
      continue;
    }
    if (ev == HP_DONE) {
      size_t pos = hp.pos;
      memmove(buf, buf + pos, len - pos);
      len -= pos;
      hp_next_message(&hp, pos);
    }
  }
  free(buf);
  hp_free(&hp);
  return 0;
}
