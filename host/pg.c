/* SPDX-License-Identifier: MIT */
/* pg.c -- orrery.pg.core: PostgreSQL through libpq's asynchronous API on
 * the loop, with group commit.
 *
 * A pool owns a few connections (libpq in non-blocking pipeline mode, each
 * socket watched by a uv_poll_t) and a queue of units: one db:exec or
 * db:batch each, or the start of an interactive transaction. Units that
 * coroutines issue during one turn of the loop, and while every connection
 * is busy, wait in the queue; the next idle connection takes all of them
 * (up to max_batch) and runs them as one transaction, pipelined in one
 * round trip, so that one commit and one WAL flush covers everyone:
 *
 *   BEGIN; SAVEPOINT g;
 *   unit 1: stmts;                 RELEASE g; SAVEPOINT g; Sync
 *   unit k: ROLLBACK TO g; stmts;  RELEASE g; SAVEPOINT g; Sync
 *   end:    ROLLBACK TO g; COMMIT; Sync
 *
 * A failing statement makes the server skip the rest of its unit up to
 * the unit's Sync and leaves the transaction aborted; the next unit's
 * ROLLBACK TO undoes the failed unit alone (after a unit that succeeded
 * it undoes nothing, since g was set anew behind it), so each unit is its
 * own atomic part of the group and the others commit. A group of one unit
 * is sent bare (stmts; Sync): the extended protocol runs what comes before
 * a Sync as one implicit transaction. Every unit of a group is answered
 * after the COMMIT, so a statement's call returns once it is durable.
 *
 * An interactive transaction is given a connection of its own when its
 * unit reaches the head of the queue; its statements then go to that
 * connection one unit at a time, each inside a savepoint so that a
 * failing one is undone alone, as in SQLite.
 *
 * Ownership: a unit is held by the pool (while queued or in flight, and a
 * transaction's unit while it holds its connection) and by its Lua
 * userdata; it is freed when both let go. The pool is freed once it is
 * closed and its userdata is gone. Poll and idle handles are separate
 * allocations freed in their close callbacks, so that the pool does not
 * wait for them. When the Lua state closes, the state's sentinel closes
 * every pool at once: connections are finished, and units are detached
 * from coroutines that will never run again. */
#include <errno.h>
#include <libpq-fe.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "host.h"

#define POOL_MT "orrery.pg.pool"
#define UNIT_MT "orrery.pg.unit"
#define STATE_KEY "orrery.pg.state"

/* The error strings handed to Lua, in one list. */
#define PG_ERRDEF(_)                                                           \
  _(CLOSED, "pg: closed")                                                      \
  _(TX_OVER, "pg: transaction is over")                                        \
  _(CONNECT_TIMEOUT, "pg: connect timed out")                                  \
  _(LOST, "pg: connection lost")                                               \
  _(NOMEM, "pg: out of memory")                                                \
  _(ZERO_BYTE, "pg: a string parameter holds a zero byte (use pg.blob)")       \
  _(TOO_MANY, "pg: too many parameters (at most 65535)")                       \
  _(NOT_COMMITTED, "pg: the transaction did not commit")                       \
  _(SEND, "pg: could not send the statement")

enum {
#define _(name, s) PGE_##name,
  PG_ERRDEF(_)
#undef _
};
static const char *const pg_errs[] = {
#define _(name, s) s,
    PG_ERRDEF(_)
#undef _
};

/* Type OIDs (fixed in pg_type.dat) of the columns converted to numbers
 * and booleans, and of the parameters sent typed. */
enum {
  OID_BOOL = 16,
  OID_BYTEA = 17,
  OID_INT8 = 20,
  OID_INT2 = 21,
  OID_INT4 = 23,
  OID_OID = 26,
  OID_FLOAT4 = 700,
  OID_FLOAT8 = 701,
  OID_NUMERIC = 1700
};

typedef struct pg_state_s pg_state_t;
typedef struct pg_pool_s pg_pool_t;
typedef struct pg_conn_s pg_conn_t;
typedef struct pg_unit_s pg_unit_t;

/* -- Units -- */

typedef struct {
  const char *sql;
  int np;
  const char **vals;
  int *lens;
  int *fmts;
  Oid *types;
  PGresult *res; /* once run */
} pg_stmt_t;

/* An interactive transaction: the part of its U_TXBEGIN unit. */
typedef struct {
  pg_conn_t *conn;          /* the connection it holds, once given one */
  pg_unit_t *qhead, *qtail; /* its units not yet sent */
  uint8_t begun;            /* BEGIN was sent */
  uint8_t fixup; /* the last unit failed: its savepoint is to be undone */
  uint8_t ended; /* commit or rollback was asked for */
  char *err;     /* why it cannot go on (its connection was lost) */
} pg_tx_t;

enum { U_OPEN = 1, U_EXEC, U_TXBEGIN, U_TXSTMT, U_TXEND, U_CLOSE };
enum { US_QUEUED = 1, US_SENT, US_DONE };

struct pg_unit_s {
  pg_unit_t *prev, *next; /* in the pool's queue or its transaction's */
  pg_pool_t *pool;        /* NULL once done (a transaction's: once over) */
  pg_unit_t *txu;         /* U_TXSTMT, U_TXEND: the transaction's unit */
  co_t *co;               /* the coroutine waiting for it, or NULL */
  uint8_t kind, state;
  uint8_t lua;    /* its userdata holds it */
  uint8_t batch;  /* answers a results array */
  uint8_t commit; /* U_TXEND: commit, else rollback */
  uint8_t bare;   /* U_TXSTMT: SET TRANSACTION, sent without a savepoint */
  uint8_t tries;  /* sends that failed before reaching the server */
  char code[6];   /* SQLSTATE of err, "" when libpq's own */
  char *err;      /* "pg: ..." once failed */
  pg_tx_t tx;     /* U_TXBEGIN */
  int nst;
  pg_stmt_t st[];
};

/* -- Connections and pools -- */

enum { CS_DOWN = 0, CS_CONNECTING, CS_IDLE, CS_BUSY };
/* What a round sends: a group, a transaction's statement or its end, or
 * the ROLLBACK that cleans up after a round left a transaction open. */
enum { R_GROUP1 = 1, R_GROUPN, R_TXSTMT, R_TXEND, R_CLEANUP };
/* The commands of a round in flight, in the order their results come. */
enum { CMD_CTL = 1, CMD_STMT, CMD_COMMIT, CMD_SYNC, CMD_END };

typedef struct {
  uint8_t kind;
  int32_t unit; /* index in the round, -1 for the round itself */
  int32_t stmt;
} pg_cmd_t;

struct pg_conn_s {
  pg_pool_t *pool;
  PGconn *pg;
  uv_poll_t *poll; /* follows PQsocket (conn_watch) */
  int poll_fd, events;
  uint8_t state;
  uint8_t want_write; /* output is left to flush */
  uint8_t prepared;   /* the control statements are (ctl_sql) */
  tmr_t tmr;          /* TMR_C: the connect deadline */
  double retry_at;    /* after a failed connect, not before this */
  pg_unit_t *tx;      /* the transaction it is given to */
  /* The round in flight. */
  uint8_t rkind, rsp, committed, got, nulls, copy_out;
  pg_unit_t **units;
  int nunits, cap_units;
  pg_cmd_t *cmds;
  int ncmds, head, cap_cmds;
  char *rerr; /* a control command failed or the commit did */
  char rcode[6];
};

struct pg_pool_s {
  host_t *host;
  pg_state_t *st;
  pg_pool_t *prev, *next; /* in st's list */
  const char **kw, **val; /* connection parameters, NULL-terminated */
  pg_conn_t *conns;
  int nconns;
  pg_unit_t *qhead, *qtail;
  int nqueued;
  uv_idle_t *idle; /* runs the dispatch in the next turn */
  uint8_t kicked, closing, closed, lua;
  int max_batch;
  double connect_timeout;
  uint64_t batches, ops, connects;
};

/* Per Lua state: the live pools, closed at once when the state closes. */
struct pg_state_s {
  pg_pool_t *pools;
};

static void pool_kick(pg_pool_t *p);
static void conn_lost(pg_conn_t *c);
static void on_poll(uv_poll_t *hd, int status, int events);

/* -- Messages -- */

/* "pg: " (or prefix) and the first line of libpq's message, without its
 * severity ("ERROR:  "). malloc'd; NULL when out of memory. */
static char *msg_new(const char *prefix, const char *m) {
  if (!m || !*m) m = "unknown error";
  static const char *const sev[] = {"ERROR:  ", "FATAL:  ", "PANIC:  "};
  for (size_t i = 0; i < sizeof(sev) / sizeof(sev[0]); i++)
    if (strncmp(m, sev[i], strlen(sev[i])) == 0) m += strlen(sev[i]);
  size_t n = strcspn(m, "\n");
  while (n > 0 && (m[n - 1] == ' ' || m[n - 1] == '\r')) n--;
  size_t pl = strlen(prefix);
  char *s = malloc(pl + n + 1);
  if (!s) return NULL;
  memcpy(s, prefix, pl);
  memcpy(s + pl, m, n);
  s[pl + n] = 0;
  return s;
}

