/* SPDX-License-Identifier: MIT */
/* json.c -- orrery.json.core: decode JSON text straight into Lua values
 * (strict parsing in json_parse.c) and encode Lua values as JSON. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "json_parse.h"

#define FN_DECODE "orrery.json.decode"
#define FN_ENCODE "orrery.json.encode"

/* Upvalues of encode and decode: the shared marker metatables. */
#define UV_ARRAY_MT lua_upvalueindex(1)
#define UV_OBJECT_MT lua_upvalueindex(2)

/* Arrays may have holes (written as null) but not many more holes than
 * values, so that json.array{[1e9] = 1} raises instead of writing a
 * gigabyte of nulls. */
#define SPARSE_RATIO 2
#define SPARSE_SLACK 16

/* The encoder's error messages, E_NAN, E_INF, ...: printf formats raised
 * as "orrery.json.encode: <message> at <path>" (the list is in errors.h,
 * with the decoder's, whose messages json_parse.c gives). */
static const char *const json_msg[] = {
#define JSON_ENC_MSG(name, fmt) [E_##name] = fmt,
    JSON_ENCDEF(JSON_ENC_MSG)
#undef JSON_ENC_MSG
};

/* -- Arguments and options -- */

typedef struct opts_s {
  int max_depth;
  int sort_keys;
  const char *indent; /* NULL: compact output */
  size_t indent_len;
} opts_t;

static int arg_error(lua_State *L, int narg, const char *fname,
                     const char *msg) {
  return luaL_error(L, "bad argument #%d to '%s' (%s)", narg, fname, msg);
}

static int type_error(lua_State *L, int narg, const char *fname,
                      const char *expected) {
  const char *msg = lua_pushfstring(L, "%s expected, got %s", expected,
                                    luaL_typename(L, narg));
  return arg_error(L, narg, fname, msg);
}

/* Reads the options table at idx. Unknown keys raise: a misspelt option
 * that is silently ignored is a bug that surfaces much later. */
static void read_opts(lua_State *L, int idx, const char *fname, int encode,
                      opts_t *o) {
  o->max_depth = JSON_DEPTH_DEFAULT;
  o->sort_keys = 0;
  o->indent = NULL;
  o->indent_len = 0;
  int t = lua_type(L, idx);
  if (t == LUA_TNONE || t == LUA_TNIL) return;
  if (t != LUA_TTABLE) type_error(L, idx, fname, "table");
  int pretty = -1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      arg_error(L, idx, fname, "option names must be strings");
    const char *k = lua_tostring(L, -2);
    int vt = lua_type(L, -1);
    if (strcmp(k, "max_depth") == 0) {
      double d = lua_tonumber(L, -1);
      if (vt != LUA_TNUMBER || d != floor(d) || d < 1 || d > JSON_DEPTH_LIMIT)
        arg_error(L, idx, fname,
                  lua_pushfstring(L,
                                  "max_depth must be an integer from 1 to %d",
                                  JSON_DEPTH_LIMIT));
      o->max_depth = (int)d;
    } else if (encode && strcmp(k, "sort_keys") == 0) {
      if (vt != LUA_TBOOLEAN)
        arg_error(L, idx, fname, "sort_keys must be a boolean");
      o->sort_keys = lua_toboolean(L, -1);
    } else if (encode && strcmp(k, "pretty") == 0) {
      if (vt != LUA_TBOOLEAN)
        arg_error(L, idx, fname, "pretty must be a boolean");
      pretty = lua_toboolean(L, -1);
    } else if (encode && strcmp(k, "indent") == 0) {
      size_t n = 0;
      const char *s = vt == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
      /* Anything but blanks would make the output invalid JSON. */
      if (!s || strspn(s, " \t") != n)
        arg_error(L, idx, fname, "indent must be a string of spaces and tabs");
      o->indent = s, o->indent_len = n;
    } else {
      arg_error(L, idx, fname, lua_pushfstring(L, "unknown option '%s'", k));
    }
    lua_pop(L, 1);
  }
  if (pretty == 1 && !o->indent) o->indent = "  ", o->indent_len = 2;
  if (pretty == 0) o->indent = NULL, o->indent_len = 0;
}

