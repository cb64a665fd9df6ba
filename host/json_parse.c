/* SPDX-License-Identifier: MIT */
/* json_parse.c -- strict JSON (RFC 8259) parser that drives a sink, and
 * the string and number encoders; plain C, shared by json.c and the
 * fuzzer (host/fuzz_json.c). */
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_parse.h"

/* The stable error messages, indexed by code (errors.h). */
static const char *const json_errmsg[] = {
#define JSON_MSG(name, str) [JSON_##name] = str,
    JSON_ERRDEF(JSON_MSG)
#undef JSON_MSG
};

const char *json_strerror(int code) {
  if (code < 0 || code >= JSON__MAX) return "unknown error";
  return json_errmsg[code];
}

/* -- Byte classes -- */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* True if any of the 8 bytes in x needs a closer look inside a string: a
 * control character, '"', '\\' or a non-ASCII byte. Each term is the
 * classic exact "has a zero byte" / "has a byte less than n" test, so
 * plain ASCII text is skipped 8 bytes at a time. */
static inline int swar_special(uint64_t x) {
  uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
  uint64_t lt = (x - ONES * 0x20) & ~x;
  uint64_t zq = (q - ONES) & ~q, zb = (b - ONES) & ~b;
  return ((lt | zq | zb | x) & HIGHS) != 0;
}

static inline int is_plain(unsigned c) {
  return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

static inline int is_digit(unsigned c) {
  return c - '0' < 10;
}

static inline int hexval(unsigned c) {
  if (c - '0' < 10) return (int)(c - '0');
  c |= 0x20;
  if (c - 'a' < 6) return (int)(c - 'a' + 10);
  return -1;
}

size_t json_utf8_len(const unsigned char *s, size_t len) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0; /* continuation byte or overlong 2-byte lead */
  if (c < 0xE0) return len >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c < 0xF0) {
    if (len < 3 || (s[2] & 0xC0) != 0x80) return 0;
    /* E0 needs A0..BF (no overlongs), ED needs 80..9F (no surrogates). */
    unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return s[1] >= lo && s[1] <= hi ? 3 : 0;
  }
  if (c < 0xF5) {
    if (len < 4 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
    /* F0 needs 90..BF (no overlongs), F4 needs 80..8F (<= U+10FFFF). */
    unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return s[1] >= lo && s[1] <= hi ? 4 : 0;
  }
  return 0;
}

/* -- Parser -- */

typedef const unsigned char *cp_t;

typedef struct parser_s {
  cp_t s, end;
  const json_sink_t *sink; /* NULL: validate only */
  void *ud;
  json_error_t *err;
} parser_t;

static cp_t fail(parser_t *ps, int code, cp_t at) {
  ps->err->code = code;
  ps->err->pos = (size_t)(at - ps->s) + 1;
  return NULL;
}

static int failc(parser_t *ps, int code, cp_t at) {
  fail(ps, code, at);
  return code;
}

