/* SPDX-License-Identifier: MIT */
/* sqlite.c -- orrery.sqlite.core: SQLite on libuv's thread pool, with
 * group commit.
 *
 * A handle owns one connection and a queue of operations. At most one job
 * runs on the pool per handle; while it runs, operations that coroutines
 * issue wait in the queue, and the next job takes all of them (up to
 * max_batch) and runs them in one transaction: one commit, one fsync, for
 * everyone who arrived meanwhile. Each operation is its own atomic unit
 * inside it: a single statement relies on SQLite's statement atomicity, a
 * batch of several runs inside a savepoint.
 *
 * An interactive transaction (db:transaction) is an operation too: when
 * its BEGIN reaches the head of the queue the handle is given to it, and
 * from then on only the transaction's statements run until its COMMIT or
 * ROLLBACK.
 *
 * Ownership: an operation is held by the queue (until its job has ended)
 * and by its Lua userdata (until collected or released); it is freed when
 * both let go. The handle is freed by the job that closes it, on the loop,
 * once its userdata is gone. Pool threads touch only the job, its
 * operations and the connection; never Lua, the scheduler or the queue. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"

#define DB_MT "orrery.sqlite.db"
#define OP_MT "orrery.sqlite.op"
#define CACHE_SLOTS 128 /* prepared statements kept per handle */

enum { V_NULL, V_INT, V_REAL, V_TEXT, V_BLOB };

typedef struct {
  uint8_t t;
  uint32_t len;
  union {
    int64_t i;
    double d;
    const char *s;
  } u;
} sq_val;

/* A growable byte buffer: the rows a statement returned, encoded on the
 * pool thread and decoded into Lua tables on the loop. */
typedef struct {
  char *p;
  size_t n, cap;
  int oom;
} sq_buf;

typedef struct {
  const char *sql;
  uint32_t sqllen;
  int np;
  sq_val *p;
  /* results */
  sq_buf out; /* ncols, names, then rows (see st_run) */
  int64_t nrows;
  int64_t changes, last_id;
} sq_stmt;

enum {
  OP_UNIT,     /* one exec or one batch */
  OP_OPEN,     /* opens the connection and applies the pragmas */
  OP_BEGIN,    /* starts the interactive transaction */
  OP_COMMIT,   /* ends it */
  OP_ROLLBACK, /* ends it */
  OP_CLOSE
};

typedef struct sq_db sq_db;
typedef struct sq_op sq_op;

struct sq_op {
  sq_op *next;
  sq_db *db;
  co_t *co; /* the coroutine waiting for it, or NULL */
  uint8_t kind;
  uint8_t batch; /* a db:batch (results as a list) */
  uint8_t done;
  uint8_t lua;   /* its userdata still holds it */
  uint8_t queue; /* the queue or a job still holds it */
  int nstmt;
  sq_stmt *st;
  char *err; /* malloc'd message, or NULL when it succeeded */
};

typedef struct {
  uint64_t hash;
  char *sql;
  sqlite3_stmt *stmt;
} sq_cached;

struct sq_db {
  host_t *host;
  sqlite3 *conn;
  char *path;
  int sync; /* PRAGMA synchronous: 0 off, 1 normal, 2 full */
  int wal;  /* journal_mode=WAL */
  int busy_ms;
  int readonly;
  int max_batch;
  sq_op *qhead, *qtail;   /* waiting operations */
  sq_op *txhead, *txtail; /* the open transaction's operations */
  int busy;               /* a job is on the pool */
  int in_tx;              /* an interactive transaction holds the handle */
  int closing;            /* a CLOSE was queued: new operations fail */
  int closed;             /* the connection is gone */
  int lua_gone;           /* the userdata was collected */
  uint64_t tx_id;         /* of the open (or last) transaction */
  uint64_t nbatches, nops;
  uint64_t work_ns; /* time the jobs took on the pool, summed */
  sq_cached cache[CACHE_SLOTS];
};

typedef struct {
  uv_work_t req;
  sq_db *db;
  sq_op *ops;  /* the operations it runs, linked through next */
  int kind;    /* OP_* of its operations */
  int in_tx;   /* they belong to the interactive transaction */
  uint64_t ns; /* how long job_work took (read after the job) */
} sq_job;

typedef struct {
  sq_db *db;
} db_ud;

typedef struct {
  sq_op *op;
} op_ud;

/* -- Buffers -- */

static void buf_put(sq_buf *b, const void *p, size_t n) {
  if (b->oom) return;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < b->n + n) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
}

static void buf_u32(sq_buf *b, uint32_t v) {
  buf_put(b, &v, sizeof(v));
}

static char *dupmsg(const char *prefix, const char *msg) {
  size_t a = strlen(prefix), m = strlen(msg);
  char *s = malloc(a + m + 1);
  if (!s) return NULL;
  memcpy(s, prefix, a);
  memcpy(s + a, msg, m + 1);
  return s;
}

/* -- Operations -- */

