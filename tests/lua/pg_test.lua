-- SPDX-License-Identifier: MIT
-- pg_test.lua -- orrery.pg against a real PostgreSQL server (a throwaway
-- cluster from pg_helpers.lua): values both ways, errors reported to the
-- statement that caused them while the rest of its group commits, batch
-- atomicity, transactions, group commit under many writers, cancellation,
-- reconnecting after a restart and a killed backend, connect failures,
-- bad arguments. Skipped, saying why, when the server binaries are
-- missing.
local T = require "orrery.test"
local orrery = require "orrery"
local context = require "orrery.context"
local pg = require "orrery.pg"

local root = (debug.getinfo(1, "S").source:match("^@(.*)tests/lua/pg_test%.lua$") or "")
local pgh = dofile(root .. "tests/lua/pg_helpers.lua")

local why = pgh.missing()
local cluster, start_err

-- Each case starts the cluster on first use; the last one stops it.
local function case(name, fn, opts)
  T.test("pg: " .. name, function()
    if why then T.skip(why) end
    if not cluster and not start_err then
      cluster, start_err = pgh.start { settings = { fsync = "off" } }
    end
    if start_err then T.skip("the cluster did not start: " .. start_err) end
    fn()
  end, opts)
end

-- Waits for coroutines started with T.spawn; raises what one raised.
local function join(outs)
  local res = {}
  for i, out in ipairs(outs) do
    local r = out:recv()
    if not r[1] then error(r[2], 0) end
    res[i] = r
  end
  return res
end

local ntables = 0
-- A connection and a fresh table t (id, k unique, v).
local function fresh(opts)
  local db = assert(pg.connect(cluster.url, opts))
  ntables = ntables + 1
  local name = "t" .. ntables
  assert(db:exec(("CREATE TABLE %s (id serial PRIMARY KEY, k text UNIQUE, v int)"):format(name)))
  return db, name
end

local function count(db, sql, ...)
  return assert(db:exec(sql, ...))[1].n
end