/* -- Decoding -- */

/* Size hints are kept for the shallow levels, where the many similar
 * objects of a typical document live, and capped so that one long array
 * does not make every later one preallocate. */
#define HINT_DEPTH 32
#define HINT_MAX 32

/* Decoder state. The Lua stack holds, per open container, the table and
 * (inside an object) the pending key; cnt[] says which is which. */
typedef struct dec_s {
  lua_State *L;
  int depth;
  int scratch_slot; /* stack slot anchoring the scratch userdata */
  int array_mt;     /* stack slot of the array marker */
  const char *err;  /* why a sink callback failed */
  char *scratch;
  size_t scratch_cap;
  /* cnt[d] is the element count of the array at depth d, or -1 - n for
   * an object with n members (values go to the pending key). */
  int32_t cnt[JSON_DEPTH_LIMIT + 1];
  /* hint[d][type == JSON_ARRAY]: the size of the last container closed at
   * depth d, to presize the next one: rows of an array tend to look
   * alike, and growing a table rehashes it several times. */
  int32_t hint[HINT_DEPTH][2];
  char local[512];
} dec_t;

static int dec_attach(dec_t *d) {
  if (d->depth == 0) return 0; /* the top-level value stays on the stack */
  int32_t *c = &d->cnt[d->depth];
  if (*c < 0) {
    lua_rawset(d->L, -3);
    if (*c > INT32_MIN) --*c;
  } else {
    if (*c == INT32_MAX) return d->err = json_msg[E_ARRAY_LONG], -1;
    lua_rawseti(d->L, -2, ++*c);
  }
  return 0;
}

static int dec_scalar(void *ud, int type, const char *s, size_t len,
                      double num) {
  dec_t *d = ud;
  lua_State *L = d->L;
  switch (type) {
  case JSON_NULL:
    lua_pushlightuserdata(L, NULL);
    break;
  case JSON_FALSE:
    lua_pushboolean(L, 0);
    break;
  case JSON_TRUE:
    lua_pushboolean(L, 1);
    break;
  case JSON_NUMBER:
    lua_pushnumber(L, num);
    break;
  default:
    lua_pushlstring(L, s, len);
    break;
  }
  return dec_attach(d);
}

static int dec_open(void *ud, int type) {
  dec_t *d = ud;
  lua_State *L = d->L;
  /* Room for this table, a key, a value and a scratch userdata. The
   * depth limit keeps this far below LuaJIT's 8000 slots. */
  if (!lua_checkstack(L, 4)) return d->err = json_msg[E_STACK], -1;
  int a = type == JSON_ARRAY, h = 0;
  if (d->depth < HINT_DEPTH) h = d->hint[d->depth][a];
  lua_createtable(L, a ? h : 0, a ? 0 : h);
  if (a) {
    /* The marker keeps an empty array an array when it is re-encoded. */
    lua_pushvalue(L, d->array_mt);
    lua_setmetatable(L, -2);
  }
  d->cnt[++d->depth] = type == JSON_ARRAY ? 0 : -1;
  return 0;
}

static int dec_key(void *ud, const char *s, size_t len) {
  dec_t *d = ud;
  lua_pushlstring(d->L, s, len);
  return 0;
}

static int dec_close(void *ud, int type) {
  dec_t *d = ud;
  int a = type == JSON_ARRAY;
  if (d->depth - 1 < HINT_DEPTH) {
    int32_t c = d->cnt[d->depth], n = a ? c : -1 - c;
    d->hint[d->depth - 1][a] = n < HINT_MAX ? n : HINT_MAX;
  }
  d->depth--;
  return dec_attach(d);
}

/* Scratch memory is a userdata so that a Lua error (out of memory inside
 * lua_pushlstring, say) cannot leak it. */