/* The message of a failed result: the server's primary message when it
 * sent one, else libpq's. */
static char *msg_res(const char *prefix, const PGresult *r, char code[6]) {
  const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  const char *sc = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  code[0] = 0;
  if (sc && strlen(sc) == 5) memcpy(code, sc, 6);
  return msg_new(prefix, m ? m : PQresultErrorMessage(r));
}

/* -- Units -- */

static int unit_busy(const pg_unit_t *u) {
  if (u->state == US_QUEUED || u->state == US_SENT) return 1;
  return u->kind == U_TXBEGIN && (u->tx.conn || u->tx.qhead);
}

static void unit_free(pg_unit_t *u) {
  for (int i = 0; i < u->nst; i++) PQclear(u->st[i].res);
  free(u->err);
  free(u->tx.err);
  free(u);
}

static void unit_maybe_free(pg_unit_t *u) {
  if (!u->lua && !unit_busy(u)) unit_free(u);
}

/* Records the unit's error (the first one stays). */
static void unit_fail(pg_unit_t *u, const char *msg, const char *code) {
  if (u->err) return;
  u->err = strdup(msg ? msg : pg_errs[PGE_NOMEM]);
  if (!u->err) u->err = strdup(pg_errs[PGE_NOMEM]);
  if (code) memcpy(u->code, code, 6);
}

/* The unit is answered: its coroutine (if still waiting) is woken. */
static void unit_finish(pg_unit_t *u) {
  host_t *h = host_current;
  u->state = US_DONE;
  if (u->kind != U_TXBEGIN) {
    u->pool = NULL;
    u->txu = NULL;
  }
  co_t *co = u->co;
  u->co = NULL;
  /* Once the main coroutine has ended nothing runs again. */
  if (co && h && !h->exiting) sched_wake(h, co, 0);
  unit_maybe_free(u);
}

static void q_push(pg_unit_t **head, pg_unit_t **tail, pg_unit_t *u) {
  u->next = NULL;
  u->prev = *tail;
  if (*tail)
    (*tail)->next = u;
  else
    *head = u;
  *tail = u;
}

static void q_push_front(pg_unit_t **head, pg_unit_t **tail, pg_unit_t *u) {
  u->prev = NULL;
  u->next = *head;
  if (*head)
    (*head)->prev = u;
  else
    *tail = u;
  *head = u;
}

static void q_unlink(pg_unit_t **head, pg_unit_t **tail, pg_unit_t *u) {
  if (u->prev)
    u->prev->next = u->next;
  else
    *head = u->next;
  if (u->next)
    u->next->prev = u->prev;
  else
    *tail = u->prev;
  u->prev = u->next = NULL;
}

/* Takes a queued unit off its queue (the pool's or its transaction's). */
static void unit_unqueue(pg_unit_t *u) {
  if (u->kind == U_TXSTMT || u->kind == U_TXEND) {
    q_unlink(&u->txu->tx.qhead, &u->txu->tx.qtail, u);
  } else {
    q_unlink(&u->pool->qhead, &u->pool->qtail, u);
    u->pool->nqueued--;
  }
}

/* The cleanup of a wait on a unit: a coroutine that stops waiting (its
 * context was cancelled, it died) detaches itself. A unit not yet sent
 * is dropped, except a COMMIT, which becomes a ROLLBACK: the transaction
 * must end either way. One already sent runs to its end. */
static void unit_unpark(co_t *co, void *data) {
  pg_unit_t *u = data;
  if (u->co != co) return;
  u->co = NULL;
  if (u->state != US_QUEUED) return;
  if (u->kind == U_TXEND) {
    u->commit = 0;
    return;
  }
  pg_pool_t *p = u->kind == U_TXSTMT ? NULL : u->pool;
  unit_unqueue(u);
  u->state = US_DONE;
  if (p) pool_kick(p);
}

/* -- Transactions -- */

static void tx_break(pg_unit_t *t, const char *msg) {
  if (!t->tx.err) t->tx.err = strdup(msg ? msg : pg_errs[PGE_LOST]);
}

/* The transaction gives its connection back. */
static void tx_release(pg_unit_t *t) {
  pg_conn_t *c = t->tx.conn;
  pg_pool_t *p = t->pool;
  if (c) c->tx = NULL;
  t->tx.conn = NULL;
  t->tx.ended = 1;
  t->pool = NULL;
  if (p) pool_kick(p);
  unit_maybe_free(t);
}

/* -- The poll handle -- */

static void on_handle_close(uv_handle_t *hd) {
  free(hd);
}

/* Makes the poll handle follow libpq's socket and wait for events (0:
 * none, -1: close the handle). libpq closes its socket when it finds the
 * connection lost, and a connect may move on to another socket: a handle
 * whose socket is gone is closed here, right after the libpq call that
 * closed it and before anything can open a descriptor with the same
 * number, and a new handle is made for a new socket. While connecting, the
 * handle is stopped around PQconnectPoll (libuv: a descriptor may be
 * closed after uv_poll_stop). */
static int conn_watch(pg_conn_t *c, int events) {
  int fd = c->pg ? PQsocket(c->pg) : -1;
  if (c->poll && (c->poll_fd != fd || events < 0)) {
    uv_close((uv_handle_t *)c->poll, on_handle_close);
    c->poll = NULL;
    c->events = 0;
  }
  if (fd < 0 || events <= 0) {
    if (c->poll && c->events) uv_poll_stop(c->poll);
    c->events = 0;
    return 0;
  }
  if (!c->poll) {
    uv_poll_t *hd = malloc(sizeof(*hd));
    if (!hd) return UV_ENOMEM;
    int r = uv_poll_init_socket(c->pool->host->loop, hd, fd);
    if (r) {
      free(hd);
      return r;
    }
    hd->data = c;
    c->poll = hd;
    c->poll_fd = fd;
    c->events = 0;
  }
  if (c->events != events) {
    int r = uv_poll_start(c->poll, events, on_poll);
    if (r) return r;
    c->events = events;
  }
  return 0;
}

/* Finishes the connection: the handle first, while the socket is open. */
static void conn_drop(pg_conn_t *c) {
  timer_stop(c->pool->host, &c->tmr);
  conn_watch(c, -1);
  if (c->pg) PQfinish(c->pg);
  c->pg = NULL;
  c->state = CS_DOWN;
  c->want_write = 0;
  c->prepared = 0;
}

/* Notifications (a LISTEN someone ran) have no reader: libpq would keep
 * them forever. */
static void drop_notifies(pg_conn_t *c) {
  PGnotify *n;
  while ((n = PQnotifies(c->pg))) PQfreemem(n);
}

/* Whether an idle connection is still there: reads what the server sent
 * meanwhile (notices, or the error and end of file of a server that went
 * away) without waiting, so that a restarted server is found out before a
 * statement is sent on a dead connection rather than after. */
static int conn_alive(pg_conn_t *c) {
  for (int k = 0; k < 8; k++) {
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) return 0;
    if (!PQconsumeInput(c->pg)) return 0;
    (void)PQisBusy(c->pg); /* parses it */
    drop_notifies(c);
    int fd = PQsocket(c->pg);
    if (fd < 0) return 0;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return 0;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  }
  return PQstatus(c->pg) == CONNECTION_OK;
}

/* -- Connecting -- */

static void notice_drop(void *arg, const char *msg) {
  (void)arg;
  (void)msg;
}

static int pool_has_live(pg_pool_t *p) {
  for (int i = 0; i < p->nconns; i++)
    if (p->conns[i].state != CS_DOWN) return 1;
  return 0;
}

/* Fails every queued unit that waits for a connection. */
static void pool_fail_queue(pg_pool_t *p, const char *msg) {
  pg_unit_t *u = p->qhead, *next;
  for (; u; u = next) {
    next = u->next;
    if (u->kind == U_CLOSE) continue;
    unit_unqueue(u);
    unit_fail(u, msg, NULL);
    unit_finish(u);
  }
}

static void conn_failed(pg_conn_t *c, const char *msg) {
  pg_pool_t *p = c->pool;
  conn_drop(c);
  c->retry_at = sched_now() + 1;
  /* With no connection left to serve them, waiting statements fail now
   * instead of waiting for a server that refuses. */
  if (!pool_has_live(p)) pool_fail_queue(p, msg);
  pool_kick(p);
}

static void conn_failed_pq(pg_conn_t *c) {
  char *m = msg_new("pg: ", c->pg ? PQerrorMessage(c->pg) : NULL);
  conn_failed(c, m ? m : pg_errs[PGE_NOMEM]);
  free(m);
}

static void conn_timeout(tmr_t *t) {
  pg_conn_t *c = (pg_conn_t *)((char *)t - offsetof(pg_conn_t, tmr));
  if (c->state == CS_CONNECTING) conn_failed(c, pg_errs[PGE_CONNECT_TIMEOUT]);
}

static void conn_up(pg_conn_t *c) {
  timer_stop(c->pool->host, &c->tmr);
  if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg)) {
    conn_failed_pq(c);
    return;
  }
  conn_watch(c, 0);
  c->state = CS_IDLE;
  c->retry_at = 0;
  pool_kick(c->pool);
}