case("values come back with their types; NULL columns are absent", function()
  local db = assert(pg.connect(cluster.url))
  local rows = assert(db:exec([[SELECT 1::int2 AS a, 2::int4 AS b, 9007199254740993::int8 AS c,
    1.5::float4 AS d, 2.25::float8 AS e, 12.5::numeric AS f, true AS g, false AS h,
    'x'::text AS i, 'y'::varchar AS j, '{"k": [1]}'::jsonb AS k, NULL::int AS l,
    '\x00ff'::bytea AS m, ''::text AS n, 'Infinity'::float8 AS o, 'é'::text AS p]]))
  T.eq(#rows, 1)
  local r = rows[1]
  T.eq(r.a, 1); T.eq(r.b, 2); T.eq(r.c, 9007199254740993); T.eq(r.d, 1.5); T.eq(r.e, 2.25)
  T.eq(r.f, 12.5); T.eq(r.g, true); T.eq(r.h, false); T.eq(r.i, "x"); T.eq(r.j, "y")
  T.eq(r.k, '{"k": [1]}'); T.eq(r.l, nil); T.eq(r.m, "\0\255"); T.eq(r.n, ""); T.eq(r.o, math.huge)
  T.eq(r.p, "é")
  T.eq(#assert(db:exec("SELECT 1 AS x WHERE false")), 0)
  local _, info = assert(db:exec("SELECT 1 AS x"))
  T.eq(info.changes, 0)
  db:close()
end)

case("parameters: nil, booleans, integral and other numbers, strings, blobs", function()
  local db, t = fresh()
  local rows = assert(db:exec("SELECT $1 AS a, $2 AS b, $3 AS c, $4 AS d, $5 AS e, $6::int IS NULL AS f, $7 AS g",
    42, -1.25, true, "text", pg.blob("\0\1\2"), nil, 2 ^ 53))
  T.eq(rows[1], { a = 42, b = -1.25, c = true, d = "text", e = "\0\1\2", f = true, g = 2 ^ 53 })
  -- Untyped strings take the type the context wants.
  rows = assert(db:exec("SELECT $1::date + 1 AS d, $2::jsonb ->> 'x' AS x, $3 + 1 AS n",
    "2024-02-28", '{"x":"y"}', 41))
  T.eq(rows[1], { d = "2024-02-29", x = "y", n = 42 })
  rows = assert(db:exec("SELECT $1::float8 AS nan, $2::float8 AS inf", 0 / 0, -math.huge))
  T.ok(rows[1].nan ~= rows[1].nan)
  T.eq(rows[1].inf, -math.huge)
  local r, info = assert(db:exec(("INSERT INTO %s (k, v) VALUES ($1, $2), ($3, $4) RETURNING id"):format(t),
    "a", 1, "b", 2))
  T.eq(info.changes, 2)
  T.eq(#r, 2)
  T.eq(select(2, assert(db:exec(("UPDATE %s SET v = v + 1"):format(t)))).changes, 2)
  -- A zero byte cannot travel in text.
  local ok, err = db:exec("SELECT $1 AS s", "a\0b")
  T.eq(ok, nil)
  T.match(err, "^pg: a string parameter holds a zero byte")
  T.eq(assert(db:exec("SELECT $1 AS s", pg.blob("a\0b")))[1].s, "a\0b")
  db:close()
end)

case("errors name the statement's own failure, with its SQLSTATE", function()
  local db, t = fresh()
  local ok, err, code = db:exec("SELEC 1")
  T.eq(ok, nil)
  T.match(err, '^pg: syntax error at or near "SELEC"')
  T.eq(code, "42601")
  assert(db:exec(("INSERT INTO %s (k) VALUES ('dup')"):format(t)))
  ok, err, code = db:exec(("INSERT INTO %s (k) VALUES ($1)"):format(t), "dup")
  T.match(err, "^pg: duplicate key value violates unique constraint")
  T.eq(code, "23505")
  ok, err = db:exec("SELECT $1::int AS x", "abc")
  T.match(err, "^pg: invalid input syntax for type integer")
  ok, err = db:exec("SELECT $1 AS x")
  T.match(err, "^pg: bind message supplies 0 parameters")
  ok, err = db:exec("SELECT 1; SELECT 2")
  T.match(err, "^pg: cannot insert multiple commands into a prepared statement")
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 1)
  db:close()
end)

case("a failing statement reports to its caller; its group still commits", function()
  local db, t = fresh { pool = 1 }
  assert(db:exec(("INSERT INTO %s (k) VALUES ('dup')"):format(t)))
  local n = 60
  local results, outs = {}, {}
  for i = 1, n do
    outs[#outs + 1] = T.spawn(function()
      local k = i % 10 == 0 and "dup" or ("k" .. i)
      local sql = i % 15 == 0 and "INSERT INTO nowhere VALUES (1)" or ("INSERT INTO %s (k) VALUES ($1)"):format(t)
      local r, err = db:exec(sql, i % 15 == 0 and nil or k)
      results[i] = r and "ok" or err
    end)
  end
  join(outs)
  local failed = 0
  for i = 1, n do
    if i % 15 == 0 then
      T.match(results[i], '^pg: relation "nowhere" does not exist')
      failed = failed + 1
    elseif i % 10 == 0 then
      T.match(results[i], "^pg: duplicate key value violates unique constraint")
      failed = failed + 1
    else
      T.eq(results[i], "ok", "statement " .. i)
    end
  end
  T.eq(failed, 8)
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 1 + n - 8)
  local st = db:stats()
  T.ok(st.batches < st.ops, "statements were grouped: " .. st.batches .. " batches for " .. st.ops)
  db:close()
end)

case("a batch is atomic inside its group", function()
  local db, t = fresh()
  local ins = ("INSERT INTO %s (k, v) VALUES ($1, $2)"):format(t)
  local res = assert(db:batch {
    { ins, "a", 1 },
    { ins, "b", nil, n = 3 },
    { ("SELECT k, v FROM %s ORDER BY k"):format(t) },
  })
  T.eq(#res, 3)
  T.eq(res[1].changes, 1)
  T.eq(res[3].rows, { { k = "a", v = 1 }, { k = "b" } })
  local ok, err, code = db:batch { { ins, "c", 3 }, { ins, "a", 4 }, { ins, "d", 5 } }
  T.eq(ok, nil)
  T.match(err, "^pg: #2: duplicate key value violates unique constraint")
  T.eq(code, "23505")
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 2)
  -- Beside other units of the same group: the failing batch alone is undone.
  local outs = {}
  for i = 1, 20 do
    outs[i] = T.spawn(function()
      if i == 10 then return db:batch { { ins, "x10", 10 }, { ins, "a", 0 } } end
      return db:batch { { ins, "x" .. i, i }, { ins, "y" .. i, i } }
    end)
  end
  local r = join(outs)
  for i = 1, 20 do
    if i == 10 then T.eq(r[i][2], nil) else T.eq(#r[i][2], 2) end
  end
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 2 + 38)
  T.eq(count(db, ("SELECT count(*) AS n FROM %s WHERE k = 'x10'"):format(t)), 0)
  db:close()
end)

case("transactions commit, roll back on nil, err and on a raise", function()
  local db, t = fresh { pool = 2 }
  local ins = ("INSERT INTO %s (k, v) VALUES ($1, $2)"):format(t)
  local a, b = db:transaction(function(tx, x)
    assert(tx:exec(ins, "t1", x))
    local rows = assert(tx:exec(("SELECT v FROM %s WHERE k = 't1'"):format(t)))
    -- A failing statement is undone alone; the transaction goes on.
    local ok, err = tx:exec(ins, "t1", 0)
    T.eq(ok, nil)
    T.match(err, "^pg: duplicate key")
    assert(tx:batch { { ins, "t2", 2 }, { ins, "t3", 3 } })
    return rows[1].v, "done"
  end, 7)
  T.eq(a, 7)
  T.eq(b, "done")
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 3)
  local r, err = db:transaction(function(tx)
    assert(tx:exec(ins, "r1", 1))
    return nil, "changed my mind"
  end)
  T.eq(r, nil)
  T.eq(err, "changed my mind")
  local boom = {}
  local ok, e = pcall(db.transaction, db, function(tx)
    assert(tx:exec(ins, "r2", 1))
    error(boom)
  end)
  T.eq(ok, false)
  T.ok(e == boom, "the error object is raised again")
  T.eq(count(db, ("SELECT count(*) AS n FROM %s WHERE k LIKE 'r%%'"):format(t)), 0)
  -- A transaction's handle is over once it has ended.
  local saved
  assert(db:transaction(function(tx) saved = tx; return true end))
  local x, xerr = saved:exec("SELECT 1")
  T.eq(x, nil)
  T.eq(xerr, "pg: transaction is over")
  -- SET TRANSACTION as the first statement.
  T.eq(db:transaction(function(tx)
    assert(tx:exec("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"))
    return assert(tx:exec("SHOW transaction_isolation"))[1].transaction_isolation
  end), "serializable")
  db:close()
end)