static inline cp_t skip_ws(cp_t p, cp_t end) {
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

static int emit_string(parser_t *ps, int is_key, const char *s, size_t n) {
  if (!ps->sink) return 0;
  if (is_key) return ps->sink->key(ps->ud, s, n);
  return ps->sink->scalar(ps->ud, JSON_STRING, s, n, 0);
}

static inline char *put_utf8(char *o, unsigned long cp) {
  if (cp < 0x80) {
    *o++ = (char)cp;
  } else if (cp < 0x800) {
    *o++ = (char)(0xC0 | (cp >> 6));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *o++ = (char)(0xE0 | (cp >> 12));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (char)(0xF0 | (cp >> 18));
    *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  }
  return o;
}

/* Reads the 4 hex digits of a \u escape at p (pointing at the backslash).
 * Returns the code unit, -1 if malformed, -2 if the input ends first. */
static long hex4(cp_t p, cp_t end) {
  long v = 0;
  for (int i = 2; i < 6; i++) {
    if (end - p <= i) return -2;
    int h = hexval(p[i]);
    if (h < 0) return -1;
    v = v << 4 | h;
  }
  return v;
}

/* The slow path of a string: it has escapes, so it is decoded into
 * scratch memory. start is just after the opening quote and everything
 * before p is known to be plain. */
static cp_t string_escaped(parser_t *ps, cp_t start, cp_t p, int is_key) {
  cp_t end = ps->end, q = p;
  char *out = NULL, *o = NULL;
  /* Decoding never grows the text, so the raw length up to the closing
   * quote bounds the output. */
  while (q < end && *q != '"') q += *q == '\\' && end - q > 1 ? 2 : 1;
  if (ps->sink) {
    size_t need = (size_t)(q - start);
    out = ps->sink->scratch(ps->ud, need ? need : 1);
    if (!out) return fail(ps, JSON_ESINK, start - 1);
    memcpy(out, start, (size_t)(p - start));
    o = out + (p - start);
  }
  for (;;) {
    if (p >= end) return fail(ps, JSON_EEND, end);
    unsigned c = *p;
    if (is_plain(c)) {
      if (o) *o++ = (char)c;
      p++;
    } else if (c == '"') {
      if (emit_string(ps, is_key, out, (size_t)(o - out)))
        return fail(ps, JSON_ESINK, start - 1);
      return p + 1;
    } else if (c == '\\') {
      if (p + 1 >= end) return fail(ps, JSON_EEND, end);
      char e;
      switch (p[1]) {
      case '"':
        e = '"';
        break;
      case '\\':
        e = '\\';
        break;
      case '/':
        e = '/';
        break;
      case 'b':
        e = '\b';
        break;
      case 'f':
        e = '\f';
        break;
      case 'n':
        e = '\n';
        break;
      case 'r':
        e = '\r';
        break;
      case 't':
        e = '\t';
        break;
      case 'u': {
        long u = hex4(p, end);
        if (u == -2) return fail(ps, JSON_EEND, end);
        if (u < 0) return fail(ps, JSON_EESCAPE, p);
        unsigned long cp = (unsigned long)u;
        int n = 6;
        if (u >= 0xDC00 && u <= 0xDFFF) return fail(ps, JSON_ESURROGATE, p);
        if (u >= 0xD800 && u <= 0xDBFF) {
          /* A high surrogate only counts with a low one right after. */
          long lo = end - p > 7 && p[6] == '\\' && p[7] == 'u'
                        ? hex4(p + 6, end)
                        : -1;
          if (lo < 0xDC00 || lo > 0xDFFF) return fail(ps, JSON_ESURROGATE, p);
          cp = 0x10000 + (((unsigned long)u - 0xD800) << 10) +
               ((unsigned long)lo - 0xDC00);
          n = 12;
        }
        if (o) o = put_utf8(o, cp);
        p += n;
        continue;
      }
      default:
        return fail(ps, JSON_EESCAPE, p);
      }
      if (o) *o++ = e;
      p += 2;
    } else if (c < 0x20) {
      return fail(ps, JSON_ECTRL, p);
    } else {
      size_t n = json_utf8_len(p, (size_t)(end - p));
      if (!n) return fail(ps, JSON_EUTF8, p);
      if (o) memcpy(o, p, n), o += n;
      p += n;
    }
  }
}

/* p points at the opening quote. Strings without escapes are handed to
 * the sink straight from the input, without a copy. */
static cp_t parse_string(parser_t *ps, cp_t p, int is_key) {
  cp_t start = p + 1, end = ps->end;
  p = start;
  for (;;) {
    while (end - p >= 8) {
      uint64_t x;
      memcpy(&x, p, 8);
      if (swar_special(x)) break;
      p += 8;
    }
    while (p < end && is_plain(*p)) p++;
    if (p >= end) return fail(ps, JSON_EEND, end);
    unsigned c = *p;
    if (c == '"') {
      if (emit_string(ps, is_key, (const char *)start, (size_t)(p - start)))
        return fail(ps, JSON_ESINK, start - 1);
      return p + 1;
    }
    if (c == '\\') return string_escaped(ps, start, p, is_key);
    if (c < 0x20) return fail(ps, JSON_ECTRL, p);
    size_t n = json_utf8_len(p, (size_t)(end - p));
    if (!n) return fail(ps, JSON_EUTF8, p);
    p += n;
  }
}

static const double pow10_exact[] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* strtod on a copy of s[0..n): the copy adds the terminating NUL and
 * swaps '.' for the locale's decimal point, which strtod insists on. */
static int slow_strtod(parser_t *ps, cp_t s, size_t n, double *v) {
  char local[64], *buf = local, *heap = NULL;
  const char *dp = localeconv()->decimal_point;
  size_t dpl = dp && *dp ? strlen(dp) : 1;
  size_t need = n + dpl + 1;
  if (need > sizeof local) {
    /* Without a sink nothing can raise through us, so malloc is safe. */
    buf = ps->sink ? ps->sink->scratch(ps->ud, need) : (heap = malloc(need));
    if (!buf) return -1;
  }
  char *o = buf;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '.' && dpl > 1) {
      memcpy(o, dp, dpl), o += dpl;
    } else {
      *o++ = s[i] == '.' && dp && *dp ? *dp : (char)s[i];
    }
  }
  *o = '\0';
  *v = strtod(buf, NULL);
  free(heap);
  return 0;
}