static void op_free(sq_op *op) {
  for (int i = 0; i < op->nstmt; i++) free(op->st[i].out.p);
  free(op->err);
  free(op);
}

static void op_unref_queue(sq_op *op) {
  op->queue = 0;
  if (!op->lua) op_free(op);
}

static void op_unref_lua(sq_op *op) {
  op->lua = 0;
  op->co = NULL;
  if (!op->queue) op_free(op);
}

static void op_fail(sq_op *op, const char *msg) {
  if (op->err) return;
  op->err = dupmsg("sqlite: ", msg);
}

/* -- The pool side -- */

static uint64_t hash_sql(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

/* A prepared statement for sql, from the cache or new (then cached,
 * replacing whatever held its slot). */
static int prepare(sq_db *db, const char *sql, size_t n, sqlite3_stmt **out,
                   int *is_cached) {
  uint64_t h = hash_sql(sql, n);
  sq_cached *c = &db->cache[h % CACHE_SLOTS];
  if (c->stmt && c->hash == h && strlen(c->sql) == n &&
      memcmp(c->sql, sql, n) == 0) {
    *out = c->stmt;
    *is_cached = 1;
    return SQLITE_OK;
  }
  sqlite3_stmt *s = NULL;
  const char *tail = NULL;
  int rc = sqlite3_prepare_v3(db->conn, sql, (int)n, SQLITE_PREPARE_PERSISTENT,
                              &s, &tail);
  if (rc != SQLITE_OK) return rc;
  if (!s) return SQLITE_MISUSE; /* only whitespace or a comment */
  char *copy = malloc(n + 1);
  if (copy) {
    memcpy(copy, sql, n);
    copy[n] = 0;
    if (c->stmt) sqlite3_finalize(c->stmt);
    free(c->sql);
    c->hash = h;
    c->sql = copy;
    c->stmt = s;
  }
  *is_cached = copy != NULL;
  *out = s;
  return SQLITE_OK;
}

/* Runs one statement, encoding its rows into st->out: ncols (u32), each
 * column name (u32 length + bytes), then per row per column a type byte
 * and its value. Returns SQLITE_OK, or an error with *msg set. */
static int st_run(sq_db *db, sq_stmt *st, const char **msg) {
  sqlite3_stmt *s;
  int is_cached = 0; /* a statement the cache does not keep is finalized */
  int rc = prepare(db, st->sql, st->sqllen, &s, &is_cached);
  if (rc != SQLITE_OK) {
    *msg = rc == SQLITE_MISUSE ? "empty statement" : sqlite3_errmsg(db->conn);
    return rc;
  }
  /* Missing parameters bind as NULL, like SQLite's own default. */
  for (int i = 0; i < st->np && i < sqlite3_bind_parameter_count(s); i++) {
    sq_val *v = &st->p[i];
    switch (v->t) {
    case V_NULL:
      rc = sqlite3_bind_null(s, i + 1);
      break;
    case V_INT:
      rc = sqlite3_bind_int64(s, i + 1, v->u.i);
      break;
    case V_REAL:
      rc = sqlite3_bind_double(s, i + 1, v->u.d);
      break;
    case V_TEXT:
      rc = sqlite3_bind_text(s, i + 1, v->u.s, (int)v->len, SQLITE_STATIC);
      break;
    default:
      rc = sqlite3_bind_blob(s, i + 1, v->u.s, (int)v->len, SQLITE_STATIC);
      break;
    }
    if (rc != SQLITE_OK) break;
  }
  if (rc == SQLITE_OK && st->np > sqlite3_bind_parameter_count(s)) {
    *msg = "too many parameters for the statement";
    rc = SQLITE_RANGE;
  }
  if (rc != SQLITE_OK) {
    if (!*msg) *msg = sqlite3_errmsg(db->conn);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (!is_cached) sqlite3_finalize(s);
    return rc;
  }
  int ncols = sqlite3_column_count(s);
  sq_buf *b = &st->out;
  b->n = 0;
  buf_u32(b, (uint32_t)ncols);
  for (int c = 0; c < ncols; c++) {
    const char *name = sqlite3_column_name(s, c);
    uint32_t n = name ? (uint32_t)strlen(name) : 0;
    buf_u32(b, n);
    buf_put(b, name, n);
  }
  st->nrows = 0;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    st->nrows++;
    for (int c = 0; c < ncols; c++) {
      uint8_t t;
      switch (sqlite3_column_type(s, c)) {
      case SQLITE_INTEGER: {
        t = V_INT;
        int64_t i = sqlite3_column_int64(s, c);
        buf_put(b, &t, 1);
        buf_put(b, &i, sizeof(i));
        break;
      }
      case SQLITE_FLOAT: {
        t = V_REAL;
        double d = sqlite3_column_double(s, c);
        buf_put(b, &t, 1);
        buf_put(b, &d, sizeof(d));
        break;
      }
      case SQLITE_TEXT:
      case SQLITE_BLOB: {
        t = V_TEXT;
        const void *p = sqlite3_column_blob(s, c);
        uint32_t n = (uint32_t)sqlite3_column_bytes(s, c);
        buf_put(b, &t, 1);
        buf_u32(b, n);
        buf_put(b, p, n);
        break;
      }
      default:
        t = V_NULL;
        buf_put(b, &t, 1);
        break;
      }
    }
  }
  if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
    st->changes = sqlite3_changes64(db->conn);
    st->last_id = sqlite3_last_insert_rowid(db->conn);
  } else {
    *msg = sqlite3_errmsg(db->conn);
  }
  if (rc == SQLITE_OK && b->oom) {
    rc = SQLITE_NOMEM;
    *msg = "out of memory for the result rows";
  }
  /* Copy the message before reset, which may change it. */
  static _Thread_local char errbuf[512];
  if (rc != SQLITE_OK && *msg) {
    snprintf(errbuf, sizeof(errbuf), "%s", *msg);
    *msg = errbuf;
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (!is_cached) sqlite3_finalize(s);
  return rc;
}

