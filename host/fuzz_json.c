/* SPDX-License-Identifier: MIT */
/* fuzz_json.c -- libFuzzer target for json_parse.c: the strict parser
 * checked against cJSON as a reference, and the string and number
 * encoders checked by round trips through the parser. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "json_parse.h"

/* cJSON refuses numbers longer than its 63-byte buffer and nesting beyond
 * 1000, both of which are valid JSON; inputs that go there are only
 * compared one way. */
#define CJSON_NUMBER_MAX 60
#define CJSON_DEPTH_SAFE 900

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_json: %s\n", what);
    abort();
  }
}

/* -- A sink that builds a cJSON tree and checks the encoders -- */

typedef struct tree_s {
  cJSON *root;
  cJSON *stack[JSON_DEPTH_LIMIT + 1];
  int depth, max_depth;
  char *key;   /* pending object key, NUL-terminated copy */
  int has_nul; /* a string held NUL, which cJSON cannot represent */
  char *scratch;
  size_t scratch_cap;
} tree_t;

/* Captures the single scalar of a re-parsed encoder output. */
typedef struct capture_s {
  int type, count;
  double num;
  char *s, *scratch;
  size_t len;
} capture_t;

static int cap_scalar(void *ud, int type, const char *s, size_t len,
                      double num) {
  capture_t *c = ud;
  c->type = type, c->num = num, c->count++;
  if (type == JSON_STRING) {
    c->s = malloc(len + 1);
    memcpy(c->s, s, len);
    c->len = len;
  }
  return 0;
}

static int cap_other(void *ud, int type) {
  (void)ud, (void)type;
  return -1; /* an encoder never produces a container */
}

static int cap_key(void *ud, const char *s, size_t len) {
  (void)ud, (void)s, (void)len;
  return -1;
}

static char *cap_scratch(void *ud, size_t need) {
  capture_t *c = ud;
  free(c->scratch);
  c->scratch = malloc(need);
  return c->scratch;
}

static const json_sink_t cap_sink = {cap_scalar, cap_other, cap_key, cap_other,
                                     cap_scratch};

/* json_escape must produce a literal that parses back to the same bytes. */
static void check_escape(const char *s, size_t len) {
  size_t bad = 0, n = json_escape_len(s, len, &bad);
  check(n >= len + 2, "parsed string is not valid UTF-8 for the encoder");
  char *out = malloc(n);
  check(json_escape(out, s, len) == n, "json_escape_len disagrees");
  capture_t c = {0};
  json_error_t err;
  check(json_parse(out, n, 1, &cap_sink, &c, &err) == JSON_OK,
        "escaped string does not parse");
  check(c.count == 1 && c.type == JSON_STRING && c.len == len &&
            memcmp(c.s, s, len) == 0,
        "escaped string does not round-trip");
  free(c.s);
  free(c.scratch);
  free(out);
}

/* json_fmt_number must give the same double back, bit for bit. */
static void check_number(double x) {
  char buf[JSON_NUMBER_BUF];
  size_t n = json_fmt_number(buf, x);
  if (!isfinite(x)) {
    check(n == 0, "a non-finite number was formatted");
    return;
  }
  check(n > 0 && n < JSON_NUMBER_BUF, "number not formatted");
  capture_t c = {0};
  json_error_t err;
  check(json_parse(buf, n, 1, &cap_sink, &c, &err) == JSON_OK,
        "formatted number does not parse");
  check(c.count == 1 && c.type == JSON_NUMBER, "formatted number is odd");
  check(memcmp(&c.num, &x, sizeof x) == 0, "number does not round-trip");
  free(c.scratch);
}

static int tree_attach(tree_t *t, cJSON *item) {
  if (t->depth == 0) {
    t->root = item;
    return 0;
  }
  cJSON *parent = t->stack[t->depth - 1];
  if (cJSON_IsObject(parent)) {
    cJSON_AddItemToObject(parent, t->key, item);
    free(t->key);
    t->key = NULL;
  } else {
    cJSON_AddItemToArray(parent, item);
  }
  return 0;
}

static char *cstring(tree_t *t, const char *s, size_t len) {
  if (memchr(s, 0, len)) t->has_nul = 1;
  char *c = malloc(len + 1);
  memcpy(c, s, len);
  c[len] = '\0';
  return c;
}

static int tree_scalar(void *ud, int type, const char *s, size_t len,
                       double num) {
  tree_t *t = ud;
  cJSON *item;
  switch (type) {
  case JSON_NULL:
    item = cJSON_CreateNull();
    break;
  case JSON_FALSE:
    item = cJSON_CreateFalse();
    break;
  case JSON_TRUE:
    item = cJSON_CreateTrue();
    break;
  case JSON_NUMBER:
    check_number(num);
    item = cJSON_CreateNumber(num);
    break;
  default: {
    check_escape(s, len);
    char *c = cstring(t, s, len);
    item = cJSON_CreateString(c);
    free(c);
  }
  }
  return tree_attach(t, item);
}