static void conn_advance(pg_conn_t *c) {
  conn_watch(c, 0);
  int r = 0;
  switch (PQconnectPoll(c->pg)) {
  case PGRES_POLLING_READING:
    r = conn_watch(c, UV_READABLE);
    break;
  case PGRES_POLLING_WRITING:
    r = conn_watch(c, UV_WRITABLE);
    break;
  case PGRES_POLLING_OK:
    conn_up(c);
    return;
  default:
    conn_failed_pq(c);
    return;
  }
  if (r) {
    char m[128];
    snprintf(m, sizeof(m), "pg: cannot watch the socket (%s)", uv_strerror(r));
    conn_failed(c, m);
  }
}

static void conn_start(pg_conn_t *c) {
  pg_pool_t *p = c->pool;
  p->connects++;
  c->pg = PQconnectStartParams(p->kw, p->val, 0);
  if (!c->pg) {
    conn_failed(c, pg_errs[PGE_NOMEM]);
    return;
  }
  PQsetNoticeProcessor(c->pg, notice_drop, NULL);
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    conn_failed_pq(c);
    return;
  }
  c->state = CS_CONNECTING;
  timer_start(p->host, &c->tmr, sched_now() + p->connect_timeout);
  /* libpq: wait until the socket is writable before the first poll. */
  if (conn_watch(c, UV_WRITABLE)) conn_failed(c, "pg: cannot watch the socket");
}

/* -- Rounds: sending -- */

static int round_cmd(pg_conn_t *c, int kind, int unit, int stmt) {
  if (c->ncmds == c->cap_cmds) {
    int cap = c->cap_cmds ? c->cap_cmds * 2 : 64;
    pg_cmd_t *n = realloc(c->cmds, sizeof(*n) * (size_t)cap);
    if (!n) return 0;
    c->cmds = n;
    c->cap_cmds = cap;
  }
  c->cmds[c->ncmds].kind = (uint8_t)kind;
  c->cmds[c->ncmds].unit = unit;
  c->cmds[c->ncmds].stmt = stmt;
  c->ncmds++;
  return 1;
}

static int round_unit(pg_conn_t *c, pg_unit_t *u) {
  if (c->nunits == c->cap_units) {
    int cap = c->cap_units ? c->cap_units * 2 : 16;
    pg_unit_t **n = realloc(c->units, sizeof(*n) * (size_t)cap);
    if (!n) return 0;
    c->units = n;
    c->cap_units = cap;
  }
  c->units[c->nunits++] = u;
  u->state = US_SENT;
  return 1;
}

static void round_reset(pg_conn_t *c, int kind) {
  c->rkind = (uint8_t)kind;
  c->nunits = c->ncmds = c->head = 0;
  c->rsp = c->committed = c->got = c->nulls = c->copy_out = 0;
  free(c->rerr);
  c->rerr = NULL;
  c->rcode[0] = 0;
}

/* The control statements, prepared once per connection (in the first
 * round that needs them) so that the server does not parse three of them
 * for every unit of a group: the server's CPU per INSERT of 256
 * coroutines (pool 4) went from 19.9 to 17.0 us. Named statements are
 * not transactional, so a round that fails keeps them. */
enum {
  CTL_BEGIN,
  CTL_COMMIT,
  CTL_ROLLBACK,
  CTL_SP_G,
  CTL_REL_G,
  CTL_RB_G,
  CTL_SP_T,
  CTL_REL_T,
  CTL_RB_T,
  CTL_N
};
static const char *const ctl_sql[CTL_N] = {"BEGIN",
                                           "COMMIT",
                                           "ROLLBACK",
                                           "SAVEPOINT orrery_g",
                                           "RELEASE SAVEPOINT orrery_g",
                                           "ROLLBACK TO SAVEPOINT orrery_g",
                                           "SAVEPOINT orrery_t",
                                           "RELEASE SAVEPOINT orrery_t",
                                           "ROLLBACK TO SAVEPOINT orrery_t"};
static const char *const ctl_name[CTL_N] = {
    "orrery_begin", "orrery_commit", "orrery_rollback",
    "orrery_sp_g",  "orrery_rel_g",  "orrery_rb_g",
    "orrery_sp_t",  "orrery_rel_t",  "orrery_rb_t"};

/* A control statement (BEGIN, SAVEPOINT ...) of unit (-1: the round). */
static int send_ctl(pg_conn_t *c, int which, int unit, int kind) {
  if (!c->prepared) {
    for (int i = 0; i < CTL_N; i++)
      if (!round_cmd(c, CMD_CTL, -1, 0) ||
          !PQsendPrepare(c->pg, ctl_name[i], ctl_sql[i], 0, NULL))
        return 0;
    c->prepared = 1;
  }
  return round_cmd(c, kind, unit, 0) &&
         PQsendQueryPrepared(c->pg, ctl_name[which], 0, NULL, NULL, NULL, 0);
}

static int send_stmts(pg_conn_t *c, pg_unit_t *u, int unit) {
  for (int i = 0; i < u->nst; i++) {
    pg_stmt_t *s = &u->st[i];
    if (!round_cmd(c, CMD_STMT, unit, i) ||
        !PQsendQueryParams(c->pg, s->sql, s->np, s->types, s->vals, s->lens,
                           s->fmts, 0))
      return 0;
  }
  return 1;
}

static int send_sync(pg_conn_t *c, int kind, int unit) {
  return round_cmd(c, kind, unit, 0) && PQpipelineSync(c->pg);
}

/* The round is queued in libpq: push it out and wait for its results. */
static void round_go(pg_conn_t *c) {
  int r = PQflush(c->pg);
  c->state = CS_BUSY;
  if (r < 0) {
    conn_lost(c);
    return;
  }
  c->want_write = r == 1;
  if (conn_watch(c, UV_READABLE | (c->want_write ? UV_WRITABLE : 0)))
    conn_lost(c);
}

/* Sending failed before the round could commit anything (libpq's own
 * failure, which leaves the connection in doubt): the units go back to
 * the head of the queue for another connection, twice at most. */
static void round_unsent(pg_conn_t *c) {
  pg_pool_t *p = c->pool;
  char *m = msg_new("pg: ", PQerrorMessage(c->pg));
  for (int i = c->nunits - 1; i >= 0; i--) {
    pg_unit_t *u = c->units[i];
    if (u->kind == U_EXEC && ++u->tries < 3) {
      u->state = US_QUEUED;
      q_push_front(&p->qhead, &p->qtail, u);
      p->nqueued++;
    } else {
      unit_fail(u, m ? m : pg_errs[PGE_SEND], NULL);
      if (u->kind == U_TXSTMT) tx_break(u->txu, u->err);
      unit_finish(u);
    }
  }
  free(m);
  int kind = c->rkind;
  round_reset(c, 0);
  conn_drop(c);
  c->retry_at = 0;
  if (c->tx) tx_break(c->tx, pg_errs[PGE_LOST]);
  if (kind == R_TXEND && c->tx) tx_release(c->tx);
  pool_kick(p);
}

static void send_group(pg_conn_t *c) {
  pg_pool_t *p = c->pool;
  round_reset(c, R_GROUP1);
  while (p->qhead && p->qhead->kind == U_EXEC && c->nunits < p->max_batch) {
    pg_unit_t *u = p->qhead;
    unit_unqueue(u);
    if (!round_unit(c, u)) {
      u->state = US_QUEUED;
      q_push_front(&p->qhead, &p->qtail, u);
      p->nqueued++;
      break;
    }
  }
  int n = c->nunits, ok = 1;
  if (n == 0) {
    c->state = CS_IDLE;
    return;
  }
  if (n == 1) {
    ok = send_stmts(c, c->units[0], 0) && send_sync(c, CMD_END, -1);
  } else {
    c->rkind = R_GROUPN;
    ok = send_ctl(c, CTL_BEGIN, -1, CMD_CTL) &&
         send_ctl(c, CTL_SP_G, -1, CMD_CTL);
    for (int k = 0; ok && k < n; k++) {
      ok = (k == 0 || send_ctl(c, CTL_RB_G, k, CMD_CTL)) &&
           send_stmts(c, c->units[k], k) &&
           send_ctl(c, CTL_REL_G, k, CMD_CTL) &&
           send_ctl(c, CTL_SP_G, k, CMD_CTL) && send_sync(c, CMD_SYNC, k);
    }
    ok = ok && send_ctl(c, CTL_RB_G, -1, CMD_CTL) &&
         send_ctl(c, CTL_COMMIT, -1, CMD_COMMIT) && send_sync(c, CMD_END, -1);
  }
  if (!ok)
    round_unsent(c);
  else
    round_go(c);
}