static char *dec_scratch(void *ud, size_t need) {
  dec_t *d = ud;
  if (need <= sizeof d->local) return d->local;
  if (need > d->scratch_cap) {
    size_t cap = d->scratch_cap * 2;
    if (cap < need) cap = need;
    d->scratch = lua_newuserdata(d->L, cap);
    d->scratch_cap = cap;
    lua_replace(d->L, d->scratch_slot);
  }
  return d->scratch;
}

static const json_sink_t dec_sink = {dec_scalar, dec_open, dec_key, dec_close,
                                     dec_scratch};

/* decode(text [, opts]) -> value | nil, err, pos */
static int l_decode(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) type_error(L, 1, FN_DECODE, "string");
  opts_t o;
  read_opts(L, 2, FN_DECODE, 0, &o);
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  lua_settop(L, 2);
  lua_pushnil(L); /* 3: scratch */
  lua_pushvalue(L, UV_ARRAY_MT);
  /* dec_t is a few kilobytes; it lives on the C stack only for the
   * duration of the call. */
  dec_t d;
  d.L = L;
  d.depth = 0;
  d.scratch_slot = 3;
  d.array_mt = 4;
  d.err = NULL;
  d.scratch = NULL;
  d.scratch_cap = 0;
  memset(d.hint, 0, sizeof d.hint);
  json_error_t err;
  if (json_parse(s, len, o.max_depth, &dec_sink, &d, &err) == JSON_OK) return 1;
  char msg[96];
  const char *what =
      err.code == JSON_ESINK && d.err ? d.err : json_strerror(err.code);
  snprintf(msg, sizeof msg, "%s at position %zu", what, err.pos);
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushnumber(L, (lua_Number)err.pos);
  return 3;
}

/* -- Encoding -- */

/* One open container: what path components and cycle checks need. */
typedef struct frame_s {
  const void *t; /* the table, for cycle detection */
  int key;       /* stack slot of the current key, 0 inside an array */
  double index;  /* the current index inside an array */
} frame_t;

#define LOCAL_FRAMES 32

typedef struct enc_s {
  lua_State *L;
  char *buf;
  size_t len, cap;
  int buf_slot, frames_slot;
  int array_mt, object_mt; /* stack slots of the markers */
  opts_t o;
  frame_t *fr;
  int fr_cap;
  frame_t fr_local[LOCAL_FRAMES];
  char local[1024];
} enc_t;

static void enc_value(enc_t *e, int idx, int depth);

/* Appends the Lua-style path component of frame f to b (size room). */
static size_t path_component(enc_t *e, const frame_t *f, char *b, size_t room) {
  lua_State *L = e->L;
  if (!f->key) return (size_t)snprintf(b, room, "[%.0f]", f->index);
  if (lua_type(L, f->key) == LUA_TNUMBER) {
    char num[JSON_NUMBER_BUF];
    if (!json_fmt_number(num, lua_tonumber(L, f->key))) strcpy(num, "?");
    return (size_t)snprintf(b, room, "[%s]", num);
  }
  size_t n;
  const char *k = lua_tolstring(L, f->key, &n);
  int ident = n > 0 && n <= 64 && !(k[0] >= '0' && k[0] <= '9');
  for (size_t i = 0; ident && i < n; i++)
    ident = (k[i] >= 'a' && k[i] <= 'z') || (k[i] >= 'A' && k[i] <= 'Z') ||
            (k[i] >= '0' && k[i] <= '9') || k[i] == '_';
  if (ident) return (size_t)snprintf(b, room, ".%s", k);
  /* Other keys print quoted; long or invalid ones are cut short. */
  char q[6 * 40 + 2];
  size_t bad, shown = n > 40 ? 40 : n;
  while (shown > 0 && !json_escape_len(k, shown, &bad)) shown = bad;
  q[json_escape(q, k, shown)] = '\0';
  return (size_t)snprintf(b, room, "[%s%s]", q, shown < n ? "..." : "");
}

/* Raises "orrery.json.encode: <message> at <path>" for the value nested
 * in the depth open containers. Deep paths keep their ends: the first
 * components say where in the document, the last ones which value. */