/* Validates and converts the number at p. Short numbers
 * take an exact fast path: a mantissa below 10^15 times or divided by an
 * exactly representable power of ten is one correctly rounded IEEE
 * operation (Clinger), so it equals strtod's answer. */
static cp_t parse_number(parser_t *ps, cp_t p) {
  cp_t start = p, end = ps->end;
  int neg = 0, nd = 0, inexact = 0;
  uint64_t m = 0;
  long e10 = 0, ex = 0;
  if (*p == '-') neg = 1, p++;
  if (p >= end) return fail(ps, JSON_ENUMBER, p);
  if (*p == '0') {
    p++;
    if (p < end && is_digit(*p)) return fail(ps, JSON_ENUMBER, p);
  } else if (is_digit(*p)) {
    do {
      if (nd < 19)
        m = m * 10 + (*p - '0'), nd++;
      else
        inexact = 1;
      p++;
    } while (p < end && is_digit(*p));
  } else {
    return fail(ps, JSON_ENUMBER, p);
  }
  if (p < end && *p == '.') {
    p++;
    if (p >= end || !is_digit(*p)) return fail(ps, JSON_ENUMBER, p);
    do {
      if (m == 0 && *p == '0') {
        e10--; /* leading zeros of 0.000x only scale */
      } else if (nd < 19) {
        m = m * 10 + (*p - '0'), nd++, e10--;
      } else {
        inexact = 1;
      }
      p++;
    } while (p < end && is_digit(*p));
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    int eneg = 0;
    p++;
    if (p < end && (*p == '+' || *p == '-')) eneg = *p == '-', p++;
    if (p >= end || !is_digit(*p)) return fail(ps, JSON_ENUMBER, p);
    do {
      if (ex < 100000) ex = ex * 10 + (*p - '0');
      p++;
    } while (p < end && is_digit(*p));
    if (eneg) ex = -ex;
  }
  /* Numbers are converted even when only validating, because a number
   * too large for a double is an error. */

  double v;
  long e = e10 + ex;
  int fast = 0;
  if (!inexact) {
    if (m == 0) {
      v = 0.0, fast = 1;
    } else if (nd <= 18 && e == 0) {
      v = (double)(int64_t)m, fast = 1; /* int64 -> double rounds right */
#if FLT_EVAL_METHOD == 0
    } else if (nd <= 15 && e > 0 && e <= 22) {
      v = (double)m * pow10_exact[e], fast = 1;
    } else if (nd <= 15 && e < 0 && e >= -22) {
      v = (double)m / pow10_exact[-e], fast = 1;
#endif
    }
  }
  if (fast) {
    if (neg) v = -v;
  } else {
    if (slow_strtod(ps, start, (size_t)(p - start), &v))
      return fail(ps, JSON_ESINK, start);
    if (isinf(v)) return fail(ps, JSON_ERANGE, start);
  }
  if (ps->sink && ps->sink->scalar(ps->ud, JSON_NUMBER, NULL, 0, v))
    return fail(ps, JSON_ESINK, start);
  return p;
}