/* One unit of a transaction, or its end. */
static void send_tx(pg_conn_t *c, pg_unit_t *u) {
  pg_tx_t *tx = &c->tx->tx;
  int ok = 1;
  round_reset(c, u->kind == U_TXSTMT ? R_TXSTMT : R_TXEND);
  if (!round_unit(c, u)) {
    unit_fail(u, pg_errs[PGE_NOMEM], NULL);
    unit_finish(u);
    return;
  }
  int first = u->kind == U_TXSTMT && !tx->begun;
  if (first) {
    ok = send_ctl(c, CTL_BEGIN, -1, CMD_CTL);
    tx->begun = 1;
  }
  if (ok && tx->fixup && (u->kind == U_TXSTMT || u->commit)) {
    ok = send_ctl(c, CTL_RB_T, -1, CMD_CTL) &&
         send_ctl(c, CTL_REL_T, -1, CMD_CTL);
    tx->fixup = 0;
  }
  if (u->kind == U_TXSTMT) {
    /* SET TRANSACTION must come first: right after BEGIN it runs bare. */
    c->rsp = !(first && u->bare);
    ok = ok && (!c->rsp || send_ctl(c, CTL_SP_T, -1, CMD_CTL)) &&
         send_stmts(c, u, 0) && (!c->rsp || send_ctl(c, CTL_REL_T, 0, CMD_CTL));
  } else if (u->commit) {
    ok = ok && send_ctl(c, CTL_COMMIT, -1, CMD_COMMIT);
  } else {
    ok = ok && send_ctl(c, CTL_ROLLBACK, -1, CMD_CTL);
  }
  ok = ok && send_sync(c, CMD_END, -1);
  if (!ok)
    round_unsent(c);
  else
    round_go(c);
}

static void send_cleanup(pg_conn_t *c) {
  round_reset(c, R_CLEANUP);
  if (send_ctl(c, CTL_ROLLBACK, -1, CMD_CTL) && send_sync(c, CMD_END, -1))
    round_go(c);
  else
    round_unsent(c);
}

/* -- Rounds: results -- */

static void round_done(pg_conn_t *c) {
  pg_pool_t *p = c->pool;
  pg_unit_t *t = c->tx;
  int kind = c->rkind;
  PGTransactionStatusType ts = PQtransactionStatus(c->pg);
  const char *rerr = c->rerr ? c->rerr : pg_errs[PGE_NOT_COMMITTED];
  if (kind == R_GROUP1 || kind == R_GROUPN) {
    int ok = kind == R_GROUP1 ? !c->rerr && ts == PQTRANS_IDLE : c->committed;
    for (int i = 0; i < c->nunits; i++)
      if (!ok) unit_fail(c->units[i], rerr, c->rcode);
    if (ok) p->batches++;
    p->ops += (uint64_t)c->nunits;
  } else if (kind == R_TXSTMT) {
    pg_unit_t *u = c->units[0];
    if (c->rerr)
      tx_break(t, c->rerr);
    else if (u->err && c->rsp)
      t->tx.fixup = 1;
    else if (u->err)
      tx_break(t, u->err);
    p->ops++;
  } else if (kind == R_TXEND) {
    pg_unit_t *u = c->units[0];
    if (u->commit && !c->committed) unit_fail(u, rerr, c->rcode);
    p->ops++;
  }
  int n = c->nunits;
  pg_unit_t **units = c->units;
  c->nunits = 0;
  c->state = CS_IDLE;
  conn_watch(c, 0);
  for (int i = 0; i < n; i++) unit_finish(units[i]);
  if (kind == R_TXEND && t) tx_release(t);
  /* A round that should have ended its transaction but did not (a
   * control statement failed) is cleaned up before the connection is
   * used again. */
  if (!c->tx && ts != PQTRANS_IDLE && c->pg && PQstatus(c->pg) == CONNECTION_OK)
    send_cleanup(c);
  pool_kick(p);
}

static void cmd_result(pg_conn_t *c, pg_cmd_t *cmd, PGresult *r) {
  ExecStatusType st = PQresultStatus(r);
  int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
           st == PGRES_EMPTY_QUERY;
  int skipped = st == PGRES_PIPELINE_ABORTED;
  pg_unit_t *u = cmd->unit >= 0 ? c->units[cmd->unit] : NULL;
  char code[6];
  if (cmd->kind == CMD_STMT && ok) {
    u->st[cmd->stmt].res = r;
    return;
  }
  if (cmd->kind == CMD_COMMIT && ok) {
    /* COMMIT of an aborted transaction answers ROLLBACK, not an error. */
    c->committed = strcmp(PQcmdStatus(r), "COMMIT") == 0;
  } else if (!ok && !skipped) {
    char pre[32] = "pg: ";
    if (u && u->batch && cmd->kind == CMD_STMT)
      snprintf(pre, sizeof(pre), "pg: #%d: ", cmd->stmt + 1);
    char *m = msg_res(pre, r, code);
    if (u) {
      unit_fail(u, m, code);
    } else if (!c->rerr) {
      c->rerr = m;
      memcpy(c->rcode, code, 6);
      m = NULL;
    }
    free(m);
  }
  PQclear(r);
}

/* Reads the results that have come, in the order of the round's
 * commands. In pipeline mode each command's results end with a NULL, and
 * a Sync's PGRES_PIPELINE_SYNC with none. */
static void conn_results(pg_conn_t *c) {
  while (c->state == CS_BUSY && c->head < c->ncmds) {
    if (c->copy_out) {
      /* COPY TO STDOUT: its rows are read and dropped. */
      char *buf;
      int n;
      while ((n = PQgetCopyData(c->pg, &buf, 1)) > 0) PQfreemem(buf);
      if (n == 0) return;
      c->copy_out = 0;
    }
    if (PQisBusy(c->pg)) return;
    PGresult *r = PQgetResult(c->pg);
    pg_cmd_t *cmd = &c->cmds[c->head];
    if (!r) {
      if (c->got) {
        c->head++;
        c->got = 0;
        c->nulls = 0;
        continue;
      }
      /* A NULL may only move libpq on to the next command's results. */
      if (++c->nulls > 1) return;
      continue;
    }
    c->nulls = 0;
    if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      while (c->head < c->ncmds && c->cmds[c->head].kind != CMD_SYNC &&
             c->cmds[c->head].kind != CMD_END)
        c->head++; /* never answered: not expected */
      if (c->head == c->ncmds) return;
      int end = c->cmds[c->head].kind == CMD_END;
      c->head++;
      c->got = 0;
      if (end) round_done(c);
      continue;
    }
    if (cmd->kind == CMD_SYNC || cmd->kind == CMD_END) {
      /* An error at the implicit commit of what came before the Sync (a
       * deferred constraint): it belongs to the unit or the round. */
      pg_cmd_t fake = {CMD_CTL, cmd->kind == CMD_END ? -1 : cmd->unit, 0};
      if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
        cmd_result(c, &fake, r);
      } else {
        PQclear(r);
      }
      continue;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      /* COPY has no place in a group: refused, and the connection goes
       * on (COPY FROM STDIN is ended with an error, the rows of COPY TO
       * STDOUT are dropped); a replication stream ends it. */
      PQclear(r);
      if (cmd->kind == CMD_STMT)
        unit_fail(c->units[cmd->unit], "pg: COPY is not supported", NULL);
      if (st == PGRES_COPY_IN) {
        PQputCopyEnd(c->pg, "COPY FROM STDIN is not supported by orrery.pg");
        c->want_write = 1;
      } else if (st == PGRES_COPY_OUT) {
        c->copy_out = 1;
      } else {
        conn_lost(c);
        return;
      }
      continue;
    }
    if (c->got) {
      PQclear(r); /* a command answers one result; more are dropped */
      continue;
    }
    cmd_result(c, cmd, r);
    c->got = 1;
  }
}

/* The connection broke while a round was in flight: its units, unless
 * the server answered them itself, report the loss. */
static void conn_lost(pg_conn_t *c) {
  pg_pool_t *p = c->pool;
  char *m =
      msg_new("pg: connection lost: ", c->pg ? PQerrorMessage(c->pg) : NULL);
  const char *msg = m ? m : pg_errs[PGE_LOST];
  int kind = c->rkind;
  int n = c->nunits;
  pg_unit_t **units = c->units;
  c->nunits = 0;
  for (int i = 0; i < n; i++) {
    pg_unit_t *u = units[i];
    /* Errors of class 08 (connection) and 57 (operator intervention:
     * the server shutting down, a terminated backend) are the loss. */
    if (u->err && u->code[0] && strncmp(u->code, "08", 2) != 0 &&
        strncmp(u->code, "57", 2) != 0)
      continue;
    char *own = NULL;
    if (u->err && u->code[0]) {
      const char *text = strncmp(u->err, "pg: ", 4) == 0 ? u->err + 4 : u->err;
      own = msg_new("pg: connection lost: ", text);
    }
    free(u->err);
    u->err = NULL;
    u->code[0] = 0;
    unit_fail(u, own ? own : msg, NULL);
    free(own);
  }
  if (c->tx) tx_break(c->tx, msg);
  conn_drop(c);
  c->retry_at = 0;
  round_reset(c, 0);
  for (int i = 0; i < n; i++) unit_finish(units[i]);
  if (kind == R_TXEND && c->tx) tx_release(c->tx);
  free(m);
  pool_kick(p);
}