/* Containers are attached when opened, so a failed parse leaves one tree
 * under root to free. */
static int tree_open(void *ud, int type) {
  tree_t *t = ud;
  cJSON *item = type == JSON_ARRAY ? cJSON_CreateArray() : cJSON_CreateObject();
  tree_attach(t, item);
  t->stack[t->depth++] = item;
  if (t->depth > t->max_depth) t->max_depth = t->depth;
  return 0;
}

static int tree_key(void *ud, const char *s, size_t len) {
  tree_t *t = ud;
  check_escape(s, len);
  free(t->key);
  t->key = cstring(t, s, len);
  return 0;
}

static int tree_close(void *ud, int type) {
  tree_t *t = ud;
  (void)type;
  t->depth--;
  return 0;
}

static char *tree_scratch(void *ud, size_t need) {
  tree_t *t = ud;
  if (need > t->scratch_cap) {
    free(t->scratch);
    t->scratch = malloc(need);
    t->scratch_cap = need;
  }
  return t->scratch;
}

static const json_sink_t tree_sink = {tree_scalar, tree_open, tree_key,
                                      tree_close, tree_scratch};

static void tree_free(tree_t *t) {
  cJSON_Delete(t->root);
  free(t->key);
  free(t->scratch);
}

/* Structural equality, exact unless loose: cJSON prints a double with 15
 * digits whenever that reads back within an epsilon, so its output may
 * be off by an ulp or two (the reason json.c prints numbers itself). */
static int same_tree(const cJSON *a, const cJSON *b, int loose) {
  if ((a->type & 0xFF) != (b->type & 0xFF)) return 0;
  if (cJSON_IsNumber(a)) {
    double x = a->valuedouble, y = b->valuedouble;
    if (!loose) return x == y;
    return fabs(x - y) <= fmax(fabs(x), fabs(y)) * 4 * DBL_EPSILON;
  }
  if (cJSON_IsString(a)) return strcmp(a->valuestring, b->valuestring) == 0;
  if (!cJSON_IsArray(a) && !cJSON_IsObject(a)) return 1;
  const cJSON *x = a->child, *y = b->child;
  for (; x && y; x = x->next, y = y->next) {
    if (cJSON_IsObject(a) && strcmp(x->string, y->string) != 0) return 0;
    if (!same_tree(x, y, loose)) return 0;
  }
  return !x && !y;
}

static int long_number(const uint8_t *d, size_t n) {
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    int numeric = (d[i] >= '0' && d[i] <= '9') || d[i] == '.' || d[i] == 'e' ||
                  d[i] == 'E' || d[i] == '+' || d[i] == '-';
    run = numeric ? run + 1 : 0;
    if (run > CJSON_NUMBER_MAX) return 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size >= sizeof(double)) {
    double x;
    memcpy(&x, data, sizeof x);
    check_number(x);
  }

  tree_t *t = calloc(1, sizeof *t);
  json_error_t err, verr;
  int rc = json_parse((const char *)data, size, JSON_DEPTH_DEFAULT, &tree_sink,
                      t, &err);
  /* Validation alone must reach the same verdict at the same byte. */
  int vrc = json_parse((const char *)data, size, JSON_DEPTH_DEFAULT, NULL, NULL,
                       &verr);
  check(rc == vrc && err.pos == verr.pos, "validate-only parse disagrees");
  check(rc != JSON_OK || t->depth == 0, "unbalanced containers");
  check(rc == JSON_OK || (err.pos >= 1 && err.pos <= size + 1),
        "error position out of range");

  if (rc == JSON_OK && !t->has_nul && t->max_depth < CJSON_DEPTH_SAFE &&
      !long_number(data, size)) {
    /* Whatever the strict parser accepts, the lenient reference must
     * accept too, with the same values. */
    char *z = malloc(size + 1);
    memcpy(z, data, size);
    z[size] = '\0';
    cJSON *ref = cJSON_ParseWithLengthOpts(z, size + 1, NULL, 1);
    check(ref != NULL, "accepted text that cJSON rejects");
    check(same_tree(t->root, ref, 0), "values differ from cJSON's");

    /* cJSON's own output is JSON, so it must parse back the same. */
    char *printed = cJSON_PrintUnformatted(ref);
    tree_t *u = calloc(1, sizeof *u);
    check(json_parse(printed, strlen(printed), JSON_DEPTH_DEFAULT, &tree_sink,
                     u, &err) == JSON_OK,
          "cannot parse cJSON's output");
    check(same_tree(u->root, ref, 1), "cJSON's output parses differently");
    tree_free(u);
    free(u);
    free(printed);
    cJSON_Delete(ref);
    free(z);
  }
  tree_free(t);
  free(t);
  return 0;
}