case("a transaction holds one connection; other statements use the others", function()
  local db, t = fresh { pool = 2 }
  local ins = ("INSERT INTO %s (k, v) VALUES ($1, $2)"):format(t)
  local go, inside = orrery.chan(), orrery.chan(1)
  local out = T.spawn(function()
    return db:transaction(function(tx)
      assert(tx:exec(ins, "tx", 1))
      inside:send(true)
      go:recv()
      return "committed"
    end)
  end)
  inside:recv()
  -- Meanwhile statements commit on the other connection, and do not see
  -- the transaction's row yet.
  assert(db:exec(ins, "outside", 2))
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 1)
  go:send(true)
  T.eq(join({ out })[1][2], "committed")
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 2)
  db:close()
end)

case("hundreds of coroutines insert; every row is there; group commit", function()
  local db, t = fresh()
  local n = 500
  local outs = {}
  for i = 1, n do
    outs[i] = T.spawn(function()
      for j = 1, 2 do
        assert(db:exec(("INSERT INTO %s (k, v) VALUES ($1, $2)"):format(t), i .. ":" .. j, i))
      end
    end)
  end
  join(outs)
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 2 * n)
  T.eq(count(db, ("SELECT count(DISTINCT v) AS n FROM %s"):format(t)), n)
  local st = db:stats()
  T.ok(st.batches * 10 < st.ops, ("%d batches for %d statements"):format(st.batches, st.ops))
  T.ok(st.conns <= 4)
  db:close()
end, { timeout = 120 })