static int enc_fail(enc_t *e, int depth, int code, ...) {
  enum { HALF = 160 };
  char what[160], path[1024], comp[400], tail[HALF + 400];
  va_list ap;
  va_start(ap, code);
  vsnprintf(what, sizeof what, json_msg[code], ap);
  va_end(ap);
  size_t n = 1, t = 0;
  int i = 0;
  path[0] = '$';
  for (; i < depth && n < HALF; i++) {
    size_t c = path_component(e, &e->fr[i], comp, sizeof comp);
    if (c >= sizeof comp) c = sizeof comp - 1;
    memcpy(path + n, comp, c), n += c;
  }
  if (i < depth) {
    /* Collect components from the innermost outwards into tail. */
    size_t at = sizeof tail;
    int j = depth - 1;
    for (; j >= i && sizeof tail - at < HALF; j--) {
      size_t c = path_component(e, &e->fr[j], comp, sizeof comp);
      if (c >= sizeof comp) c = sizeof comp - 1;
      if (c > at) break;
      at -= c;
      memcpy(tail + at, comp, c);
    }
    if (j >= i) memcpy(path + n, "...", 3), n += 3;
    t = sizeof tail - at;
    memcpy(path + n, tail + at, t), n += t;
  }
  path[n] = '\0';
  return luaL_error(e->L, FN_ENCODE ": %s at %s", what, path);
}

static void enc_grow(enc_t *e, size_t need) {
  size_t cap = e->cap * 2;
  if (cap - e->len < need) cap = e->len + need;
  if (cap < e->len) luaL_error(e->L, FN_ENCODE ": out of memory");
  char *nb = lua_newuserdata(e->L, cap);
  memcpy(nb, e->buf, e->len);
  lua_replace(e->L, e->buf_slot); /* the old buffer becomes garbage */
  e->buf = nb;
  e->cap = cap;
}

static inline char *enc_reserve(enc_t *e, size_t need) {
  if (e->cap - e->len < need) enc_grow(e, need);
  return e->buf + e->len;
}

static inline void enc_put(enc_t *e, const char *s, size_t n) {
  memcpy(enc_reserve(e, n), s, n);
  e->len += n;
}

static inline void enc_char(enc_t *e, char c) {
  *enc_reserve(e, 1) = c;
  e->len++;
}

/* A newline and the indentation of level, in pretty mode. */
static void enc_newline(enc_t *e, int level) {
  if (!e->o.indent) return;
  char *o = enc_reserve(e, 1 + (size_t)level * e->o.indent_len);
  *o++ = '\n';
  for (int i = 0; i < level; i++, o += e->o.indent_len)
    memcpy(o, e->o.indent, e->o.indent_len);
  e->len += 1 + (size_t)level * e->o.indent_len;
}

static void enc_string(enc_t *e, const char *s, size_t len, int depth,
                       int is_key) {
  /* Short printable ASCII, the common case (keys, small values), needs no
   * escape: copied in one pass. Anything else takes the general path,
   * which writes over what this one left. */
  if (len <= 64) {
    char *o = enc_reserve(e, len + 2);
    size_t i = 0;
    for (; i < len; i++) {
      unsigned char c = (unsigned char)s[i];
      if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') break;
      o[i + 1] = (char)c;
    }
    if (i == len) {
      o[0] = o[len + 1] = '"';
      e->len += len + 2;
      return;
    }
  }
  size_t bad, n = json_escape_len(s, len, &bad);
  if (!n) enc_fail(e, depth, E_UTF8, is_key ? "key" : "string", bad + 1);
  e->len += json_escape(enc_reserve(e, n), s, len);
}

static void enc_number(enc_t *e, double x, int depth) {
  size_t n = json_fmt_number(enc_reserve(e, JSON_NUMBER_BUF), x);
  if (!n) enc_fail(e, depth, x != x ? E_NAN : x > 0 ? E_INF : E_NINF);
  e->len += n;
}

/* 0 for a plain table, JSON_ARRAY or JSON_OBJECT for a marked one: the
 * shared markers, or any metatable with __jsontype = "array"/"object". */
