/* SPDX-License-Identifier: MIT */
/* fuzz_http_fast.c -- libFuzzer target: the request parser's fast path
 * (fast_head in http_parse.c) against llhttp alone.
 *
 * Each input is parsed twice, fed in the same pieces (their size comes from
 * the first input byte, as in fuzz_http.c): once as the server does, once
 * with the fast path off. Both runs must report the same events with the
 * same requests (method, version, target, fields, framing), the same
 * bodies and the same errors; any difference aborts. Build: cmake
 * -DORRERY_FUZZ=ON with clang, then ./fuzz_http_fast -max_len=4096 corpus/ */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.c"

typedef struct {
  char *p;
  size_t n, cap;
} log_t;

static void log_add(log_t *l, const void *s, size_t n) {
  if (l->n + n > l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 4096;
    while (cap < l->n + n) cap *= 2;
    l->p = realloc(l->p, cap);
    if (!l->p) abort();
    l->cap = cap;
  }
  memcpy(l->p + l->n, s, n);
  l->n += n;
}

static void log_int(log_t *l, int64_t v) {
  log_add(l, &v, sizeof(v));
}

static void log_span(log_t *l, const char *buf, hp_span_t s, int trim) {
  size_t n = s.len;
  const char *p = buf + s.off;
  while (trim && n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
  log_int(l, (int64_t)n);
  if (n) log_add(l, p, n);
}

/* Parses data as the server does and records what it sees. */
static void run(const uint8_t *data, size_t size, size_t step, int fast,
                log_t *out) {
  hp_limits_t lim = {2048, 512, 32};
  hp_t hp;
  hp_init(&hp, &lim);
  hp.fast = (uint8_t)fast;
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
    log_int(out, ev);
    if (ev == HP_ERROR) {
      log_int(out, hp.status);
      if (hp.reason) log_add(out, hp.reason, strlen(hp.reason) + 1);
      break;
    }
    if (ev == HP_HEAD) {
      log_int(out, hp.method_id);
      log_int(out, hp.minor);
      log_int(out, hp.flags);
      log_int(out, hp.content_length);
      log_int(out, (int64_t)(hp.head_end - hp.head_start));
      log_span(out, buf, hp.url, 0);
      log_span(out, buf, hp.path, 0);
      log_span(out, buf, hp.query, 0);
      log_int(out, hp.nh);
      for (uint32_t i = 0; i < hp.nh; i++) {
        log_span(out, buf, hp.hname[i], 0);
        log_span(out, buf, hp.hval[i], 1);
      }
      continue;
    }
    if (ev == HP_BODY) {
      log_span(out, buf, hp.body, 0);
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  /* Small pieces exercise llhttp across reads; a quarter of the inputs go
   * in whole, where the fast path gets every complete head. */
  size_t step = data[0] < 64 ? size : (size_t)(data[0] % 64) + 1;
  data++;
  size--;
  log_t a = {0}, b = {0};
  run(data, size, step, 1, &a);
  run(data, size, step, 0, &b);
  if (a.n != b.n || (a.n && memcmp(a.p, b.p, a.n))) {
    fprintf(stderr, "fast path and llhttp disagree\n");
    abort();
  }
  free(a.p);
  free(b.p);
  return 0;
}