static int simple(sq_db *db, const char *sql, const char **msg) {
  int rc = sqlite3_exec(db->conn, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK && msg) *msg = sqlite3_errmsg(db->conn);
  return rc;
}

/* Runs op's statements; a batch of several inside a savepoint (when
 * inside a transaction). Sets op->err on failure. */
static void unit_run(sq_db *db, sq_op *op, int in_tx) {
  int sp = op->nstmt > 1 && in_tx;
  const char *msg = NULL;
  if (sp && simple(db, "SAVEPOINT orrery_unit", &msg) != SQLITE_OK) {
    op_fail(op, msg);
    return;
  }
  for (int i = 0; i < op->nstmt; i++) {
    msg = NULL;
    if (st_run(db, &op->st[i], &msg) != SQLITE_OK) {
      if (op->batch) {
        char pre[32];
        snprintf(pre, sizeof(pre), "sqlite: #%d: ", i + 1);
        op->err = dupmsg(pre, msg ? msg : "error");
      } else {
        op_fail(op, msg ? msg : "error");
      }
      break;
    }
  }
  if (sp && !sqlite3_get_autocommit(db->conn)) {
    if (op->err) simple(db, "ROLLBACK TO orrery_unit", NULL);
    simple(db, "RELEASE orrery_unit", NULL);
  }
}

static void open_run(sq_db *db, sq_op *op) {
  int flags = db->readonly ? SQLITE_OPEN_READONLY
                           : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  flags |= SQLITE_OPEN_NOMUTEX; /* one job at a time uses the connection */
  int rc = sqlite3_open_v2(db->path, &db->conn, flags, NULL);
  char msg[600];
  if (rc != SQLITE_OK) {
    snprintf(msg, sizeof(msg), "%s (%s)",
             db->conn ? sqlite3_errmsg(db->conn) : sqlite3_errstr(rc),
             db->path);
    op_fail(op, msg);
    sqlite3_close(db->conn);
    db->conn = NULL;
    return;
  }
  sqlite3_extended_result_codes(db->conn, 0);
  sqlite3_busy_timeout(db->conn, db->busy_ms);
  const char *m = NULL;
  if (db->wal && !db->readonly &&
      simple(db, "PRAGMA journal_mode=WAL", &m) != SQLITE_OK)
    goto fail;
  static const char *syncs[] = {"PRAGMA synchronous=OFF",
                                "PRAGMA synchronous=NORMAL",
                                "PRAGMA synchronous=FULL"};
  if (simple(db, syncs[db->sync], &m) != SQLITE_OK) goto fail;
  /* Checks the file is a database now rather than at the first write. */
  if (simple(db, "PRAGMA schema_version", &m) != SQLITE_OK) goto fail;
  return;
fail:
  snprintf(msg, sizeof(msg), "%s (%s)", m ? m : "error", db->path);
  op_fail(op, msg);
  sqlite3_close(db->conn);
  db->conn = NULL;
}

static void close_conn(sq_db *db) {
  for (int i = 0; i < CACHE_SLOTS; i++) {
    if (db->cache[i].stmt) sqlite3_finalize(db->cache[i].stmt);
    free(db->cache[i].sql);
    db->cache[i].stmt = NULL;
    db->cache[i].sql = NULL;
  }
  if (db->conn) sqlite3_close(db->conn);
  db->conn = NULL;
}

/* The group transaction: BEGIN, every unit, COMMIT. A unit whose error
 * rolled back the whole transaction (SQLite does for a few errors) takes
 * the units before it down with it; the rest go on in a new one. */