static int table_kind(enc_t *e, int idx) {
  lua_State *L = e->L;
  int kind = 0;
  if (!lua_getmetatable(L, idx)) return 0;
  if (lua_rawequal(L, -1, e->array_mt)) {
    kind = JSON_ARRAY;
  } else if (lua_rawequal(L, -1, e->object_mt)) {
    kind = JSON_OBJECT;
  } else {
    lua_pushliteral(L, "__jsontype");
    lua_rawget(L, -2);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    kind = strcmp(s, "array") == 0    ? JSON_ARRAY
           : strcmp(s, "object") == 0 ? JSON_OBJECT
                                      : 0;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return kind;
}

static int is_index(double k) {
  return k >= 1 && k <= 9007199254740992.0 && k == floor(k);
}

/* Length of the table at idx as an array, checking every key. A plain
 * table must hold exactly 1..n; a marked one may have holes. */
static size_t array_len(enc_t *e, int idx, int depth, int marked) {
  lua_State *L = e->L;
  double count = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int kt = lua_type(L, -1);
    double k = kt == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
    if (kt == LUA_TNUMBER && is_index(k)) {
      count++;
      if (k > max) max = k;
      continue;
    }
    if (!marked && kt == LUA_TSTRING) enc_fail(e, depth, E_MIXED);
    if (kt == LUA_TNUMBER) {
      char num[JSON_NUMBER_BUF];
      if (!json_fmt_number(num, k)) strcpy(num, k > 0 ? "inf" : "-inf");
      enc_fail(e, depth, E_NOT_INDEX, marked ? "array" : "number", num,
               marked ? "" : " (use json.object)");
    }
    enc_fail(e, depth, E_ARRAY_KEY_TYPE, luaL_typename(L, -1));
  }
  if (!marked && count != max) enc_fail(e, depth, E_SPARSE);
  if (marked && max > count * SPARSE_RATIO + SPARSE_SLACK)
    enc_fail(e, depth, E_TOO_SPARSE, max, count);
  return (size_t)max;
}