static void on_poll(uv_poll_t *hd, int status, int events) {
  pg_conn_t *c = hd->data;
  if (status < 0) events = UV_READABLE | UV_WRITABLE; /* libpq finds out */
  if (c->state == CS_CONNECTING) {
    conn_advance(c);
    return;
  }
  if (c->state != CS_BUSY) {
    conn_watch(c, 0);
    return;
  }
  if (events & UV_WRITABLE) {
    int r = PQflush(c->pg);
    c->want_write = r == 1;
  }
  if (events & UV_READABLE) (void)PQconsumeInput(c->pg);
  conn_watch(c, c->events); /* drops a handle whose socket libpq closed */
  conn_results(c);
  if (c->pg) drop_notifies(c);
  if (c->state != CS_BUSY) return;
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    conn_lost(c);
    return;
  }
  if (conn_watch(c, UV_READABLE | (c->want_write ? UV_WRITABLE : 0)))
    conn_lost(c);
}

/* -- Dispatch -- */

static void pool_free(pg_pool_t *p) {
  if (p->st) {
    if (p->prev)
      p->prev->next = p->next;
    else
      p->st->pools = p->next;
    if (p->next) p->next->prev = p->prev;
  }
  for (int i = 0; i < p->nconns; i++) {
    pg_conn_t *c = &p->conns[i];
    conn_drop(c);
    free(c->units);
    free(c->cmds);
    free(c->rerr);
  }
  if (p->idle) {
    p->idle->data = NULL;
    uv_close((uv_handle_t *)p->idle, on_handle_close);
  }
  free(p->conns);
  free(p->kw);
  free(p);
}

/* The next unit of a transaction that holds an idle connection. */
static void tx_next(pg_conn_t *c) {
  pg_unit_t *t = c->tx;
  pg_tx_t *tx = &t->tx;
  pg_unit_t *u = tx->qhead;
  if (!u) return;
  if (!tx->err && !conn_alive(c)) {
    char *m =
        msg_new("pg: connection lost: ", c->pg ? PQerrorMessage(c->pg) : NULL);
    tx_break(t, m);
    free(m);
    conn_drop(c);
  }
  if (tx->err) {
    while ((u = tx->qhead)) {
      unit_unqueue(u);
      if (u->kind == U_TXEND) {
        if (u->commit) unit_fail(u, tx->err, NULL);
        unit_finish(u);
        tx_release(t);
        return;
      }
      unit_fail(u, tx->err, NULL);
      unit_finish(u);
    }
    return;
  }
  unit_unqueue(u);
  if (u->kind == U_TXEND && !tx->begun) {
    unit_finish(u); /* nothing was sent: nothing to end */
    tx_release(t);
    return;
  }
  send_tx(c, u);
}

static pg_conn_t *pool_idle(pg_pool_t *p) {
  for (int i = 0; i < p->nconns; i++) {
    pg_conn_t *c = &p->conns[i];
    if (c->state != CS_IDLE || c->tx) continue;
    if (conn_alive(c)) return c;
    conn_drop(c);
    c->retry_at = 0;
  }
  return NULL;
}

/* Starts one more connection when statements wait and none is idle: one
 * at a time, and one that failed not before a second has passed unless
 * no connection is left at all. */
static void pool_grow(pg_pool_t *p) {
  int pick = -1, live = 0;
  double now = sched_now();
  for (int i = 0; i < p->nconns; i++) {
    pg_conn_t *c = &p->conns[i];
    if (c->state == CS_CONNECTING) return;
    if (c->state != CS_DOWN) live = 1;
    if (c->state == CS_DOWN && !c->tx && pick < 0 && c->retry_at <= now)
      pick = i;
  }
  if (pick < 0 && !live)
    for (int i = 0; i < p->nconns && pick < 0; i++)
      if (p->conns[i].state == CS_DOWN && !p->conns[i].tx) pick = i;
  if (pick >= 0) conn_start(&p->conns[pick]);
}

/* Closing: once the queue holds nothing but the waits for the close, no
 * round is in flight and no transaction holds a connection. Returns
 * whether the pool is gone (freed). */
static int pool_try_close(pg_pool_t *p) {
  for (pg_unit_t *u = p->qhead; u; u = u->next)
    if (u->kind != U_CLOSE) return 0;
  for (int i = 0; i < p->nconns; i++)
    if (p->conns[i].state == CS_BUSY || p->conns[i].tx) return 0;
  for (int i = 0; i < p->nconns; i++) conn_drop(&p->conns[i]);
  p->closed = 1;
  pg_unit_t *u;
  while ((u = p->qhead)) {
    unit_unqueue(u);
    unit_finish(u);
  }
  if (!p->lua) {
    pool_free(p);
    return 1;
  }
  return 0;
}

static void pool_dispatch(pg_pool_t *p) {
  if (p->closed) return;
  for (int i = 0; i < p->nconns; i++) {
    pg_conn_t *c = &p->conns[i];
    if (c->tx && c->state != CS_BUSY && c->state != CS_CONNECTING) tx_next(c);
  }
  while (p->qhead && p->qhead->kind != U_CLOSE) {
    pg_conn_t *c = pool_idle(p);
    if (!c) break;
    pg_unit_t *u = p->qhead;
    if (u->kind == U_OPEN) {
      unit_unqueue(u);
      unit_finish(u);
    } else if (u->kind == U_TXBEGIN) {
      unit_unqueue(u);
      u->tx.conn = c;
      c->tx = u;
      unit_finish(u);
    } else {
      send_group(c);
    }
  }
  if (p->qhead && p->qhead->kind != U_CLOSE) pool_grow(p);
  if (p->closing) pool_try_close(p);
}

static void on_idle(uv_idle_t *hd) {
  pg_pool_t *p = hd->data;
  uv_idle_stop(hd);
  if (!p) return;
  p->kicked = 0;
  pool_dispatch(p);
}

/* Runs the dispatch in the loop's next turn, before it polls: what the
 * coroutines of this turn issued goes out together. An idle handle, not
 * a prepare handle: it makes that poll return at once, so that the
 * coroutines the dispatch wakes run without waiting for the next event
 * (with a prepare handle, a wake from the dispatch waited in epoll_wait
 * until some other event or timer came). */
static void pool_kick(pg_pool_t *p) {
  if (p->kicked || p->closed || !p->idle) return;
  if (uv_idle_start(p->idle, on_idle) == 0) p->kicked = 1;
}

/* The Lua state closes: nothing will run again, so everything ends now.
 * Units are detached from their coroutines without waking them. */
static void pool_kill(pg_pool_t *p) {
  p->closing = p->closed = 1;
  for (int i = 0; i < p->nconns; i++) {
    pg_conn_t *c = &p->conns[i];
    int n = c->nunits;
    c->nunits = 0;
    for (int k = 0; k < n; k++) {
      pg_unit_t *u = c->units[k];
      u->co = NULL;
      unit_fail(u, pg_errs[PGE_CLOSED], NULL);
      unit_finish(u);
    }
    pg_unit_t *t = c->tx;
    if (t) {
      pg_unit_t *u;
      while ((u = t->tx.qhead)) {
        unit_unqueue(u);
        u->co = NULL;
        unit_finish(u);
      }
      c->tx = NULL;
      t->tx.conn = NULL;
      t->tx.ended = 1;
      t->pool = NULL;
      unit_maybe_free(t);
    }
    conn_drop(c);
  }
  pg_unit_t *u;
  while ((u = p->qhead)) {
    unit_unqueue(u);
    u->co = NULL;
    if (u->kind == U_TXBEGIN) u->pool = NULL;
    unit_finish(u);
  }
  if (!p->lua) pool_free(p);
}

/* -- Lua glue: values -- */

typedef struct {
  pg_unit_t *u;
} unit_ud;

typedef struct {
  pg_pool_t *p;
} pool_ud;

static co_t *current_co(lua_State *L, const char *fname) {
  co_t *co = host_current ? host_current->current : NULL;
  if (!co) luaL_error(L, "%s: would block outside a coroutine", fname);
  return co;
}

/* Statements that would end or nest the group's transaction. */
static int is_tx_control(const char *sql) {
  static const char *const words[] = {"BEGIN",     "START",    "COMMIT",
                                      "END",       "ROLLBACK", "ABORT",
                                      "SAVEPOINT", "RELEASE",  NULL};
  const char *s = sql;
  for (;;) {
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '(')
      s++;
    if (s[0] == '-' && s[1] == '-') {
      s += strcspn(s, "\n");
    } else if (s[0] == '/' && s[1] == '*') {
      const char *e = strstr(s + 2, "*/");
      s = e ? e + 2 : s + strlen(s);
    } else {
      break;
    }
  }
  size_t n = 0;
  while ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z')) n++;
  for (int i = 0; words[i]; i++)
    if (strlen(words[i]) == n && strncasecmp(s, words[i], n) == 0) return 1;
  if (n == 7 && strncasecmp(s, "PREPARE", 7) == 0) {
    const char *t = s + 7;
    while (*t == ' ' || *t == '\t' || *t == '\n') t++;
    return strncasecmp(t, "TRANSACTION", 11) == 0;
  }
  return 0;
}

static int is_set_transaction(const char *sql) {
  while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r') sql++;
  if (strncasecmp(sql, "SET", 3) != 0) return 0;
  sql += 3;
  if (*sql != ' ' && *sql != '\t' && *sql != '\n') return 0;
  while (*sql == ' ' || *sql == '\t' || *sql == '\n') sql++;
  return strncasecmp(sql, "TRANSACTION", 11) == 0;
}