static void group_run(sq_db *db, sq_op *ops) {
  const char *msg = NULL;
  if (!ops->next) { /* one statement alone: its implicit transaction */
    unit_run(db, ops, 0);
    return;
  }
  sq_op *first = ops;
  if (simple(db, "BEGIN IMMEDIATE", &msg) != SQLITE_OK) {
    for (sq_op *o = ops; o; o = o->next) op_fail(o, msg);
    return;
  }
  for (sq_op *o = ops; o; o = o->next) {
    unit_run(db, o, 1);
    if (o->err && sqlite3_get_autocommit(db->conn)) {
      /* the transaction is gone: the units before o are undone too */
      for (sq_op *p = first; p != o; p = p->next)
        p->err = dupmsg("sqlite: rolled back with the group: ",
                        o->err + strlen("sqlite: "));
      first = o->next;
      if (first && simple(db, "BEGIN IMMEDIATE", &msg) != SQLITE_OK) {
        for (sq_op *p = first; p; p = p->next) op_fail(p, msg);
        return;
      }
    }
  }
  if (!first) return;
  if (simple(db, "COMMIT", &msg) != SQLITE_OK) {
    char m[512];
    snprintf(m, sizeof(m), "commit failed: %s", msg);
    simple(db, "ROLLBACK", NULL);
    for (sq_op *p = first; p; p = p->next) {
      free(p->err);
      p->err = dupmsg("sqlite: ", m);
    }
  }
}

static void job_run(sq_job *j);

static void job_work(uv_work_t *req) {
  sq_job *j = req->data;
  uint64_t t0 = uv_hrtime();
  job_run(j);
  j->ns = uv_hrtime() - t0;
}

static void job_run(sq_job *j) {
  sq_db *db = j->db;
  const char *msg = NULL;
  switch (j->kind) {
  case OP_OPEN:
    open_run(db, j->ops);
    break;
  case OP_CLOSE:
    close_conn(db);
    break;
  case OP_BEGIN:
    if (simple(db, "BEGIN IMMEDIATE", &msg) != SQLITE_OK) op_fail(j->ops, msg);
    break;
  case OP_COMMIT:
    if (simple(db, "COMMIT", &msg) != SQLITE_OK) {
      op_fail(j->ops, msg);
      simple(db, "ROLLBACK", NULL);
    }
    break;
  case OP_ROLLBACK:
    if (!sqlite3_get_autocommit(db->conn) &&
        simple(db, "ROLLBACK", &msg) != SQLITE_OK)
      op_fail(j->ops, msg);
    break;
  default:
    if (j->in_tx) {
      for (sq_op *o = j->ops; o; o = o->next) unit_run(db, o, 1);
    } else if (!j->ops->next && j->ops->nstmt > 1) {
      /* a batch alone: a transaction of its own makes it atomic */
      if (simple(db, "BEGIN IMMEDIATE", &msg) != SQLITE_OK) {
        op_fail(j->ops, msg);
        break;
      }
      unit_run(db, j->ops, 0);
      if (j->ops->err) {
        simple(db, "ROLLBACK", NULL);
      } else if (simple(db, "COMMIT", &msg) != SQLITE_OK) {
        op_fail(j->ops, msg);
        simple(db, "ROLLBACK", NULL);
      }
    } else {
      group_run(db, j->ops);
    }
    break;
  }
}

/* -- The loop side -- */

static void kick(sq_db *db);

static void db_free(sq_db *db) {
  free(db->path);
  free(db);
}

static void fail_queue(sq_op **head, sq_op **tail, const char *msg) {
  sq_op *o = *head;
  *head = *tail = NULL;
  while (o) {
    sq_op *next = o->next;
    op_fail(o, msg);
    o->done = 1;
    if (o->co && !o->db->host->exiting) sched_wake(o->db->host, o->co, 0);
    op_unref_queue(o);
    o = next;
  }
}

static void job_after(uv_work_t *req, int status) {
  sq_job *j = req->data;
  sq_db *db = j->db;
  host_t *h = db->host;
  db->work_ns += j->ns;
  db->busy = 0;
  if (j->kind == OP_BEGIN && !j->ops->err) {
    db->in_tx = 1;
    db->tx_id++;
  }
  if (j->kind == OP_COMMIT || j->kind == OP_ROLLBACK) db->in_tx = 0;
  if (j->kind == OP_CLOSE) db->closed = 1;
  if (j->kind == OP_OPEN && j->ops->err) db->closed = 1;
  sq_op *o = j->ops;
  while (o) {
    sq_op *next = o->next;
    if (status) op_fail(o, "canceled");
    o->done = 1;
    /* A transaction nobody waits for any more is rolled back. */
    if (j->kind == OP_BEGIN && !o->err && !o->lua) {
      sq_op *rb = calloc(1, sizeof(*rb));
      if (rb) {
        rb->db = db;
        rb->kind = OP_ROLLBACK;
        rb->queue = 1;
        rb->next = db->txhead;
        db->txhead = rb;
        if (!db->txtail) db->txtail = rb;
      }
    }
    if (o->co && !h->exiting) sched_wake(h, o->co, 0);
    op_unref_queue(o);
    o = next;
  }
  free(j);
  if (db->closed && db->conn == NULL) {
    fail_queue(&db->txhead, &db->txtail, "closed");
    fail_queue(&db->qhead, &db->qtail, "closed");
    if (db->lua_gone) {
      db_free(db);
      return;
    }
  }
  kick(db);
}