static void enc_array(enc_t *e, int idx, int depth, size_t n) {
  lua_State *L = e->L;
  enc_char(e, '[');
  for (size_t i = 1; i <= n; i++) {
    if (i > 1) enc_char(e, ',');
    enc_newline(e, depth + 1);
    e->fr[depth].index = (double)i;
    lua_rawgeti(L, idx, (int)i);
    enc_value(e, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
  if (n) enc_newline(e, depth);
  enc_char(e, ']');
}

/* Checks the key at slot k of the object at idx and returns its name: a
 * string key as is, a number key (allowed in marked objects) in number
 * syntax, written into num. A number key whose name is also a string key
 * of the table would give the output a duplicate name, so it raises. */
static const char *object_key(enc_t *e, int idx, int k, int depth, int marked,
                              char *num, size_t *len) {
  lua_State *L = e->L;
  int kt = lua_type(L, k);
  if (kt == LUA_TSTRING) return lua_tolstring(L, k, len);
  if (kt != LUA_TNUMBER) enc_fail(e, depth, E_KEY_TYPE, luaL_typename(L, k));
  if (!marked) enc_fail(e, depth, E_MIXED);
  *len = json_fmt_number(num, lua_tonumber(L, k));
  if (!*len) enc_fail(e, depth, E_INF_KEY);
  lua_pushlstring(L, num, *len);
  lua_rawget(L, idx);
  if (!lua_isnil(L, -1)) enc_fail(e, depth, E_DUP_KEY, num);
  lua_pop(L, 1);
  return num;
}

static void enc_member(enc_t *e, int k, const char *name, size_t len, int depth,
                       int first) {
  if (!first) enc_char(e, ',');
  enc_newline(e, depth + 1);
  enc_string(e, name, len, depth, 1);
  if (e->o.indent)
    enc_put(e, ": ", 2);
  else
    enc_char(e, ':');
  e->fr[depth].key = k;
  enc_value(e, k + 1, depth + 1);
  e->fr[depth].key = 0;
}

/* Keys in sort_keys mode: name points into the Lua string (kept alive by
 * the table) or, for a number key, at num. */
typedef struct skey_s {
  const char *name;
  size_t len;
  double num_key;
  int is_num;
  char num[JSON_NUMBER_BUF];
} skey_t;

static int skey_cmp(const void *a, const void *b) {
  const skey_t *x = a, *y = b;
  const char *xs = x->is_num ? x->num : x->name;
  const char *ys = y->is_num ? y->num : y->name;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(xs, ys, n);
  if (c) return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

/* Members in byte order of their names, so that equal tables always give
 * equal text. */
static size_t enc_sorted(enc_t *e, int idx, int depth, int marked) {
  lua_State *L = e->L;
  size_t n = 0, i = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) lua_pop(L, 1), n++;
  skey_t *ks = lua_newuserdata(L, n * sizeof *ks);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    skey_t *s = &ks[i++];
    s->is_num = lua_type(L, -1) == LUA_TNUMBER;
    s->num_key = s->is_num ? lua_tonumber(L, -1) : 0;
    s->name = object_key(e, idx, lua_gettop(L), depth, marked, s->num, &s->len);
  }
  qsort(ks, n, sizeof *ks, skey_cmp);
  for (i = 0; i < n; i++) {
    skey_t *s = &ks[i];
    if (s->is_num)
      lua_pushnumber(L, s->num_key);
    else
      lua_pushlstring(L, s->name, s->len);
    lua_pushvalue(L, -1);
    lua_rawget(L, idx);
    enc_member(e, lua_gettop(L) - 1, s->is_num ? s->num : s->name, s->len,
               depth, i == 0);
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  return n;
}

static void enc_object(enc_t *e, int idx, int depth, int marked) {
  lua_State *L = e->L;
  enc_char(e, '{');
  int first = 1;
  if (e->o.sort_keys) {
    first = enc_sorted(e, idx, depth, marked) == 0;
  } else {
    lua_pushnil(L);
    int k = lua_gettop(L);
    while (lua_next(L, idx)) {
      char num[JSON_NUMBER_BUF];
      size_t len;
      const char *name = object_key(e, idx, k, depth, marked, num, &len);
      enc_member(e, k, name, len, depth, first);
      first = 0;
      lua_pop(L, 1);
    }
  }
  if (!first) enc_newline(e, depth);
  enc_char(e, '}');
}

static void enc_table(enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  if (depth >= e->o.max_depth) enc_fail(e, depth, E_DEPTH, e->o.max_depth);
  const void *t = lua_topointer(L, idx);
  for (int i = 0; i < depth; i++)
    if (e->fr[i].t == t) enc_fail(e, depth, E_CYCLE);
  /* Per level: a sort buffer, a key, a value and transient pushes; the
   * depth limit keeps the total below LuaJIT's 8000 slots. */
  if (!lua_checkstack(L, 8)) enc_fail(e, depth, E_STACK);
  if (depth >= e->fr_cap) {
    frame_t *fr = lua_newuserdata(L, (size_t)e->o.max_depth * sizeof *fr);
    memcpy(fr, e->fr, (size_t)e->fr_cap * sizeof *fr);
    lua_replace(L, e->frames_slot);
    e->fr = fr;
    e->fr_cap = e->o.max_depth;
  }
  e->fr[depth].t = t;
  e->fr[depth].key = 0;
  e->fr[depth].index = 0;
  int kind = table_kind(e, idx);
  if (kind == JSON_ARRAY) {
    enc_array(e, idx, depth, array_len(e, idx, depth, 1));
  } else if (kind == JSON_OBJECT) {
    enc_object(e, idx, depth, 1);
  } else {
    /* A plain table's first key says what it should be; array_len and
     * object_key then insist that every other key agrees. */
    lua_pushnil(L);
    if (!lua_next(L, idx)) {
      enc_put(e, "{}", 2);
      return;
    }
    int kt = lua_type(L, -2);
    lua_pop(L, 2);
    if (kt == LUA_TNUMBER)
      enc_array(e, idx, depth, array_len(e, idx, depth, 0));
    else
      enc_object(e, idx, depth, 0);
  }
}

static void enc_value(enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    enc_put(e, "null", 4);
    break;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx))
      enc_put(e, "true", 4);
    else
      enc_put(e, "false", 5);
    break;
  case LUA_TNUMBER:
    enc_number(e, lua_tonumber(L, idx), depth);
    break;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    enc_string(e, s, n, depth, 0);
    break;
  }
  case LUA_TTABLE:
    enc_table(e, idx, depth);
    break;
  case LUA_TLIGHTUSERDATA:
    if (!lua_touserdata(L, idx)) { /* json.null */
      enc_put(e, "null", 4);
      break;
    }
    /* fall through */
  default:
    enc_fail(e, depth, E_TYPE, luaL_typename(L, idx));
  }
}