static cp_t parse_literal(parser_t *ps, cp_t p) {
  static const char *const words[] = {"null", "false", "true"};
  int type = *p == 'n' ? JSON_NULL : *p == 'f' ? JSON_FALSE : JSON_TRUE;
  const char *w = words[type];
  size_t n = strlen(w), have = (size_t)(ps->end - p);
  if (have < n) {
    /* A correct prefix cut short by the end of the input is an early
     * end, not a misspelling. */
    if (memcmp(p, w, have) == 0) return fail(ps, JSON_EEND, ps->end);
    return fail(ps, JSON_ELITERAL, p);
  }
  if (memcmp(p, w, n) != 0) return fail(ps, JSON_ELITERAL, p);
  if (ps->sink && ps->sink->scalar(ps->ud, type, NULL, 0, 0))
    return fail(ps, JSON_ESINK, p);
  return p + n;
}

/* An iterative parser: nesting costs one byte of kinds[] per level, not C
 * stack, and max_depth is checked before anything is opened. */
int json_parse(const char *s, size_t len, int max_depth,
               const json_sink_t *sink, void *ud, json_error_t *err) {
  unsigned char kinds[JSON_DEPTH_LIMIT];
  parser_t ps = {(cp_t)s, (cp_t)s + len, sink, ud, err};
  cp_t p = (cp_t)s, end = ps.end;
  int depth = 0;
  if (max_depth > JSON_DEPTH_LIMIT) max_depth = JSON_DEPTH_LIMIT;
  err->code = JSON_OK;
  err->pos = 0;

value:
  p = skip_ws(p, end);
  if (p >= end) goto eof;
  switch (*p) {
  case '{':
  case '[': {
    int type = *p == '{' ? JSON_OBJECT : JSON_ARRAY;
    if (depth >= max_depth) return failc(&ps, JSON_EDEPTH, p);
    kinds[depth++] = (unsigned char)type;
    if (sink && sink->open(ud, type)) return failc(&ps, JSON_ESINK, p);
    p = skip_ws(p + 1, end);
    if (p < end && *p == (type == JSON_OBJECT ? '}' : ']')) {
      p++;
      goto closed;
    }
    if (type == JSON_OBJECT) goto key;
    goto value;
  }
  case '"':
    p = parse_string(&ps, p, 0);
    break;
  case '-':
  case '0':
  case '1':
  case '2':
  case '3':
  case '4':
  case '5':
  case '6':
  case '7':
  case '8':
  case '9':
    p = parse_number(&ps, p);
    break;
  case 'n':
  case 't':
  case 'f':
    p = parse_literal(&ps, p);
    break;
  default:
    return failc(&ps, JSON_EVALUE, p);
  }
  if (!p) return err->code;
  goto next;

closed: /* p is just past the bracket that closed kinds[depth - 1] */
  depth--;
  if (sink && sink->close(ud, kinds[depth]))
    return failc(&ps, JSON_ESINK, p - 1);

next:
  p = skip_ws(p, end);
  if (depth == 0) {
    if (p != end) return failc(&ps, JSON_ETRAILING, p);
    return JSON_OK;
  }
  if (p >= end) goto eof;
  if (kinds[depth - 1] == JSON_ARRAY) {
    if (*p == ',') {
      p++;
      goto value;
    }
    if (*p == ']') {
      p++;
      goto closed;
    }
    return failc(&ps, JSON_EARRAY, p);
  }
  if (*p == '}') {
    p++;
    goto closed;
  }
  if (*p != ',') return failc(&ps, JSON_EOBJECT, p);
  p = skip_ws(p + 1, end);

key:
  if (p >= end) goto eof;
  if (*p != '"') return failc(&ps, JSON_EKEY, p);
  p = parse_string(&ps, p, 1);
  if (!p) return err->code;
  p = skip_ws(p, end);
  if (p >= end) goto eof;
  if (*p != ':') return failc(&ps, JSON_ECOLON, p);
  p++;
  goto value;

eof:
  return failc(&ps, JSON_EEND, end);
}

/* -- Encoders -- */

/* Escaped length of each ASCII byte: controls without a short escape
 * become \u00XX. */
static inline size_t esc_len(unsigned c) {
  if (c >= 0x20) return c == '"' || c == '\\' ? 2 : 1;
  return c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t' ? 2 : 6;
}