static int start_job(sq_db *db, sq_op *ops, int kind, int in_tx) {
  sq_job *j = malloc(sizeof(*j));
  if (!j) return UV_ENOMEM;
  j->req.data = j;
  j->db = db;
  j->ops = ops;
  j->kind = kind;
  j->in_tx = in_tx;
  j->ns = 0;
  int r = uv_queue_work(db->host->loop, &j->req, job_work, job_after);
  if (r) {
    free(j);
    return r;
  }
  db->busy = 1;
  db->nbatches++;
  return 0;
}

/* Takes the next job's operations off the queue and starts it. */
static void kick(sq_db *db) {
  if (db->busy) return;
  sq_op **head, **tail;
  if (db->in_tx) {
    head = &db->txhead;
    tail = &db->txtail;
  } else {
    head = &db->qhead;
    tail = &db->qtail;
  }
  sq_op *first = *head;
  if (!first) return;
  int kind = first->kind;
  sq_op *last = first;
  int n = 1;
  if (kind == OP_UNIT) {
    while (last->next && last->next->kind == OP_UNIT && n < db->max_batch) {
      last = last->next;
      n++;
    }
  }
  *head = last->next;
  if (!*head) *tail = NULL;
  last->next = NULL;
  db->nops += (uint64_t)n;
  if (start_job(db, first, kind, db->in_tx) != 0) {
    sq_op *t = NULL;
    fail_queue(&first, &t, "cannot queue the job");
  }
}

static void enqueue(sq_db *db, sq_op *op, int tx) {
  op->next = NULL;
  op->db = db;
  op->queue = 1;
  sq_op **head = tx ? &db->txhead : &db->qhead;
  sq_op **tail = tx ? &db->txtail : &db->qtail;
  if (*tail)
    (*tail)->next = op;
  else
    *head = op;
  *tail = op;
  kick(db);
}

static void op_unpark(co_t *co, void *data) {
  sq_op *op = data;
  if (op->co == co) op->co = NULL;
}

/* -- Lua glue -- */

static sq_db *check_db(lua_State *L, int idx) {
  db_ud *ud = luaL_checkudata(L, idx, DB_MT);
  return ud->db;
}

static int push_fail(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushfstring(L, "sqlite: %s", msg);
  return 2;
}

/* Size of one statement's copy: its SQL and its string parameters. */
static size_t vals_size(lua_State *L, int first, int n, const char *fname) {
  size_t sz = 0;
  for (int i = 0; i < n; i++) {
    int idx = first + i;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TBOOLEAN:
    case LUA_TNUMBER:
      break;
    case LUA_TSTRING:
      sz += lua_objlen(L, idx) + 1;
      break;
    case LUA_TTABLE:
      lua_getfield(L, idx, "blob");
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "%s: bad parameter #%d (table other than sqlite.blob(s))",
                   fname, i + 1);
      sz += lua_objlen(L, -1) + 1;
      lua_pop(L, 1);
      break;
    default:
      luaL_error(L, "%s: bad parameter #%d (%s cannot be bound)", fname, i + 1,
                 luaL_typename(L, idx));
    }
  }
  return sz;
}

static char *vals_copy(lua_State *L, int first, int n, sq_val *out, char *p) {
  for (int i = 0; i < n; i++) {
    int idx = first + i;
    sq_val *v = &out[i];
    size_t len;
    const char *s;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
      v->t = V_NULL;
      break;
    case LUA_TBOOLEAN:
      v->t = V_INT;
      v->u.i = lua_toboolean(L, idx);
      break;
    case LUA_TNUMBER: {
      double d = lua_tonumber(L, idx);
      if (d == floor(d) && fabs(d) < 9007199254740992.0) {
        v->t = V_INT;
        v->u.i = (int64_t)d;
      } else {
        v->t = V_REAL;
        v->u.d = d;
      }
      break;
    }
    case LUA_TSTRING:
      s = lua_tolstring(L, idx, &len);
      v->t = V_TEXT;
      goto copy;
    default: /* a blob, checked by vals_size */
      lua_getfield(L, idx, "blob");
      s = lua_tolstring(L, -1, &len);
      lua_pop(L, 1); /* still anchored by the table until copied below */
      v->t = V_BLOB;
    copy:
      memcpy(p, s, len);
      p[len] = 0;
      v->u.s = p;
      v->len = (uint32_t)len;
      p += len + 1;
      break;
    }
  }
  return p;
}

static sq_op *op_alloc(lua_State *L, int nstmt, size_t extra) {
  size_t sz = sizeof(sq_op) + (size_t)nstmt * sizeof(sq_stmt) + extra;
  sq_op *op = calloc(1, sz);
  if (!op) luaL_error(L, "orrery.sqlite: out of memory");
  op->nstmt = nstmt;
  op->st = (sq_stmt *)(op + 1);
  return op;
}