/* The FFI side of the Lua encoder's fast path (lua/orrery/json.lua): its
 * output must match the C encoder's byte for byte. */

/* Size of s as a quoted JSON string, 0 if it is not valid UTF-8. */
size_t orrery_ffi_json_str_len(const char *s, size_t len) {
  /* Short printable ASCII, the common case (keys, small values), in one
   * plain pass. */
  if (len <= 32) {
    size_t i = 0;
    while (i < len) {
      unsigned char c = (unsigned char)s[i];
      if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') break;
      i++;
    }
    if (i == len) return len + 2;
  }
  size_t bad;
  return json_escape_len(s, len, &bad);
}

size_t orrery_ffi_json_escape(char *out, const char *s, size_t len) {
  return json_escape(out, s, len);
}

/* x in JSON syntax into out (JSON_NUMBER_BUF bytes); 0 for NaN and the
 * infinities. */
size_t orrery_ffi_json_number(char *out, double x) {
  return json_fmt_number(out, x);
}

/* encode(value [, opts]) -> text */
static int l_encode(lua_State *L) {
  if (lua_isnone(L, 1)) arg_error(L, 1, FN_ENCODE, "value expected");
  enc_t e;
  read_opts(L, 2, FN_ENCODE, 1, &e.o);
  lua_settop(L, 2);
  lua_pushnil(L); /* 3: output buffer once it outgrows e.local */
  lua_pushnil(L); /* 4: frames once they outgrow e.fr_local */
  lua_pushvalue(L, UV_ARRAY_MT);
  lua_pushvalue(L, UV_OBJECT_MT);
  e.L = L;
  e.buf = e.local;
  e.len = 0;
  e.cap = sizeof e.local;
  e.buf_slot = 3;
  e.frames_slot = 4;
  e.array_mt = 5;
  e.object_mt = 6;
  e.fr = e.fr_local;
  e.fr_cap = LOCAL_FRAMES;
  enc_value(&e, 1, 0);
  lua_pushlstring(L, e.buf, e.len);
  return 1;
}

int luaopen_orrery_json_core(lua_State *L) {
  lua_createtable(L, 0, 8);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__jsontype");
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "object");
  lua_setfield(L, -2, "__jsontype");
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_encode, 2);
  lua_setfield(L, -4, "encode");
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_decode, 2);
  lua_setfield(L, -4, "decode");
  lua_setfield(L, -3, "object_mt");
  lua_setfield(L, -2, "array_mt");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushinteger(L, JSON_DEPTH_DEFAULT);
  lua_setfield(L, -2, "max_depth");
  lua_pushinteger(L, JSON_DEPTH_LIMIT);
  lua_setfield(L, -2, "depth_limit");
  lua_pushinteger(L, JSON_NUMBER_BUF);
  lua_setfield(L, -2, "number_buf");
  lua_pushinteger(L, SPARSE_RATIO);
  lua_setfield(L, -2, "sparse_ratio");
  lua_pushinteger(L, SPARSE_SLACK);
  lua_setfield(L, -2, "sparse_slack");
  return 1;
}