enum { V_OK = 0, V_MISUSE, V_DATA };

/* Checks the np values at idx.. and adds the size of their copy to *sz;
 * V_OK, or a message in msg (V_MISUSE: raised at the caller, V_DATA:
 * returned as nil, err). */
static int vals_size(lua_State *L, int idx, int np, size_t *sz, char *msg,
                     size_t msgn) {
  if (np > 65535) {
    snprintf(msg, msgn, "%s", pg_errs[PGE_TOO_MANY]);
    return V_DATA;
  }
  *sz += (size_t)np * (sizeof(char *) + 2 * sizeof(int) + sizeof(Oid));
  for (int i = 0; i < np; i++) {
    size_t len;
    const char *s;
    switch (lua_type(L, idx + i)) {
    case LUA_TNIL:
    case LUA_TBOOLEAN:
      break;
    case LUA_TNUMBER:
      *sz += 32;
      break;
    case LUA_TSTRING:
      s = lua_tolstring(L, idx + i, &len);
      if (memchr(s, 0, len)) {
        snprintf(msg, msgn, "%s", pg_errs[PGE_ZERO_BYTE]);
        return V_DATA;
      }
      *sz += len + 1;
      break;
    case LUA_TTABLE:
      lua_getfield(L, idx + i, "blob");
      if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        snprintf(msg, msgn, "bad parameter #%d (table other than pg.blob(s))",
                 i + 1);
        return V_MISUSE;
      }
      *sz += lua_objlen(L, -1) + 1;
      lua_pop(L, 1);
      break;
    default:
      snprintf(msg, msgn, "bad parameter #%d (%s cannot be bound)", i + 1,
               luaL_typename(L, idx + i));
      return V_MISUSE;
    }
  }
  return V_OK;
}

static char *align8(char *p) {
  return (char *)(((uintptr_t)p + 7) & ~(uintptr_t)7);
}

/* Copies statement s (its SQL at sqlidx, np values from idx) into the
 * unit's block at p; returns the end of what it used. Parameters are
 * text, typed so that the server need not guess numbers and booleans:
 * integral numbers as int8, others as float8, booleans as bool; strings
 * go untyped (the server takes them as whatever the context wants:
 * text, json, timestamps...); pg.blob(s) goes as binary bytea. */
static char *stmt_copy(lua_State *L, pg_stmt_t *s, int sqlidx, int idx, int np,
                       char *p) {
  size_t len;
  const char *sql = lua_tolstring(L, sqlidx, &len);
  p = align8(p);
  s->np = np;
  s->vals = (const char **)p;
  p += sizeof(char *) * (size_t)np;
  s->lens = (int *)p;
  p += sizeof(int) * (size_t)np;
  s->fmts = (int *)p;
  p += sizeof(int) * (size_t)np;
  s->types = (Oid *)p;
  p += sizeof(Oid) * (size_t)np;
  memcpy(p, sql, len + 1);
  s->sql = p;
  p += len + 1;
  for (int i = 0; i < np; i++) {
    int k = idx + i;
    const char *v;
    s->lens[i] = 0;
    s->fmts[i] = 0;
    s->types[i] = 0;
    s->vals[i] = NULL;
    switch (lua_type(L, k)) {
    case LUA_TBOOLEAN:
      s->vals[i] = lua_toboolean(L, k) ? "t" : "f";
      s->types[i] = OID_BOOL;
      break;
    case LUA_TNUMBER: {
      double d = lua_tonumber(L, k);
      if (d == floor(d) && fabs(d) < 9.2e18) {
        snprintf(p, 32, "%lld", (long long)d);
        s->types[i] = OID_INT8;
      } else {
        if (isnan(d))
          strcpy(p, "NaN");
        else if (isinf(d))
          strcpy(p, d > 0 ? "Infinity" : "-Infinity");
        else
          snprintf(p, 32, "%.17g", d);
        s->types[i] = OID_FLOAT8;
      }
      s->vals[i] = p;
      p += strlen(p) + 1;
      break;
    }
    case LUA_TSTRING:
      v = lua_tolstring(L, k, &len);
      memcpy(p, v, len + 1);
      s->vals[i] = p;
      p += len + 1;
      break;
    case LUA_TTABLE:
      lua_getfield(L, k, "blob");
      v = lua_tolstring(L, -1, &len);
      memcpy(p, v, len + 1);
      lua_pop(L, 1);
      s->vals[i] = p;
      s->lens[i] = (int)len;
      s->fmts[i] = 1;
      s->types[i] = OID_BYTEA;
      p += len + 1;
      break;
    default:
      break;
    }
  }
  return p;
}

static pg_unit_t *unit_new(pg_pool_t *p, int kind, int nst, size_t extra) {
  size_t sz = sizeof(pg_unit_t) + sizeof(pg_stmt_t) * (size_t)nst + extra +
              8 * (size_t)(nst + 1);
  pg_unit_t *u = calloc(1, sz);
  if (!u) return NULL;
  u->pool = p;
  u->kind = (uint8_t)kind;
  u->nst = nst;
  return u;
}

static pg_pool_t *check_pool(lua_State *L, int idx) {
  return ((pool_ud *)luaL_checkudata(L, idx, POOL_MT))->p;
}

static pg_unit_t *check_unit(lua_State *L, int idx) {
  return ((unit_ud *)luaL_checkudata(L, idx, UNIT_MT))->u;
}

/* The userdata that holds a unit, pushed before the unit exists so that
 * running out of memory cannot leak it. */
static unit_ud *push_unit_ud(lua_State *L) {
  unit_ud *ud = lua_newuserdata(L, sizeof(unit_ud));
  ud->u = NULL;
  luaL_getmetatable(L, UNIT_MT);
  lua_setmetatable(L, -2);
  return ud;
}

static int push_err(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

static int push_misuse(lua_State *L, const char *fname, const char *pre,
                       const char *msg) {
  lua_pushboolean(L, 0);
  lua_pushfstring(L, "%s: %s%s", fname, pre, msg);
  return 2;
}

/* Queues u (its userdata at the top of the stack) and parks co on it:
 * answers ORRERY_PARKED, slot, the userdata. */
static int unit_park(lua_State *L, pg_unit_t *u, co_t *co, const char *what) {
  host_t *h = host_current;
  u->state = US_QUEUED;
  u->lua = 1;
  if (u->kind == U_TXSTMT || u->kind == U_TXEND) {
    q_push(&u->txu->tx.qhead, &u->txu->tx.qtail, u);
    pool_kick(u->txu->pool);
  } else {
    q_push(&u->pool->qhead, &u->pool->qtail, u);
    u->pool->nqueued++;
    pool_kick(u->pool);
  }
  if (co) {
    u->co = co;
    sched_park(h, co, WAIT_IO, what, u);
    sched_undo(co, unit_unpark, u);
  }
  lua_pushinteger(L, ORRERY_PARKED);
  lua_pushinteger(L, co ? co->slot : 0);
  lua_pushvalue(L, -3);
  return 3;
}

/* Where a statement goes: the pool, or transaction txu (argument 2, a
 * unit or false). NULL and an error pushed when it cannot go anywhere. */
static pg_pool_t *target(lua_State *L, pg_unit_t **txu) {
  *txu = NULL;
  if (lua_toboolean(L, 2)) {
    pg_unit_t *t = check_unit(L, 2);
    if (!t || t->kind != U_TXBEGIN || t->tx.ended || !t->tx.conn) {
      push_err(L, pg_errs[PGE_TX_OVER]);
      return NULL;
    }
    if (t->tx.err) {
      push_err(L, t->tx.err);
      return NULL;
    }
    *txu = t;
    return t->pool;
  }
  pg_pool_t *p = check_pool(L, 1);
  if (!p || p->closing) {
    push_err(L, pg_errs[PGE_CLOSED]);
    return NULL;
  }
  return p;
}

/* exec(pool, tx|false, fname, sql, ...) -> ORRERY_PARKED, slot, unit |
 * nil, err | false, misuse */
static int l_exec(lua_State *L) {
  const char *fname = luaL_checkstring(L, 3);
  luaL_checktype(L, 4, LUA_TSTRING);
  co_t *co = current_co(L, fname);
  pg_unit_t *txu;
  pg_pool_t *p = target(L, &txu);
  if (!p) return 2;
  const char *sql = lua_tostring(L, 4);
  if (is_tx_control(sql))
    return push_misuse(L, fname, "",
                       "bad argument #1 (a transaction control statement; "
                       "use db:transaction)");
  int np = lua_gettop(L) - 4;
  size_t sz = lua_objlen(L, 4) + 1;
  char msg[160];
  int r = vals_size(L, 5, np, &sz, msg, sizeof(msg));
  if (r == V_MISUSE) return push_misuse(L, fname, "", msg);
  if (r == V_DATA) return push_err(L, msg);
  unit_ud *ud = push_unit_ud(L);
  pg_unit_t *u = unit_new(p, txu ? U_TXSTMT : U_EXEC, 1, sz);
  if (!u) return push_err(L, pg_errs[PGE_NOMEM]);
  ud->u = u;
  u->txu = txu;
  u->bare = txu && !txu->tx.begun && !txu->tx.qhead && is_set_transaction(sql);
  stmt_copy(L, &u->st[0], 4, 5, np, (char *)(u->st + 1));
  return unit_park(L, u, co, "pg exec");
}

/* The number of parameters of batch statement t (at idx): n - 1 when the
 * table has n (table.pack's count, the SQL included), else #t - 1. */
static int batch_np(lua_State *L, int idx) {
  lua_getfield(L, idx, "n");
  int np = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) - 1
                               : (int)lua_objlen(L, idx) - 1;
  lua_pop(L, 1);
  return np < 0 ? 0 : np;
}