case("cancellation ends the wait: queued statements are dropped", function()
  local db, t = fresh { pool = 1 }
  local ins = ("INSERT INTO %s (k, v) VALUES ($1, $2)"):format(t)
  -- Already cancelled: nothing is sent.
  local ctx, cancel = context.with_cancel()
  cancel()
  local r, err = orrery.with_context(ctx, function() return db:exec(ins, "never", 1) end)
  T.eq(r, nil)
  T.eq(err, "canceled")
  -- Cancelled while queued behind a transaction that holds the only
  -- connection: dropped, never runs.
  local go, inside = orrery.chan(), orrery.chan(1)
  local txo = T.spawn(function()
    return db:transaction(function(tx)
      inside:send(true)
      go:recv()
      return true
    end)
  end)
  inside:recv()
  local ctx2, cancel2 = context.with_cancel()
  local out, id = T.spawn(function()
    return orrery.with_context(ctx2, function() return db:exec(ins, "queued", 2) end)
  end)
  T.settle { id }
  cancel2()
  local res = join({ out })[1]
  T.eq(res[2], nil)
  T.eq(res[3], "canceled")
  go:send(true)
  join({ txo })
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 0)
  -- A deadline ends a statement's wait; the statement itself runs on.
  local r2, err2 = orrery.with_timeout(0.05, function() return db:exec("SELECT pg_sleep(0.5)") end)
  T.eq(r2, nil)
  T.eq(err2, "timeout")
  T.eq(assert(db:exec("SELECT 1 AS x"))[1].x, 1)
  -- A commit whose wait is cancelled before it is sent becomes a rollback.
  local ctx3, cancel3 = context.with_cancel()
  local c1, c2 = orrery.with_context(ctx3, function()
    return db:transaction(function(tx)
      assert(tx:exec(ins, "rolled back", 3))
      cancel3()
      return true
    end)
  end)
  T.eq(c1, nil)
  T.eq(c2, "canceled")
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 0)
  db:close()
end)

case("a restarted server: the next statement reconnects", function()
  local db, t = fresh { pool = 2 }
  local ins = ("INSERT INTO %s (k, v) VALUES ($1, $2)"):format(t)
  assert(db:exec(ins, "before", 1))
  assert(cluster.restart())
  -- The idle connections were lost while nothing ran on them: found out
  -- before sending, so the statement runs on a new connection.
  assert(db:exec(ins, "after", 2))
  T.eq(count(db, ("SELECT count(*) AS n FROM %s"):format(t)), 2)
  -- While the server is down statements fail with the connect error, and
  -- once it is back they work again.
  cluster.down()
  local r, err = db:exec("SELECT 1 AS x")
  T.eq(r, nil)
  T.match(err, "^pg: connection to server at \"127.0.0.1\", port %d+ failed: Connection refused")
  r, err = db:transaction(function() return 1 end)
  T.eq(r, nil)
  T.match(err, "Connection refused")
  assert(cluster.up())
  T.eq(assert(db:exec("SELECT 1 AS x"))[1].x, 1)
  db:close()
end)