static void push_op(lua_State *L, sq_op *op) {
  op_ud *ud = lua_newuserdata(L, sizeof(op_ud));
  ud->op = op;
  op->lua = 1;
  luaL_getmetatable(L, OP_MT);
  lua_setmetatable(L, -2);
}

/* Queues op and parks the caller on it: ORRERY_PARKED, slot, op. */
static int submit(lua_State *L, sq_db *db, sq_op *op, int tx, double timeout,
                  const char *fname) {
  host_t *h = host_current;
  co_t *co = h ? h->current : NULL;
  if (!co) {
    op_free(op);
    return luaL_error(L, "%s: would block outside a coroutine", fname);
  }
  push_op(L, op);
  enqueue(db, op, tx);
  op->co = co;
  sched_park(h, co, WAIT_IO, "sqlite", db);
  sched_undo(co, op_unpark, op);
  timer_park(h, co, timeout);
  lua_pushinteger(L, ORRERY_PARKED);
  lua_pushinteger(L, co->slot);
  lua_pushvalue(L, -3);
  return 3;
}

/* A handle that can take an operation now, or an error to answer. */
static const char *usable(sq_db *db, int tx, lua_Integer txid) {
  if (!db || db->closing || db->closed) return "closed";
  if (tx && (!db->in_tx || (uint64_t)txid != db->tx_id))
    return "the transaction has ended";
  return NULL;
}

/* exec(db, tx, txid, timeout, sql, ...) */
static int l_exec(lua_State *L) {
  sq_db *db = check_db(L, 1);
  int tx = lua_toboolean(L, 2);
  lua_Integer txid = luaL_optinteger(L, 3, 0);
  double timeout = luaL_optnumber(L, 4, -1);
  size_t sqllen;
  const char *sql = luaL_checklstring(L, 5, &sqllen);
  const char *bad = usable(db, tx, txid);
  if (bad) return push_fail(L, bad);
  int np = lua_gettop(L) - 5;
  size_t extra = (size_t)np * sizeof(sq_val) + sqllen + 1 +
                 vals_size(L, 6, np, "orrery.sqlite exec");
  sq_op *op = op_alloc(L, 1, extra);
  sq_stmt *st = op->st;
  st->np = np;
  st->p = (sq_val *)(st + 1);
  char *p = (char *)(st->p + np);
  memcpy(p, sql, sqllen + 1);
  st->sql = p;
  st->sqllen = (uint32_t)sqllen;
  vals_copy(L, 6, np, st->p, p + sqllen + 1);
  return submit(L, db, op, tx, timeout, "orrery.sqlite exec");
}

/* batch(db, tx, txid, timeout, { {sql, ...}, ... }) */
static int l_batch(lua_State *L) {
  sq_db *db = check_db(L, 1);
  int tx = lua_toboolean(L, 2);
  lua_Integer txid = luaL_optinteger(L, 3, 0);
  double timeout = luaL_optnumber(L, 4, -1);
  luaL_checktype(L, 5, LUA_TTABLE);
  const char *bad = usable(db, tx, txid);
  if (bad) return push_fail(L, bad);
  int n = (int)lua_objlen(L, 5);
  if (n == 0) luaL_error(L, "orrery.sqlite batch: no statements");
  size_t extra = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 5, i);
    if (!lua_istable(L, -1))
      luaL_error(L, "orrery.sqlite batch: statement #%d is not a table", i);
    lua_rawgeti(L, -1, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "orrery.sqlite batch: statement #%d has no SQL string", i);
    extra += lua_objlen(L, -1) + 1;
    lua_pop(L, 1);
    lua_getfield(L, -1, "n");
    int np = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) - 1
                                 : (int)lua_objlen(L, -2) - 1;
    lua_pop(L, 1);
    if (np < 0) np = 0;
    int base = lua_gettop(L);
    for (int k = 0; k < np; k++) lua_rawgeti(L, base, k + 2);
    extra += 8 + (size_t)np * sizeof(sq_val) +
             vals_size(L, base + 1, np, "orrery.sqlite batch");
    lua_settop(L, base - 1);
  }
  sq_op *op = op_alloc(L, n, extra);
  op->batch = 1;
  char *p = (char *)(op->st + n);
  for (int i = 1; i <= n; i++) {
    sq_stmt *st = &op->st[i - 1];
    lua_rawgeti(L, 5, i);
    int base = lua_gettop(L);
    lua_getfield(L, base, "n");
    int np = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) - 1
                                 : (int)lua_objlen(L, base) - 1;
    lua_pop(L, 1);
    if (np < 0) np = 0;
    /* sq_val needs 8-byte alignment */
    p = (char *)(((uintptr_t)p + 7) & ~(uintptr_t)7);
    st->np = np;
    st->p = (sq_val *)p;
    p += (size_t)np * sizeof(sq_val);
    size_t sl;
    lua_rawgeti(L, base, 1);
    const char *sql = lua_tolstring(L, -1, &sl);
    memcpy(p, sql, sl + 1);
    st->sql = p;
    st->sqllen = (uint32_t)sl;
    p += sl + 1;
    lua_pop(L, 1);
    for (int k = 0; k < np; k++) lua_rawgeti(L, base, k + 2);
    p = vals_copy(L, base + 1, np, st->p, p);
    lua_settop(L, base - 1);
  }
  return submit(L, db, op, tx, timeout, "orrery.sqlite batch");
}