/* batch(pool, tx|false, fname, stmts) -> as exec */
static int l_batch(lua_State *L) {
  const char *fname = luaL_checkstring(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  co_t *co = current_co(L, fname);
  pg_unit_t *txu;
  pg_pool_t *p = target(L, &txu);
  if (!p) return 2;
  int n = (int)lua_objlen(L, 4);
  size_t sz = 0;
  char msg[160], pre[48];
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, i);
    int base = lua_gettop(L);
    snprintf(pre, sizeof(pre), "statement #%d: ", i);
    lua_rawgeti(L, base, 1);
    const char *sql = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING)
      return push_misuse(L, fname, pre, "SQL string expected");
    if (is_tx_control(sql))
      return push_misuse(L, fname, pre,
                         "a transaction control statement; use "
                         "db:transaction");
    sz += lua_objlen(L, -1) + 1;
    int np = batch_np(L, base);
    luaL_checkstack(L, np + 8, "too many parameters");
    for (int k = 0; k < np; k++) lua_rawgeti(L, base, k + 2);
    int r = vals_size(L, base + 2, np, &sz, msg, sizeof(msg));
    if (r == V_MISUSE) return push_misuse(L, fname, pre, msg);
    if (r == V_DATA) {
      lua_pushnil(L);
      lua_pushfstring(L, "pg: #%d: %s", i, msg + 4);
      return 2;
    }
    lua_settop(L, base - 1);
  }
  unit_ud *ud = push_unit_ud(L);
  pg_unit_t *u = unit_new(p, txu ? U_TXSTMT : U_EXEC, n, sz);
  if (!u) return push_err(L, pg_errs[PGE_NOMEM]);
  ud->u = u;
  u->txu = txu;
  u->batch = 1;
  char *at = (char *)(u->st + n);
  int top = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, i);
    int base = lua_gettop(L);
    lua_rawgeti(L, base, 1);
    int np = batch_np(L, base);
    for (int k = 0; k < np; k++) lua_rawgeti(L, base, k + 2);
    at = stmt_copy(L, &u->st[i - 1], base + 1, base + 2, np, at);
    lua_settop(L, top);
  }
  if (n == 0) {
    /* Nothing to run: answered at once. */
    u->lua = 1;
    u->state = US_DONE;
    lua_pushboolean(L, 1);
    lua_pushnil(L);
    lua_pushvalue(L, -3);
    return 3;
  }
  return unit_park(L, u, co, "pg batch");
}

/* A unit that waits for the pool itself: open, begin, close. */
static int ctl_unit(lua_State *L, pg_pool_t *p, int kind, const char *fname,
                    const char *what) {
  co_t *co = current_co(L, fname);
  unit_ud *ud = push_unit_ud(L);
  pg_unit_t *u = unit_new(p, kind, 0, 0);
  if (!u) return push_err(L, pg_errs[PGE_NOMEM]);
  ud->u = u;
  return unit_park(L, u, co, what);
}

/* open(pool) -> ORRERY_PARKED, slot, unit: waits for the first
 * connection. */
static int l_open(lua_State *L) {
  pg_pool_t *p = check_pool(L, 1);
  if (!p || p->closing) return push_err(L, pg_errs[PGE_CLOSED]);
  return ctl_unit(L, p, U_OPEN, "orrery.pg.connect", "pg connect");
}

/* begin(pool) -> ORRERY_PARKED, slot, tx: waits for a connection. */
static int l_begin(lua_State *L) {
  pg_pool_t *p = check_pool(L, 1);
  if (!p || p->closing) return push_err(L, pg_errs[PGE_CLOSED]);
  return ctl_unit(L, p, U_TXBEGIN, "orrery.pg.transaction", "pg begin");
}

/* finish(tx, commit) -> ORRERY_PARKED, slot, unit (commit) | true
 * (rollback: queued, nobody waits) | nil, err */
static int l_finish(lua_State *L) {
  pg_unit_t *t = check_unit(L, 1);
  int commit = lua_toboolean(L, 2);
  if (!t || t->kind != U_TXBEGIN || t->tx.ended || !t->tx.conn)
    return push_err(L, pg_errs[PGE_TX_OVER]);
  co_t *co = commit ? current_co(L, "orrery.pg.transaction") : NULL;
  unit_ud *ud = push_unit_ud(L);
  pg_unit_t *u = unit_new(t->pool, U_TXEND, 0, 0);
  if (!u) return push_err(L, pg_errs[PGE_NOMEM]);
  ud->u = u;
  u->txu = t;
  u->commit = (uint8_t)commit;
  t->tx.ended = 1;
  unit_park(L, u, co, "pg commit");
  if (commit) return 3;
  u->lua = 0; /* nobody waits for a rollback */
  ud->u = NULL;
  lua_pushboolean(L, 1);
  return 1;
}

/* close(pool) -> ORRERY_PARKED, slot, unit | true */
static int l_close(lua_State *L) {
  pg_pool_t *p = check_pool(L, 1);
  if (!p || p->closed) {
    lua_pushboolean(L, 1);
    return 1;
  }
  p->closing = 1;
  return ctl_unit(L, p, U_CLOSE, "orrery.pg.close", "pg close");
}

/* -- Lua glue: results -- */

static void push_value(lua_State *L, Oid type, const char *v, int len) {
  switch (type) {
  case OID_INT2:
  case OID_INT4:
  case OID_INT8:
  case OID_OID:
  case OID_FLOAT4:
  case OID_FLOAT8:
  case OID_NUMERIC:
    lua_pushnumber(L, strtod(v, NULL));
    break;
  case OID_BOOL:
    lua_pushboolean(L, v[0] == 't');
    break;
  case OID_BYTEA: {
    size_t n;
    unsigned char *b = PQunescapeBytea((const unsigned char *)v, &n);
    if (b) {
      lua_pushlstring(L, (const char *)b, n);
      PQfreemem(b);
    } else {
      lua_pushlstring(L, v, (size_t)len);
    }
    break;
  }
  default:
    lua_pushlstring(L, v, (size_t)len);
  }
}

static void push_rows(lua_State *L, const PGresult *r) {
  int nr = r ? PQntuples(r) : 0, nf = r ? PQnfields(r) : 0;
  lua_createtable(L, nr, 0);
  int rows = lua_gettop(L);
  luaL_checkstack(L, nf + 8, "pg: too many columns");
  for (int j = 0; j < nf; j++) lua_pushstring(L, PQfname(r, j));
  for (int i = 0; i < nr; i++) {
    lua_createtable(L, 0, nf);
    for (int j = 0; j < nf; j++) {
      if (PQgetisnull(r, i, j)) continue;
      lua_pushvalue(L, rows + 1 + j);
      push_value(L, PQftype(r, j), PQgetvalue(r, i, j), PQgetlength(r, i, j));
      lua_rawset(L, -3);
    }
    lua_rawseti(L, rows, i + 1);
  }
  lua_settop(L, rows);
}

/* The rows a statement changed: PQcmdTuples, except for a SELECT, which
 * changes none. */
static double changes(const PGresult *r) {
  if (!r) return 0;
  if (strncmp(PQcmdStatus((PGresult *)r), "SELECT", 6) == 0) return 0;
  return strtod(PQcmdTuples((PGresult *)r), NULL);
}

static void unit_release(unit_ud *ud) {
  pg_unit_t *u = ud->u;
  if (!u) return;
  ud->u = NULL;
  u->lua = 0;
  u->co = NULL;
  /* A transaction dropped while it still holds its connection rolls
   * back (a coroutine that never came back to end it). */
  if (u->kind == U_TXBEGIN && u->tx.conn && !u->tx.ended && u->pool &&
      !u->pool->closed) {
    pg_unit_t *e = unit_new(u->pool, U_TXEND, 0, 0);
    if (e) {
      e->txu = u;
      e->state = US_QUEUED;
      u->tx.ended = 1;
      q_push(&u->tx.qhead, &u->tx.qtail, e);
      pool_kick(u->pool);
    }
  }
  unit_maybe_free(u);
}

/* result(unit) -> exec: rows, info; batch: results; others: true | nil,
 * err, sqlstate. Releases the unit, except a transaction's. */
