/* SPDX-License-Identifier: MIT */
/* json_parse.h -- strict RFC 8259 JSON parsing and the string and number
 * encoders, in plain C (no Lua) so that host/json.c and the fuzzer share
 * exactly the same code. */
#ifndef ORRERY_JSON_PARSE_H
#define ORRERY_JSON_PARSE_H

#include <stddef.h>

#include "errors.h"

/* Nesting can never exceed this: every level costs Lua stack slots in
 * json.c, and LuaJIT allows a C function 8000 of them. */
#define JSON_DEPTH_LIMIT 2000
#define JSON_DEPTH_DEFAULT 1000

/* Room json_fmt_number needs: "-1.2345678901234567e-308" plus slack. */
#define JSON_NUMBER_BUF 40

enum {
  JSON_NULL = 0,
  JSON_FALSE,
  JSON_TRUE,
  JSON_NUMBER,
  JSON_STRING,
  JSON_ARRAY,
  JSON_OBJECT
};

/* Error codes JSON_OK, JSON_EEND, ...: the list is in errors.h;
 * json_strerror gives the stable message for each. */

/* The parser reports each value to a sink. Strings arrive decoded, as a
 * pointer and a length (they may contain NUL), valid only during the
 * call. A callback returns 0 to go on, anything else to stop the parse
 * with JSON_ESINK. A container's values arrive between its open and
 * close; inside an object each value is preceded by its key. */
typedef struct json_sink_s {
  int (*scalar)(void *ud, int type, const char *s, size_t len, double num);
  int (*open)(void *ud, int type);
  int (*key)(void *ud, const char *s, size_t len);
  int (*close)(void *ud, int type);
  /* Memory of at least need bytes for a string with escapes or a long
   * number; it may be reused by the next call. Returns NULL on failure.
   * With a sink the parser itself never allocates, so a callback may
   * longjmp out (a Lua error) without leaking. */
  char *(*scratch)(void *ud, size_t need);
} json_sink_t;

typedef struct json_error_s {
  int code;
  size_t pos; /* 1-based byte offset of the problem; len + 1 at the end */
} json_error_t;

/* Parses s[0..len) strictly. With sink NULL it only validates. Returns 0
 * or an error code, also stored with its position in *err. */
int json_parse(const char *s, size_t len, int max_depth,
               const json_sink_t *sink, void *ud, json_error_t *err);

const char *json_strerror(int code);

/* Length of the UTF-8 sequence at s[0..len), 0 if it is malformed
 * (overlong, a surrogate, above U+10FFFF or truncated). */
size_t json_utf8_len(const unsigned char *s, size_t len);

/* Size of s as a quoted JSON string (quotes included). Returns 0 and
 * sets *bad to the 0-based offset of the first malformed UTF-8 sequence
 * if there is one. */
size_t json_escape_len(const char *s, size_t len, size_t *bad);

/* Writes s as a quoted JSON string into out, which has room for
 * json_escape_len(s) bytes; returns the number of bytes written. */
size_t json_escape(char *out, const char *s, size_t len);

/* Writes x as a JSON number into out (JSON_NUMBER_BUF bytes) and returns
 * its length, or 0 if x is NaN or infinite. Integral values with
 * |x| <= 2^53 print as integers ("-0" for negative zero); others print
 * with the fewest of 15, 16 or 17 significant digits that read back as
 * the same double. */
size_t json_fmt_number(char *out, double x);

#endif