size_t json_escape_len(const char *s, size_t len, size_t *bad) {
  cp_t p = (cp_t)s, end = p + len;
  size_t n = 2 + len;
  while (p < end) {
    while (end - p >= 8) {
      uint64_t x;
      memcpy(&x, p, 8);
      if (swar_special(x)) break;
      p += 8;
    }
    if (p >= end) break;
    if (end - p < 8) {
      /* A short tail (most keys are one) in one test, padded with
       * spaces. */
      uint64_t x = ONES * ' ';
      memcpy(&x, p, (size_t)(end - p));
      if (!swar_special(x)) break;
    }
    unsigned c = *p;
    if (c < 0x80) {
      n += esc_len(c) - 1;
      p++;
    } else {
      size_t k = json_utf8_len(p, (size_t)(end - p));
      if (!k) {
        *bad = (size_t)(p - (cp_t)s);
        return 0;
      }
      p += k;
    }
  }
  return n;
}

size_t json_escape(char *out, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  cp_t p = (cp_t)s, end = p + len;
  char *o = out;
  *o++ = '"';
  while (p < end) {
    cp_t run = p;
    while (end - p >= 8) {
      uint64_t x;
      memcpy(&x, p, 8);
      if (swar_special(x)) break;
      p += 8;
    }
    /* Valid UTF-8 is copied as is; json_escape_len has vetted it. */
    while (p < end && (is_plain(*p) || *p >= 0x80)) p++;
    memcpy(o, run, (size_t)(p - run));
    o += p - run;
    if (p >= end) break;
    unsigned c = *p++;
    *o++ = '\\';
    switch (c) {
    case '"':
      *o++ = '"';
      break;
    case '\\':
      *o++ = '\\';
      break;
    case '\b':
      *o++ = 'b';
      break;
    case '\f':
      *o++ = 'f';
      break;
    case '\n':
      *o++ = 'n';
      break;
    case '\r':
      *o++ = 'r';
      break;
    case '\t':
      *o++ = 't';
      break;
    default:
      *o++ = 'u', *o++ = '0', *o++ = '0';
      *o++ = hex[c >> 4], *o++ = hex[c & 15];
    }
  }
  *o++ = '"';
  return (size_t)(o - out);
}

size_t json_fmt_number(char *out, double x) {
  /* Integers that fit in an int32, the common case, first: no libm. */
  if (x >= -2147483647.0 && x <= 2147483647.0) {
    int32_t i = (int32_t)x;
    if ((double)i == x && i != 0) {
      char tmp[12], *t = tmp + sizeof tmp;
      uint32_t u = i < 0 ? (uint32_t)-i : (uint32_t)i;
      do *--t = (char)('0' + u % 10), u /= 10;
      while (u);
      if (i < 0) *--t = '-';
      size_t n = (size_t)(tmp + sizeof tmp - t);
      memcpy(out, t, n);
      out[n] = '\0';
      return n;
    }
  }
  if (!isfinite(x)) return 0;
  if (x == 0) {
    /* -0 is valid JSON and keeps the sign through a round trip. */
    if (signbit(x)) return memcpy(out, "-0", 3), 2;
    return memcpy(out, "0", 2), 1;
  }
  if (fabs(x) <= 9007199254740992.0 && x == floor(x)) {
    char tmp[24], *t = tmp + sizeof tmp;
    uint64_t u = (uint64_t)fabs(x);
    char *o = out;
    do *--t = (char)('0' + u % 10), u /= 10;
    while (u);
    if (x < 0) *o++ = '-';
    size_t n = (size_t)(tmp + sizeof tmp - t);
    memcpy(o, t, n);
    o[n] = '\0';
    return (size_t)(o - out) + n;
  }
  int n = 0;
  /* 15 digits always read back when a normal double has a 15-digit form
   * (DBL_DIG), so that is the shortest; subnormals carry fewer digits
   * and may need as few as one ("5e-324"). */
  for (int prec = fabs(x) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
    n = snprintf(out, JSON_NUMBER_BUF, "%.*g", prec, x);
    if (prec == 17 || strtod(out, NULL) == x) break;
  }
  /* printf follows LC_NUMERIC; JSON always wants '.'. */
  const char *dp = localeconv()->decimal_point;
  if (dp && *dp && strcmp(dp, ".") != 0) {
    char *at = strstr(out, dp);
    if (at) {
      size_t dpl = strlen(dp);
      *at = '.';
      memmove(at + 1, at + dpl, (size_t)n - (size_t)(at - out) - dpl + 1);
      n -= (int)dpl - 1;
    }
  }
  return (size_t)n;
}