/* ctl(db, kind, timeout [, nowait]): open/begin/commit/rollback/close;
 * nowait queues it and returns true without waiting. */
static int l_ctl(lua_State *L) {
  sq_db *db = check_db(L, 1);
  const char *what = luaL_checkstring(L, 2);
  double timeout = luaL_optnumber(L, 3, -1);
  int nowait = lua_toboolean(L, 4);
  int kind, tx = 0;
  if (strcmp(what, "open") == 0)
    kind = OP_OPEN;
  else if (strcmp(what, "begin") == 0)
    kind = OP_BEGIN;
  else if (strcmp(what, "commit") == 0)
    kind = OP_COMMIT, tx = 1;
  else if (strcmp(what, "rollback") == 0)
    kind = OP_ROLLBACK, tx = 1;
  else if (strcmp(what, "close") == 0)
    kind = OP_CLOSE;
  else
    return luaL_error(L, "orrery.sqlite: unknown control '%s'", what);
  if (!db || db->closed || (db->closing && kind != OP_CLOSE))
    return push_fail(L, "closed");
  if (kind == OP_CLOSE && db->closing) return push_fail(L, "closed");
  if (tx && !db->in_tx) return push_fail(L, "the transaction has ended");
  sq_op *op = op_alloc(L, 0, 0);
  op->kind = (uint8_t)kind;
  if (kind == OP_CLOSE) db->closing = 1;
  if (nowait) {
    enqueue(db, op, tx);
    lua_pushboolean(L, 1);
    return 1;
  }
  return submit(L, db, op, tx, timeout, "orrery.sqlite");
}

static void push_rows(lua_State *L, sq_stmt *st) {
  const char *p = st->out.p, *end = p + st->out.n;
  lua_createtable(L, st->nrows > 0 ? (int)st->nrows : 0, 0);
  if (!p) return;
  uint32_t ncols;
  memcpy(&ncols, p, 4);
  p += 4;
  int names = lua_gettop(L) + 1;
  luaL_checkstack(L, (int)ncols + 8, "too many columns");
  for (uint32_t c = 0; c < ncols; c++) {
    uint32_t n;
    memcpy(&n, p, 4);
    p += 4;
    lua_pushlstring(L, p, n);
    p += n;
  }
  int rows = names - 1;
  for (int64_t r = 1; r <= st->nrows && p < end; r++) {
    lua_createtable(L, 0, (int)ncols);
    for (uint32_t c = 0; c < ncols; c++) {
      uint8_t t = (uint8_t)*p++;
      if (t == V_NULL) continue;
      lua_pushvalue(L, names + (int)c);
      if (t == V_INT) {
        int64_t i;
        memcpy(&i, p, 8);
        p += 8;
        lua_pushnumber(L, (lua_Number)i);
      } else if (t == V_REAL) {
        double d;
        memcpy(&d, p, 8);
        p += 8;
        lua_pushnumber(L, d);
      } else {
        uint32_t n;
        memcpy(&n, p, 4);
        p += 4;
        lua_pushlstring(L, p, n);
        p += n;
      }
      lua_rawset(L, -3);
    }
    lua_rawseti(L, rows, (int)r);
  }
  lua_settop(L, rows);
}

static void push_info(lua_State *L, sq_stmt *st, int with_rows) {
  lua_createtable(L, 0, 3);
  if (with_rows) {
    push_rows(L, st);
    lua_setfield(L, -2, "rows");
  }
  lua_pushnumber(L, (lua_Number)st->changes);
  lua_setfield(L, -2, "changes");
  lua_pushnumber(L, (lua_Number)st->last_id);
  lua_setfield(L, -2, "last_id");
}