case("a backend killed mid-statement: its statements report the loss", function()
  local db = assert(pg.connect(cluster.url, { pool = 1 }))
  local admin = assert(pg.connect(cluster.url, { pool = 1 }))
  assert(admin:exec("SELECT pg_advisory_lock(4242)"))
  local out = T.spawn(function() return db:exec("SELECT pg_advisory_lock(4242), 'blocked' AS w") end)
  -- Wait (on the server, not a clock) until the statement is blocked.
  local waiting
  for _ = 1, 2000 do
    waiting = count(admin, "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    if waiting > 0 then break end
    orrery.yield()
  end
  T.eq(waiting, 1)
  assert(admin:exec([[SELECT pg_terminate_backend(pid) FROM pg_locks
    WHERE locktype = 'advisory' AND NOT granted]]))
  local res = join({ out })[1]
  T.eq(res[2], nil)
  T.match(res[3], "^pg: connection lost: terminating connection due to administrator command")
  T.eq(assert(db:exec("SELECT 2 AS x"))[1].x, 2)
  T.eq(db:stats().connects, 2)
  -- In a transaction: the loss ends it.
  local r, err = db:transaction(function(tx)
    assert(tx:exec("SELECT 1"))
    local pid = assert(tx:exec("SELECT pg_backend_pid() AS p"))[1].p
    assert(admin:exec("SELECT pg_terminate_backend($1::int)", pid))
    local _, e = tx:exec("SELECT 1")
    T.match(e, "^pg: connection lost")
    return nil, e
  end)
  T.eq(r, nil)
  T.match(err, "^pg: connection lost")
  T.eq(assert(db:exec("SELECT 3 AS x"))[1].x, 3)
  admin:close()
  db:close()
end)

case("connect failures, names, the masked URL", function()
  local l = assert(require("orrery.net").listen { host = "127.0.0.1", port = 0 })
  local port = l.port
  l:close()
  local db, err = pg.connect(("postgresql://postgres@127.0.0.1:%d/x"):format(port))
  T.eq(db, nil)
  T.eq(err, ('pg: connection to server at "127.0.0.1", port %d failed: Connection refused'):format(port))
  -- A peer that takes the connection and never answers: connect_timeout.
  local mute = assert(require("orrery.net").listen { host = "127.0.0.1", port = 0 })
  local t0 = orrery.now()
  db, err = pg.connect(("postgresql://postgres@127.0.0.1:%d/x"):format(mute.port), { connect_timeout = 0.2 })
  T.eq(db, nil)
  T.eq(err, "pg: connect timed out")
  T.ok(orrery.now() - t0 < 5)
  mute:close()
  db, err = pg.connect((cluster.url:gsub("/orrery_test$", "/nope")))
  T.eq(db, nil)
  T.match(err, 'database "nope" does not exist')
  db, err = pg.connect("postgresql://[::1")
  T.eq(db, nil)
  T.match(err, "^pg: invalid connection string")
  db, err = pg.connect("host=no-such-host.invalid port=5432")
  T.eq(db, nil)
  T.match(err, "^pg: cannot resolve no%-such%-host%.invalid")
  -- A name resolved off the loop; a password masked in db:url().
  local url = ("postgresql://postgres:s3cret@localhost:%d/%s"):format(cluster.port, cluster.db)
  db = assert(pg.connect(url))
  T.eq(db:url(), ("postgresql://postgres:***@localhost:%d/%s"):format(cluster.port, cluster.db))
  T.eq(assert(db:exec("SELECT current_database() AS d"))[1].d, cluster.db)
  db:close()
  db = assert(pg.connect(("host=127.0.0.1 port=%d dbname=%s user=postgres password=s3cret")
    :format(cluster.port, cluster.db), { connect_timeout = 5 }))
  T.eq(db:url(), ("host=127.0.0.1 port=%d dbname=%s user=postgres password=***"):format(cluster.port, cluster.db))
  db:close()
  T.eq(pg.mask("postgresql://u@h/d?password=x&sslmode=disable"), "postgresql://u@h/d?password=***&sslmode=disable")
end)

case("close waits for statements in progress; later calls fail", function()
  local db, t = fresh()
  local outs = {}
  for i = 1, 20 do
    outs[i] = T.spawn(function() return db:exec(("INSERT INTO %s (k) VALUES ($1)"):format(t), "c" .. i) end)
  end
  orrery.yield()
  T.eq(db:close(), true)
  for _, r in ipairs(join(outs)) do T.ok(r[2], "ran before the close") end
  T.eq(db:close(), true)
  local r, err = db:exec("SELECT 1")
  T.eq(r, nil)
  T.eq(err, "pg: closed")
  T.eq(select(2, db:transaction(function() end)), "pg: closed")
  T.eq(db:stats().closed, true)
  local db2 = assert(pg.connect(cluster.url))
  T.eq(count(db2, ("SELECT count(*) AS n FROM %s"):format(t)), 20)
  db2:close()
end)

case("bad arguments raise, naming the function", function()
  T.raises(function() pg.connect(nil) end, "orrery.pg.connect: bad argument #1")
  T.raises(function() pg.connect(cluster.url, { pol = 1 }) end, "orrery.pg.connect: unknown option 'pol'")
  T.raises(function() pg.connect(cluster.url, { pool = 0 }) end, "orrery.pg.connect: bad option 'pool'")
  T.raises(function() pg.connect(cluster.url, { max_batch = 1.5 }) end, "bad option 'max_batch'")
  T.raises(function() pg.connect(cluster.url, { connect_timeout = -1 }) end, "bad option 'connect_timeout'")
  T.raises(function() pg.blob(1) end, "orrery.pg.blob: bad argument #1")
  local db = assert(pg.connect(cluster.url))
  T.raises(function() db.exec("SELECT 1") end, "orrery.pg.exec: bad self")
  T.raises(function() db:exec(42) end, "orrery.pg.exec: bad argument #1 (SQL string expected")
  T.raises(function() db:exec("SELECT $1", {}) end, "orrery.pg.exec: bad parameter #1 (table other than pg.blob(s))")
  T.raises(function() db:exec("SELECT $1, $2", 1, print) end, "orrery.pg.exec: bad parameter #2 (function cannot be bound)")
  T.raises(function() db:exec("COMMIT") end, "orrery.pg.exec: bad argument #1 (a transaction control statement")
  T.raises(function() db:exec("  begin isolation level serializable") end, "transaction control")
  T.raises(function() db:batch({}) end, "orrery.pg.batch: bad argument #1")
  T.raises(function() db:batch({ { 1 } }) end, "orrery.pg.batch: bad statement #1")
  T.raises(function() db:batch({ { "SELECT $1", {} } }) end,
    "orrery.pg.batch: statement #1: bad parameter #1")
  T.raises(function() db:batch({ { "SELECT 1" }, { "ROLLBACK" } }) end, "statement #2: a transaction control")
  T.raises(function() db:transaction(42) end, "orrery.pg.transaction: bad argument #1 (function expected")
  T.raises(function()
    db:transaction(function(tx) tx:exec("SAVEPOINT x") end)
  end, "orrery.pg tx:exec: bad argument #1 (a transaction control statement")
  -- The connection is still fine after all that.
  T.eq(assert(db:exec("SELECT 1 AS x"))[1].x, 1)
  T.raises(function()
    coroutine.wrap(function() db:exec("SELECT 1") end)()
  end, "would block outside a coroutine")
  db:close()
end)

case("COPY is refused and the connection goes on; LISTEN, notices", function()
  local db, t = fresh { pool = 1 }
  local r, err = db:exec(("COPY %s FROM STDIN"):format(t))
  T.eq(r, nil)
  T.eq(err, "pg: COPY is not supported")
  r, err = db:exec(("COPY %s TO STDOUT"):format(t))
  T.eq(err, "pg: COPY is not supported")
  assert(db:exec("LISTEN orrery_ch"))
  assert(db:exec("NOTIFY orrery_ch, 'x'"))
  assert(db:exec("DROP TABLE IF EXISTS no_such_table")) -- a notice, dropped
  T.eq(assert(db:exec(("SELECT count(*) AS n FROM %s"):format(t)))[1].n, 0)
  db:close()
end)

case("a handle that is collected closes its connections", function()
  local name = "orrery_gc_test"
  local function use()
    local db = assert(pg.connect(cluster.url .. "?application_name=" .. name, { pool = 2 }))
    assert(db:exec("SELECT 1"))
  end
  local admin = assert(pg.connect(cluster.url, { pool = 1 }))
  local q = "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1"
  use()
  T.eq(count(admin, q, name), 1)
  collectgarbage()
  collectgarbage()
  local n
  -- The backend exits once it has read the Terminate message: poll the
  -- server for it (a condition, not a clock).
  for _ = 1, 500 do
    n = count(admin, q, name)
    if n == 0 then break end
    orrery.sleep(0.01)
  end
  T.eq(n, 0)
  admin:close()
end)

case("a process that exits with statements in flight ends cleanly", function()
  local src = ([[
local pg = require "orrery.pg"
local orrery = require "orrery"
local db = assert(pg.connect(%q))
assert(db:exec("SELECT 1"))
orrery.go(function() db:exec("SELECT pg_sleep(10)") end)
orrery.go(function() db:transaction(function(tx) tx:exec("SELECT 1") orrery.sleep(10) end) end)
orrery.go(function() db:exec("SELECT 2") end)
orrery.sleep(0.1) -- not a synchronization: in flight or queued, both must end cleanly
print("bye")
]]):format(cluster.url)
  local st, out, err = T.script(src, { timeout = 30 })
  T.eq(st, 0, "exit status (stderr: " .. err:sub(1, 500) .. ")")
  T.eq(out, "bye\n")
end)

T.test("pg: the cluster is stopped", function()
  if cluster then cluster.stop() end
end)