static int l_result(lua_State *L) {
  unit_ud *ud = luaL_checkudata(L, 1, UNIT_MT);
  pg_unit_t *u = ud->u;
  int n;
  if (!u || u->state != US_DONE) {
    n = push_err(L, pg_errs[PGE_CLOSED]);
  } else if (u->err) {
    lua_pushnil(L);
    lua_pushstring(L, u->err);
    n = 2;
    if (u->code[0]) {
      lua_pushstring(L, u->code);
      n = 3;
    }
  } else if (u->kind == U_EXEC || u->kind == U_TXSTMT) {
    if (u->batch) {
      lua_createtable(L, u->nst, 0);
      for (int i = 0; i < u->nst; i++) {
        lua_createtable(L, 0, 2);
        push_rows(L, u->st[i].res);
        lua_setfield(L, -2, "rows");
        lua_pushnumber(L, changes(u->st[i].res));
        lua_setfield(L, -2, "changes");
        lua_rawseti(L, -2, i + 1);
      }
      n = 1;
    } else {
      push_rows(L, u->st[0].res);
      lua_createtable(L, 0, 1);
      lua_pushnumber(L, changes(u->st[0].res));
      lua_setfield(L, -2, "changes");
      n = 2;
    }
  } else {
    lua_pushboolean(L, 1);
    n = 1;
  }
  if (u && u->kind != U_TXBEGIN) unit_release(ud);
  return n;
}

/* release(unit): the Lua side no longer wants it. */
static int l_release(lua_State *L) {
  unit_release(luaL_checkudata(L, 1, UNIT_MT));
  return 0;
}

static int unit_gc(lua_State *L) {
  unit_release(lua_touserdata(L, 1));
  return 0;
}

/* -- Lua glue: pools -- */

/* new(params, nconns, max_batch, connect_timeout) -> pool: params maps
 * libpq's keywords to values. No connection is made yet. */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int nconns = (int)luaL_checkinteger(L, 2);
  int max_batch = (int)luaL_checkinteger(L, 3);
  double ct = luaL_checknumber(L, 4);
  lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY);
  pg_state_t **stp = lua_touserdata(L, -1);
  lua_pop(L, 1);
  size_t nkw = 0, sz = 0;
  for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "orrery.pg: connection parameters must be strings");
    sz += lua_objlen(L, -2) + lua_objlen(L, -1) + 2;
    nkw++;
  }
  pool_ud *ud = lua_newuserdata(L, sizeof(pool_ud));
  ud->p = NULL;
  luaL_getmetatable(L, POOL_MT);
  lua_setmetatable(L, -2);
  pg_pool_t *p = calloc(1, sizeof(*p));
  const char **kw = malloc(2 * sizeof(char *) * (nkw + 1) + sz);
  pg_conn_t *conns = calloc((size_t)nconns, sizeof(pg_conn_t));
  uv_idle_t *idle = malloc(sizeof(*idle));
  if (!p || !kw || !conns || !idle ||
      uv_idle_init(host_current->loop, idle) != 0) {
    free(p);
    free(kw);
    free(conns);
    free(idle);
    return luaL_error(L, "orrery.pg: out of memory");
  }
  p->kw = kw;
  p->val = kw + nkw + 1;
  char *s = (char *)(kw + 2 * (nkw + 1));
  size_t i = 0;
  for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
    size_t kl, vl;
    const char *k = lua_tolstring(L, -2, &kl), *v = lua_tolstring(L, -1, &vl);
    memcpy(s, k, kl + 1);
    p->kw[i] = s;
    s += kl + 1;
    memcpy(s, v, vl + 1);
    p->val[i] = s;
    s += vl + 1;
    i++;
  }
  p->kw[nkw] = p->val[nkw] = NULL;
  p->host = host_current;
  p->conns = conns;
  p->nconns = nconns;
  for (int k = 0; k < nconns; k++) {
    conns[k].pool = p;
    conns[k].tmr.kind = TMR_C;
    conns[k].tmr.fn = conn_timeout;
  }
  p->idle = idle;
  idle->data = p;
  p->max_batch = max_batch;
  p->connect_timeout = ct;
  p->lua = 1;
  p->st = stp ? *stp : NULL;
  if (p->st) {
    p->next = p->st->pools;
    if (p->next) p->next->prev = p;
    p->st->pools = p;
  }
  ud->p = p;
  return 1;
}

/* A pool that is collected closes once what it runs has ended. */
static int pool_gc(lua_State *L) {
  pool_ud *ud = lua_touserdata(L, 1);
  pg_pool_t *p = ud->p;
  if (!p) return 0;
  ud->p = NULL;
  p->lua = 0;
  if (p->closed) {
    pool_free(p);
  } else {
    p->closing = 1;
    pool_kick(p);
  }
  return 0;
}

/* close_now(pool): ends everything at once (a failed connect). */
static int l_close_now(lua_State *L) {
  pg_pool_t *p = check_pool(L, 1);
  if (p && !p->closed) {
    for (pg_unit_t *u = p->qhead; u; u = u->next) u->co = NULL;
    pool_kill(p);
  }
  return 0;
}

/* stats(pool) -> { batches, ops, queued, busy, in_tx, conns, connects,
 * closed } */
static int l_stats(lua_State *L) {
  pg_pool_t *p = check_pool(L, 1);
  lua_createtable(L, 0, 8);
  if (!p) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "closed");
    return 1;
  }
  int busy = 0, in_tx = 0, up = 0;
  for (int i = 0; i < p->nconns; i++) {
    busy += p->conns[i].state == CS_BUSY;
    in_tx += p->conns[i].tx != NULL;
    up += p->conns[i].state == CS_IDLE || p->conns[i].state == CS_BUSY;
  }
  lua_pushnumber(L, (lua_Number)p->batches);
  lua_setfield(L, -2, "batches");
  lua_pushnumber(L, (lua_Number)p->ops);
  lua_setfield(L, -2, "ops");
  lua_pushnumber(L, p->nqueued);
  lua_setfield(L, -2, "queued");
  lua_pushnumber(L, busy);
  lua_setfield(L, -2, "busy");
  lua_pushnumber(L, in_tx);
  lua_setfield(L, -2, "in_tx");
  lua_pushnumber(L, up);
  lua_setfield(L, -2, "conns");
  lua_pushnumber(L, (lua_Number)p->connects);
  lua_setfield(L, -2, "connects");
  lua_pushboolean(L, p->closed || p->closing);
  lua_setfield(L, -2, "closed");
  return 1;
}

/* parse(conninfo) -> { keyword = value } | nil, err: a URL or key=value
 * string, as libpq reads it (nothing looked up). */
static int l_parse(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  char *err = NULL;
  PQconninfoOption *o = PQconninfoParse(s, &err);
  if (!o) {
    char *m =
        msg_new("pg: invalid connection string: ", err ? err : "out of memory");
    if (err) PQfreemem(err);
    lua_pushnil(L);
    lua_pushstring(L, m ? m : pg_errs[PGE_NOMEM]);
    free(m);
    return 2;
  }
  lua_newtable(L);
  for (PQconninfoOption *k = o; k->keyword; k++) {
    if (!k->val) continue;
    lua_pushstring(L, k->val);
    lua_setfield(L, -2, k->keyword);
  }
  PQconninfoFree(o);
  return 1;
}

/* defaults() -> { keyword = value }: libpq's defaults, the environment
 * (PGHOST, PGPORT, ...) included. */
static int l_defaults(lua_State *L) {
  PQconninfoOption *o = PQconndefaults();
  lua_newtable(L);
  if (!o) return 1;
  for (PQconninfoOption *k = o; k->keyword; k++) {
    if (!k->val) continue;
    lua_pushstring(L, k->val);
    lua_setfield(L, -2, k->keyword);
  }
  PQconninfoFree(o);
  return 1;
}

static int l_version(lua_State *L) {
  int v = PQlibVersion();
  lua_pushfstring(L, "%d.%d", v / 10000, v % 10000);
  return 1;
}

/* The sentinel's finalizer runs when the Lua state closes. */
static int state_gc(lua_State *L) {
  pg_state_t **stp = lua_touserdata(L, 1);
  pg_state_t *st = *stp;
  if (!st) return 0;
  *stp = NULL;
  while (st->pools) {
    pg_pool_t *p = st->pools;
    st->pools = p->next;
    if (st->pools) st->pools->prev = NULL;
    p->st = NULL;
    p->prev = p->next = NULL;
    if (p->closed && !p->lua)
      pool_free(p);
    else if (!p->closed)
      pool_kill(p);
  }
  free(st);
  return 0;
}

int luaopen_orrery_pg_core(lua_State *L) {
  static const luaL_Reg fns[] = {{"new", l_new},
                                 {"open", l_open},
                                 {"exec", l_exec},
                                 {"batch", l_batch},
                                 {"begin", l_begin},
                                 {"finish", l_finish},
                                 {"close", l_close},
                                 {"close_now", l_close_now},
                                 {"result", l_result},
                                 {"release", l_release},
                                 {"stats", l_stats},
                                 {"parse", l_parse},
                                 {"defaults", l_defaults},
                                 {"version", l_version},
                                 {NULL, NULL}};
  luaL_newmetatable(L, POOL_MT);
  lua_pushcfunction(L, pool_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, UNIT_MT);
  lua_pushcfunction(L, unit_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY);
  if (lua_isnil(L, -1)) {
    pg_state_t **stp = lua_newuserdata(L, sizeof(pg_state_t *));
    *stp = calloc(1, sizeof(pg_state_t));
    lua_newtable(L);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, STATE_KEY);
  }
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
