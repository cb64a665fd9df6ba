-- SPDX-License-Identifier: MIT
-- sqlite_test.lua -- orrery.sqlite against real database files: values
-- both ways, errors reported to the statement that caused them while the
-- rest of its group commits, batch atomicity, transactions, group commit
-- under many writers, durability across a reopen, bad arguments.
local T = require "orrery.test"
local orrery = require "orrery"
local sqlite = require "orrery.sqlite"

local function tmpdb()
  local p = io.popen("mktemp -d")
  local d = p:read("*l")
  p:close()
  return d .. "/t.db", d
end

-- Waits for coroutines started with T.spawn; raises what one raised.
local function join(outs)
  for _, out in ipairs(outs) do
    local r = out:recv()
    if not r[1] then error(r[2], 0) end
  end
end

local function fresh()
  local path, dir = tmpdb()
  local db = assert(sqlite.open(path))
  assert(db:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v, b BLOB)"))
  return db, path, dir
end

T.test("values round-trip with their types; NULL columns are absent", function()
  local db = fresh()
  local _, info = assert(db:exec("INSERT INTO t (k, v) VALUES (?, ?)", "int", 42))
  T.eq(info.changes, 1)
  T.eq(info.last_id, 1)
  assert(db:exec("INSERT INTO t (k, v) VALUES (?, ?)", "real", 1.25))
  assert(db:exec("INSERT INTO t (k, v) VALUES (?, ?)", "bool", true))
  assert(db:exec("INSERT INTO t (k, v) VALUES (?, ?)", "null", nil))
  assert(db:exec("INSERT INTO t (k, v, b) VALUES (?, ?, ?)", "blob", "x\0y", sqlite.blob("\0\1\2")))
  local rows = assert(db:exec("SELECT k, v, b FROM t ORDER BY id"))
  T.eq(#rows, 5)
  T.eq(rows[1], { k = "int", v = 42 })
  T.eq(rows[2], { k = "real", v = 1.25 })
  T.eq(rows[3], { k = "bool", v = 1 })
  T.eq(rows[4], { k = "null" })
  T.eq(rows[5], { k = "blob", v = "x\0y", b = "\0\1\2" })
  T.eq(assert(db:exec("SELECT typeof(v) AS t FROM t WHERE k = 'real'"))[1].t, "real")
  T.eq(assert(db:exec("SELECT typeof(b) AS t FROM t WHERE k = 'blob'"))[1].t, "blob")
  T.eq(#assert(db:exec("SELECT * FROM t WHERE k = ?", "missing")), 0)
end)

T.test("a failing statement reports to its caller; its group still commits", function()
  local db = fresh()
  assert(db:exec("INSERT INTO t (k) VALUES ('dup')"))
  local n = 50
  local results = {}
  local ids = {}
  for i = 1, n do
    ids[#ids + 1] = T.spawn(function()
      -- every 10th collides with 'dup'
      local k = i % 10 == 0 and "dup" or ("k" .. i)
      local r, err = db:exec("INSERT INTO t (k) VALUES (?)", k)
      results[i] = r and "ok" or err
    end)
  end
  join(ids)
  local failed = 0
  for i = 1, n do
    if i % 10 == 0 then
      T.match(results[i], "^sqlite: UNIQUE constraint failed")
      failed = failed + 1
    else
      T.eq(results[i], "ok")
    end
  end
  T.eq(failed, 5)
  T.eq(assert(db:exec("SELECT count(*) AS n FROM t"))[1].n, 1 + n - 5)
  local st = db:stats()
  T.ok(st.batches < st.ops, "statements were grouped: " .. st.batches .. " batches for " .. st.ops)
  T.ok(st.work_seconds > 0, "the jobs' time is counted")
  T.eq(st.queued, 0)
end)

T.test("a batch is all or nothing, and names the failing statement", function()
  local db = fresh()
  assert(db:exec("INSERT INTO t (k) VALUES ('a')"))
  local r, err = db:batch { { "INSERT INTO t (k) VALUES (?)", "b" }, { "INSERT INTO t (k) VALUES ('a')" } }
  T.eq(r, nil)
  T.match(err, "^sqlite: #2: UNIQUE")
  T.eq(assert(db:exec("SELECT count(*) AS n FROM t WHERE k = 'b'"))[1].n, 0)
  local res = assert(db:batch { { "INSERT INTO t (k, v) VALUES (?, ?)", "c", nil, n = 3 },
    { "SELECT k, v FROM t WHERE k = ?", "c" } })
  T.eq(res[1].changes, 1)
  T.eq(res[2].rows, { { k = "c" } })
end)

T.test("transactions commit on return, roll back on nil, err and on raise", function()
  local db = fresh()
  local v = assert(db:transaction(function(tx, k)
    assert(tx:exec("INSERT INTO t (k) VALUES (?)", k))
    return assert(tx:exec("SELECT count(*) AS n FROM t"))[1].n
  end, "x"))
  T.eq(v, 1)
  local r, err = db:transaction(function(tx)
    assert(tx:exec("INSERT INTO t (k) VALUES ('y')"))
    return nil, "changed my mind"
  end)
  T.eq({ r, err }, { nil, "changed my mind" })
  T.raises(function()
    db:transaction(function(tx)
      assert(tx:exec("INSERT INTO t (k) VALUES ('z')"))
      error("boom")
    end)
  end, "boom")
  T.eq(assert(db:exec("SELECT k FROM t ORDER BY k")), { { k = "x" } })
end)

T.test("statements of others wait for an open transaction, then run", function()
  local db = fresh()
  local order = {}
  local inside = orrery.chan()
  local go_on = orrery.chan()
  local a = T.spawn(function()
    db:transaction(function(tx)
      tx:exec("INSERT INTO t (k) VALUES ('tx')")
      inside:send(true)
      go_on:recv()
      order[#order + 1] = "commit"
      return true
    end)
  end)
  inside:recv()
  local b = T.spawn(function()
    -- sees the transaction's row only after its commit
    local rows = assert(db:exec("SELECT count(*) AS n FROM t WHERE k = 'tx'"))
    order[#order + 1] = "read " .. rows[1].n
  end)
  go_on:send(true)
  join { a, b }
  T.eq(order, { "commit", "read 1" })
end)

T.test("a tx object used after its transaction ended is refused", function()
  local db = fresh()
  local saved
  assert(db:transaction(function(tx) saved = tx; return true end))
  local r, err = saved:exec("SELECT 1")
  T.eq({ r, err }, { nil, "sqlite: the transaction has ended" })
end)

T.test("committed rows survive a close and reopen; WAL and FULL are in effect", function()
  local db, path = fresh()
  for i = 1, 20 do assert(db:exec("INSERT INTO t (k) VALUES (?)", "r" .. i)) end
  T.eq(assert(db:exec("PRAGMA journal_mode"))[1].journal_mode, "wal")
  T.eq(assert(db:exec("PRAGMA synchronous"))[1].synchronous, 2)
  T.eq(db:close(), true)
  T.eq({ db:exec("SELECT 1") }, { nil, "sqlite: closed" })
  local db2 = assert(sqlite.open(path, { synchronous = "normal" }))
  T.eq(assert(db2:exec("SELECT count(*) AS n FROM t"))[1].n, 20)
  T.eq(assert(db2:exec("PRAGMA synchronous"))[1].synchronous, 1)
end)

T.test("another process sees what was committed", function()
  local db, path = fresh()
  assert(db:exec("INSERT INTO t (k) VALUES ('seen')"))
  local _, out = T.script([[
    local sqlite = require "orrery.sqlite"
    local db = assert(sqlite.open(]] .. ("%q"):format(path) .. [[, { readonly = true }))
    print(assert(db:exec("SELECT k FROM t"))[1].k)
  ]])
  T.match(out, "seen")
end)

T.test("errors: open failures name the file, SQL errors, closed handles", function()
  local r, err = sqlite.open("/nonexistent-dir/x.db")
  T.eq(r, nil)
  T.match(err, "^sqlite: unable to open database file %(/nonexistent%-dir/x.db%)")
  local db = fresh()
  T.match(select(2, db:exec("SELEC 1")), "^sqlite: near \"SELEC\": syntax error")
  T.match(select(2, db:exec("SELECT ?", 1, 2)), "too many parameters")
  T.match(select(2, db:exec("  ")), "empty statement")
  local path, dir = tmpdb()
  local f = io.open(path, "w")
  f:write(("not a database\n"):rep(100))
  f:close()
  r, err = sqlite.open(path)
  T.eq(r, nil)
  T.match(err, "not a database")
end)

T.test("bad arguments raise errors naming the function", function()
  local db = fresh()
  T.raises(function() sqlite.open(42) end, "orrery.sqlite.open: bad argument #1")
  T.raises(function() sqlite.open("x.db", { sync = "full" }) end, "orrery.sqlite.open: unknown option 'sync'")
  T.raises(function() sqlite.open("x.db", { synchronous = "always" }) end, "bad option 'synchronous'")
  T.raises(function() db:exec(42) end, "orrery.sqlite.exec: bad argument #1")
  T.raises(function() db:exec("SELECT ?", function() end) end, "bad parameter #1")
  T.raises(function() db:exec("SELECT ?", {}) end, "bad parameter #1")
  T.raises(function() db:batch {} end, "orrery.sqlite.batch: bad argument #1")
  T.raises(function() db:batch { "SELECT 1" } end, "bad statement #1")
  T.raises(function() db.exec({}, "SELECT 1") end, "bad self")
  T.raises(function() db:transaction(42) end, "orrery.sqlite.transaction: bad argument #1")
  T.raises(function() sqlite.blob(1) end, "orrery.sqlite.blob: bad argument #1")
end)

T.test("a cancelled wait returns at once; the statement still runs", function()
  local db = fresh()
  local ctx, cancel = orrery.context.with_cancel()
  cancel()
  local r, err = require("orrery.sched").with_ctx(ctx, function()
    return db:exec("INSERT INTO t (k) VALUES ('late')")
  end)
  T.eq({ r, err }, { nil, "canceled" })
  T.eq(assert(db:exec("SELECT count(*) AS n FROM t WHERE k = 'late'"))[1].n, 1)
end)

T.test("a transaction cancelled while its BEGIN runs rolls back; the handle goes on", function()
  local db = fresh()
  local sched = require "orrery.sched"
  for _, when in ipairs { "before", "during" } do
    local ctx, cancel = orrery.context.with_cancel()
    if when == "before" then cancel() end
    local ran = false
    local out = T.spawn(function()
      return sched.with_ctx(ctx, function()
        return db:transaction(function(tx)
          ran = true
          return tx:exec("INSERT INTO t (k) VALUES (?)", "cancelled " .. when)
        end)
      end)
    end)
    -- "during": the BEGIN is on the pool when the context ends; the
    -- loop cannot have taken its result yet
    if when == "during" then orrery.yield(); cancel() end
    T.eq(out:recv(), { true, nil, "canceled" }, when)
    T.eq(ran, false, when .. ": the body never ran")
    -- the BEGIN that completed for nobody was rolled back: the handle
    -- takes other work, and a transaction of its own
    T.eq(assert(db:exec("SELECT count(*) AS n FROM t WHERE k = ?", "cancelled " .. when))[1].n, 0)
    assert(db:transaction(function(tx) return tx:exec("INSERT INTO t (k) VALUES (?)", "after " .. when) end))
    T.eq(assert(db:exec("SELECT count(*) AS n FROM t WHERE k = ?", "after " .. when))[1].n, 1)
    T.eq(db:stats().in_tx, false, when)
  end
end)

T.test("an unreferenced handle is closed by the collector", function()
  local path = tmpdb()
  do
    local db = assert(sqlite.open(path))
    assert(db:exec("CREATE TABLE x (a)"))
  end
  collectgarbage()
  collectgarbage()
  local db = assert(sqlite.open(path))
  T.eq(#assert(db:exec("SELECT * FROM x")), 0)
end)