/* result(op) -> exec: rows, info; batch: results; ctl: true | nil, err */
static int l_result(lua_State *L) {
  op_ud *ud = luaL_checkudata(L, 1, OP_MT);
  sq_op *op = ud->op;
  if (!op || !op->done) return push_fail(L, "canceled");
  if (op->err) {
    lua_pushnil(L);
    lua_pushstring(L, op->err);
  } else if (op->nstmt == 0) {
    lua_pushboolean(L, 1);
    lua_pushnil(L);
  } else if (op->batch) {
    lua_createtable(L, op->nstmt, 0);
    for (int i = 0; i < op->nstmt; i++) {
      push_info(L, &op->st[i], 1);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushnil(L);
  } else {
    push_rows(L, &op->st[0]);
    push_info(L, &op->st[0], 0);
  }
  ud->op = NULL;
  op_unref_lua(op);
  return 2;
}

/* release(op): the waiter gave up (a timeout, a cancel); the operation
 * still runs, and a transaction it begins is rolled back. */
static int l_release(lua_State *L) {
  op_ud *ud = luaL_checkudata(L, 1, OP_MT);
  sq_op *op = ud->op;
  ud->op = NULL;
  if (!op) return 0;
  /* A BEGIN that succeeded after its waiter was woken by a cancel (but
   * before it ran): the transaction is open and nobody will end it. */
  if (op->kind == OP_BEGIN && op->done && !op->err && op->db && op->db->in_tx) {
    sq_op *rb = calloc(1, sizeof(*rb));
    if (rb) {
      rb->kind = OP_ROLLBACK;
      enqueue(op->db, rb, 1);
    }
  }
  op_unref_lua(op);
  return 0;
}

static int op_gc(lua_State *L) {
  op_ud *ud = lua_touserdata(L, 1);
  if (ud->op) op_unref_lua(ud->op);
  ud->op = NULL;
  return 0;
}

/* new(path, sync, wal, busy_ms, readonly, max_batch) -> db */
static int l_new(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  sq_db *db = calloc(1, sizeof(*db));
  if (!db) return luaL_error(L, "orrery.sqlite.open: out of memory");
  db->path = malloc(n + 1);
  if (!db->path) {
    free(db);
    return luaL_error(L, "orrery.sqlite.open: out of memory");
  }
  memcpy(db->path, path, n + 1);
  db->host = host_current;
  db->sync = (int)luaL_optinteger(L, 2, 2);
  if (db->sync < 0 || db->sync > 2) db->sync = 2;
  db->wal = lua_toboolean(L, 3);
  db->busy_ms = (int)luaL_optinteger(L, 4, 5000);
  db->readonly = lua_toboolean(L, 5);
  db->max_batch = (int)luaL_optinteger(L, 6, 1024);
  if (db->max_batch < 1) db->max_batch = 1;
  db_ud *ud = lua_newuserdata(L, sizeof(db_ud));
  ud->db = db;
  luaL_getmetatable(L, DB_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* The handle's userdata is gone: close the connection once the queue has
 * drained (a job that is running finishes first). */
static int db_gc(lua_State *L) {
  db_ud *ud = lua_touserdata(L, 1);
  sq_db *db = ud->db;
  if (!db) return 0;
  ud->db = NULL;
  db->lua_gone = 1;
  if (db->closed && !db->busy) {
    close_conn(db);
    db_free(db);
    return 0;
  }
  if (!db->closing) {
    db->closing = 1;
    if (db->in_tx) { /* nobody will end it now */
      sq_op *rb = calloc(1, sizeof(*rb));
      if (rb) {
        rb->kind = OP_ROLLBACK;
        enqueue(db, rb, 1);
      }
    }
    sq_op *op = calloc(1, sizeof(*op));
    if (!op) return 0;
    op->kind = OP_CLOSE;
    enqueue(db, op, 0);
  }
  return 0;
}

/* stats(db) -> { batches, ops, queued, busy, in_tx, closed, tx_id,
 * work_seconds } */
static int l_stats(lua_State *L) {
  sq_db *db = check_db(L, 1);
  lua_createtable(L, 0, 6);
  if (!db) return 1;
  int q = 0;
  for (sq_op *o = db->qhead; o; o = o->next) q++;
  lua_pushnumber(L, (lua_Number)db->nbatches);
  lua_setfield(L, -2, "batches");
  lua_pushnumber(L, (lua_Number)db->nops);
  lua_setfield(L, -2, "ops");
  lua_pushinteger(L, q);
  lua_setfield(L, -2, "queued");
  lua_pushboolean(L, db->busy);
  lua_setfield(L, -2, "busy");
  lua_pushboolean(L, db->in_tx);
  lua_setfield(L, -2, "in_tx");
  lua_pushboolean(L, db->closed || db->closing);
  lua_setfield(L, -2, "closed");
  lua_pushnumber(L, (lua_Number)db->tx_id);
  lua_setfield(L, -2, "tx_id");
  lua_pushnumber(L, (lua_Number)db->work_ns / 1e9);
  lua_setfield(L, -2, "work_seconds");
  return 1;
}

static int l_version(lua_State *L) {
  lua_pushstring(L, sqlite3_libversion());
  return 1;
}

int luaopen_orrery_sqlite_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"new", l_new},     {"exec", l_exec},       {"batch", l_batch},
      {"ctl", l_ctl},     {"result", l_result},   {"release", l_release},
      {"stats", l_stats}, {"version", l_version}, {NULL, NULL}};
  luaL_newmetatable(L, DB_MT);
  lua_pushcfunction(L, db_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, OP_MT);
  lua_pushcfunction(L, op_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
