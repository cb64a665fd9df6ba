-- SPDX-License-Identifier: MIT
-- saga_pg_test.lua -- orrery.saga on a PostgreSQL journal (a throwaway
-- cluster from pg_helpers.lua): the engine's main cases, recovery of an
-- instance whose process was killed, the version rule, and several orrery
-- processes sharing one journal: takeover of a killed process's
-- instances once its lease expired, two processes recovering at once
-- never resuming one instance twice, and a process that lost its lease
-- (stopped past it, or cut off from the database for a whole lease) no
-- longer driving its instances. Each step's effect
-- is an INSERT keyed by the step's idempotency key, so that the test
-- counts how often each took effect. Skipped, saying why, when the server
-- binaries are missing.
local T = require "orrery.test"
local orrery = require "orrery"
local saga = require "orrery.saga"
local pg = require "orrery.pg"

local root = (debug.getinfo(1, "S").source:match("^@(.*)tests/lua/saga_pg_test%.lua$") or "")
local pgh = dofile(root .. "tests/lua/pg_helpers.lua")

local why = pgh.missing()
local cluster, start_err
local ndb = 0

-- Each case gets a database of its own on the one cluster (started on
-- first use; the last case stops it), and its URL.
local function case(name, fn, opts)
  T.test("saga on pg: " .. name, function()
    if why then T.skip(why) end
    if not cluster and not start_err then
      cluster, start_err = pgh.start { settings = { fsync = "off" } }
    end
    if start_err then T.skip("the cluster did not start: " .. start_err) end
    ndb = ndb + 1
    local db = "saga" .. ndb
    assert(cluster.psql("CREATE DATABASE " .. db, "postgres"))
    fn(("postgresql://postgres@127.0.0.1:%d/%s"):format(cluster.port, db))
  end, opts)
end

local function tmpdir()
  local p = io.popen("mktemp -d")
  local d = p:read("*l")
  p:close()
  return d
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function slurp(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

-- Polls cond() until it returns a true value (returned) or `secs` pass.
local function eventually(what, cond, secs)
  local deadline = orrery.now() + (secs or 30)
  while true do
    local v = cond()
    if v then return v end
    if orrery.now() > deadline then T.fail("never happened: " .. what) end
    orrery.sleep(0.02)
  end
end

local function one(db, sql, ...)
  local rows = assert(db:exec(sql, ...))
  return rows[1]
end

-- In-process fake services, as in saga_test.lua.
local function order_saga(journal, opts)
  opts = opts or {}
  local log = {}
  local function service(name, undo)
    return function(sc)
      log[#log + 1] = name
      local f = opts.fail and opts.fail[name]
      if f and f(sc) then return nil, name .. " failed" end
      return { by = name, key = sc.key, attempt = sc.attempt }
    end, function(sc)
      log[#log + 1] = undo
      return true
    end
  end
  local create, cancel = service("create", "cancel")
  local charge, refund = service("charge", "refund")
  local ship = service("ship")
  local def = saga.define {
    name = opts.name or "order", journal = journal, recover = false,
    steps = {
      { name = "create", action = create, compensate = cancel },
      { name = "charge", action = charge, compensate = refund },
      { name = "ship", action = ship },
    },
  }
  return def, log
end

case("a saga completes and its history is in the journal", function(url)
  local def, log = order_saga(url)
  local r, err = def:run({ item = "apple" }, { key = "order-1" })
  T.eq(err, nil)
  T.eq(r.by, "ship")
  T.eq(log, { "create", "charge", "ship" })
  local g = assert(def:get("order-1"))
  T.eq(g.state, "completed")
  T.eq(g.input, { item = "apple" })
  local kinds = {}
  for _, e in ipairs(g.history) do kinds[#kinds + 1] = e.kind .. (e.step and ("/" .. e.step) or "") end
  T.eq(kinds, { "started", "step_started/create", "step_done/create", "step_started/charge",
    "step_done/charge", "step_started/ship", "step_done/ship", "finished" })
  -- a finished instance has no owner left
  local db = assert(pg.connect(url))
  local row = one(db, "SELECT owner, lease_until FROM saga_instances WHERE key = 'order-1'")
  T.eq(row.owner, nil)
  T.eq(row.lease_until, nil)
end)

case("a failing step compensates the steps before it, last first", function(url)
  local def, log = order_saga(url, { fail = { ship = function() return true end } })
  T.eq({ def:run({}, { key = "bad" }) }, { nil, "ship failed" })
  T.eq(log, { "create", "charge", "ship", "refund", "cancel" })
  T.eq(def:get("bad").state, "compensated")
end)

case("the same key returns the same instance; a different input is key_conflict", function(url)
  local def, log = order_saga(url)
  local a = assert(def:run({ n = 1 }, { key = "dup" }))
  local b = assert(def:run({ n = 1 }, { key = "dup" }))
  T.eq(a, b)
  T.eq(#log, 3, "ran once")
  T.eq({ def:run({ n = 2 }, { key = "dup" }) }, { nil, "key_conflict" })
  local other = order_saga(url, { name = "other" })
  T.eq({ other:run({ n = 1 }, { key = "dup" }) }, { nil, "key_conflict" })
  -- concurrent duplicates: one instance
  local gate = orrery.chan()
  local def2, log2 = order_saga(url, { name = "gated",
    fail = { charge = function() gate:recv(); return false end } })
  local out1 = T.spawn(function() return def2:run({}, { key = "g" }) end)
  local out2 = T.spawn(function() return def2:run({}, { key = "g" }) end)
  eventually("the first instance reaches charge", function()
    for _, v in ipairs(log2) do if v == "charge" then return true end end
  end)
  gate:send(true)
  local r1, r2 = out1:recv(), out2:recv()
  T.eq(r1[1], true)
  T.eq(r2[1], true)
  T.eq(r1[2], r2[2])
  T.eq(#log2, 3, "the duplicate did not run the steps again")
end)

case("a write for an instance another process now owns fails and stops it", function(url)
  -- a lease long enough that no renewal runs during the case: the
  -- journal write's own ownership check is what stops the instance
  local j = assert(saga.journal(url, { lease = 3600 }))
  local gate = orrery.chan()
  local log = {}
  local def = saga.define { name = "fenced", journal = j, recover = false, steps = {
    { name = "a", action = function() gate:recv(); log[#log + 1] = "a"; return 1 end },
    { name = "b", action = function() log[#log + 1] = "b"; return 2 end },
  } }
  local out = T.spawn(function() return def:run({}, { key = "f" }) end)
  local db = assert(pg.connect(url))
  eventually("the instance is recorded", function()
    return one(db, "SELECT count(*) AS n FROM saga_instances WHERE key = 'f'").n == 1
  end)
  -- another process claims it (as recovery would once the lease expired)
  assert(db:exec("UPDATE saga_instances SET owner = 'thief' WHERE key = 'f'"))
  gate:send(true)
  local r = out:recv()
  T.eq(r[1], true)
  T.eq(r[2], nil)
  T.match(r[3], "^saga: lease lost")
  T.eq(log, { "a" }, "step b never ran")
  local g = def:get("f")
  T.eq(g.state, "running")
  for _, e in ipairs(g.history) do T.ne(e.kind, "step_done", "nothing written after the claim") end
  T.eq(one(db, "SELECT owner FROM saga_instances WHERE key = 'f'").owner, "thief")
end)

-- The child runs the saga and kills itself with SIGKILL inside step b.
local CRASH = [[
  local saga = require "orrery.saga"
  local pid = require("orrery").pid()
  local url, version = ...
  local j = assert(saga.journal(url, { lease = 0.5 }))
  local def = saga.define { name = "crashy", version = tonumber(version), journal = j, recover = false, steps = {
    { name = "a", action = function() return "a" end, compensate = function() return true end },
    { name = "b", action = function() os.execute("kill -9 " .. pid) return "b" end },
    { name = "c", action = function() return "c" end },
  } }
  def:run({ v = 1 }, { key = "crash-1" })
]]

local function crashy(url, version, bname, resume_versions, log)
  return saga.define { name = "crashy", version = version, journal = saga.journal(url, { lease = 0.5 }),
    recover = false, resume_versions = resume_versions, steps = {
      { name = "a", action = function() log[#log + 1] = "a"; return "a" end },
      { name = bname, action = function(sc) log[#log + 1] = sc.key:match(":(.*)"); return "b" end },
      { name = "c", action = function() log[#log + 1] = "c"; return "c" end },
    } }
end

case("an instance whose process was killed is recovered once its lease expired", function(url)
  T.eq(T.script(CRASH, { args = { url, "1" } }), 137, "the child was killed")
  local log = {}
  local def = crashy(url, 1, "b", nil, log)
  T.eq(def:get("crash-1").state, "running")
  -- nothing to take up while the dead process's lease runs
  eventually("recovery takes it up", function() return def:recover() == 1 end)
  T.eq(def:recover(), 0, "recovery is safe to run twice")
  T.eq(log, { "b", "c" })
  local g = def:get("crash-1")
  T.eq(g.state, "completed")
  T.eq(g.result, "c")
end)

case("an instance of another version is left in place unless its steps still exist", function(url)
  T.eq(T.script(CRASH, { args = { url, "1" } }), 137, "the child was killed")
  local log = {}
  local v2 = crashy(url, 2, "b", nil, log)
  local n, skipped = v2:recover()
  T.eq(n, 0)
  T.eq(#skipped, 1)
  T.eq(skipped[1].id, v2:get("crash-1").id)
  T.eq(skipped[1].version, 1)
  T.match(skipped[1].reason, "recorded under version 1; this is version 2")
  -- resume_versions = { 1 }, but step b was renamed: not resumed
  local v3 = crashy(url, 3, "b2", { 1 }, log)
  local reason = eventually("v3 claims and declines it", function()
    local _, s = v3:recover()
    return s[1] and s[1].reason:match("step 'b'") and s[1].reason
  end)
  T.match(reason, "which version 3 does not define")
  T.eq(v3:get("crash-1").state, "running")
  -- the same steps: resumed
  local v4 = crashy(url, 4, "b", { 1 }, log)
  T.eq(v4:recover(), 1)
  T.eq(v4:get("crash-1").state, "completed")
  T.eq(log, { "b", "c" })
end)

case("orrery saga ls|show|retry accept a postgresql URL", function(url)
  local broken = true
  local def = saga.define { name = "cli", journal = url, recover = false, steps = {
    { name = "a", action = function() return 1 end,
      compensate = function() if broken then return nil, "nope" end return true end,
      compensate_retry = { max_attempts = 1 } },
    { name = "b", action = function() return nil, "b failed" end },
  } }
  T.eq({ def:run({}, { key = "cli-1" }) }, { nil, "b failed" })
  local st, out = T.run { "saga", "ls", url }
  T.eq(st, 0)
  T.match(out, "cli%-1%s+cli%s+compensation_failed")
  st, out = T.run { "saga", "show", url, "cli-1" }
  T.eq(st, 0)
  T.match(out, "compensation_failed%s+a%s+1")
  broken = false
  st, out = T.run { "saga", "retry", url, "cli-1" }
  T.eq(st, 0, out)
  T.eq(def:get("cli-1").state, "compensating")
  T.eq(def:recover(), 1)
  T.eq(def:get("cli-1").state, "compensated")
  local _, _, err = T.run { "saga", "show", url, "nope" }
  T.match(err, "no instance nope")
end)

-- -- Several processes on one journal --

-- mode "start": starts N sagas whose charge step blocks until GATE exists,
-- waits for them and prints how each ended. mode "recover": recovers
-- (every 0.1 s) until every instance in the journal has finished, then
-- exits. Every step's effect is INSERTed under its idempotency key
-- (effects, unique) and every attempt logged (attempts).
local CHILD = [[
  local orrery = require "orrery"
  local saga = require "orrery.saga"
  local pg = require "orrery.pg"
  local url, mode, n, gate, me, dir = ...
  n = tonumber(n)
  local pid = require("orrery").pid()
  local function exists(p) local h = io.open(p); if h then h:close() end; return h ~= nil end
  local pf = io.open(dir .. "/" .. me .. ".pid", "w"); pf:write(pid); pf:close()
  while not exists(dir .. "/go") do orrery.sleep(0.01) end
  local db = assert(pg.connect(url))
  local function effect(sc)
    assert(db:exec("INSERT INTO attempts (key, proc) VALUES ($1, $2)", sc.key, me))
    assert(db:exec("INSERT INTO effects (key) VALUES ($1) ON CONFLICT (key) DO NOTHING", sc.key))
  end
  local j = assert(saga.journal(url, { lease = 1 }))
  local def = saga.define { name = "order", journal = j, recover = mode == "recover",
    recover_interval = 0.1, steps = {
      { name = "reserve", action = function(sc) effect(sc); return 1 end },
      { name = "charge", action = function(sc)
          effect(sc)
          while not exists(gate) do
            if not orrery.sleep(0.02) then return nil, "canceled" end
          end
          return 2 end },
      { name = "ship", action = function(sc) effect(sc); return 3 end },
    } }
  if mode == "start" then
    local ids = {}
    for i = 1, n do ids[i] = assert(def:start({ i = i }, { key = "order-" .. i })) end
    for i = 1, n do print(i, def:wait(ids[i])) end
  else
    local deadline = orrery.now() + 60
    while true do
      local r = assert(db:exec("SELECT count(*) AS n FROM saga_instances WHERE state IN ('running', 'compensating')"))
      if r[1].n == 0 then break end
      if orrery.now() > deadline then print("timed out"); os.exit(1) end
      orrery.sleep(0.02)
    end
    print("all finished")
  end
]]

-- A fleet: the journal's extra tables, the child script, and how to start
-- children in the background.
local function fleet(url)
  local dir = tmpdir()
  local db = assert(pg.connect(url))
  assert(db:exec("CREATE TABLE attempts (key text NOT NULL, proc text NOT NULL)"))
  assert(db:exec("CREATE TABLE effects (key text PRIMARY KEY)"))
  local script = dir .. "/child.lua"
  local f = assert(io.open(script, "w"))
  f:write(CHILD)
  f:close()
  local F = { dir = dir, db = db }
  -- launch(me, mode, n, gate): a child in the background; waits for its pid
  function F.launch(me, mode, n, gate)
    local cmd = ("timeout -s KILL 120 %s %s %s %s %d %s %s %s >%s 2>%s </dev/null &"):format(
      T.shquote(T.exe), T.shquote(script), T.shquote(url), mode, n, T.shquote(gate), me, T.shquote(dir),
      T.shquote(dir .. "/" .. me .. ".out"), T.shquote(dir .. "/" .. me .. ".err"))
    os.execute(cmd)
    local pid = eventually(me .. " starts", function() return tonumber(slurp(dir .. "/" .. me .. ".pid")) end)
    return pid
  end
  function F.go() io.open(dir .. "/go", "w"):close() end
  function F.done() os.execute("rm -rf " .. T.shquote(dir)) end
  function F.alive(pid) return os.execute("kill -0 " .. pid .. " 2>/dev/null") == 0 end
  function F.out(me) return slurp(dir .. "/" .. me .. ".out"), slurp(dir .. "/" .. me .. ".err") end
  function F.count(sql, ...) return one(db, sql, ...).n end
  -- Every instance finished exactly once, completed, each step's
  -- effect recorded once per idempotency key.
  function F.check_once(n)
    T.eq(F.count("SELECT count(*) AS n FROM saga_instances WHERE state = 'completed'"), n)
    T.eq(F.count("SELECT count(*) AS n FROM saga_events WHERE kind = 'finished'"), n, "one finish each")
    T.eq(F.count("SELECT count(*) AS n FROM (SELECT instance FROM saga_events WHERE kind = 'finished' GROUP BY instance HAVING count(*) = 1) s"), n)
    T.eq(F.count("SELECT count(*) AS n FROM effects"), 3 * n, "one effect per step and instance")
    T.eq(F.count([[SELECT count(*) AS n FROM effects e JOIN saga_instances i ON e.key = i.id || ':reserve'
      OR e.key = i.id || ':charge' OR e.key = i.id || ':ship']]), 3 * n, "keyed by the idempotency key")
    -- no event after an instance's finish
    T.eq(F.count([[SELECT count(*) AS n FROM saga_events e JOIN saga_events f
      ON f.instance = e.instance AND f.kind = 'finished' AND e.seq > f.seq]]), 0)
  end
  return F
end

local N = 20

case("a killed process's instances are taken over by another once its lease expired", function(url)
  local F = fleet(url)
  local a = F.launch("A", "start", N, F.dir .. "/never")
  F.go()
  eventually("A's instances all block in charge", function()
    return F.count("SELECT count(*) AS n FROM attempts WHERE proc = 'A' AND key LIKE '%:charge'") == N
  end)
  T.eq(F.count("SELECT count(*) AS n FROM saga_instances WHERE owner IS NULL"), 0, "A owns them")
  -- the same key here, while A runs it: A's instance, not a new one
  local here = saga.define { name = "order", journal = url, recover = false, steps = {
    { name = "reserve", action = function() T.fail("ran here") end } } }
  local r, state, id = here:run({ i = 1 }, { key = "order-1" })
  T.eq({ r, state, id }, { nil, "running", here:get("order-1").id })
  os.execute("kill -9 " .. a)
  eventually("A is gone", function() return not F.alive(a) end)
  io.open(F.dir .. "/open", "w"):close()
  local st, out, err = T.script(CHILD, { args = { url, "recover", tostring(N), F.dir .. "/open", "B", F.dir },
    timeout = 90 })
  T.eq(st, 0, err)
  T.match(out, "all finished")
  F.check_once(N)
  -- A ran reserve and started charge; B re-ran charge (same key) and ship
  T.eq(F.count("SELECT count(*) AS n FROM attempts WHERE proc = 'A'"), 2 * N)
  T.eq(F.count("SELECT count(*) AS n FROM attempts WHERE proc = 'B' AND key LIKE '%:reserve'"), 0)
  T.eq(F.count("SELECT count(*) AS n FROM attempts WHERE proc = 'B' AND key LIKE '%:charge'"), N)
  T.eq(F.count("SELECT count(*) AS n FROM attempts WHERE proc = 'B' AND key LIKE '%:ship'"), N)
  T.eq(F.count("SELECT count(*) AS n FROM saga_events WHERE kind = 'recovered'"), N)
  F.done()
end, { timeout = 120 })

case("two processes recovering at once never resume the same instance", function(url)
  local F = fleet(url)
  local n = 200
  local a = F.launch("A", "start", n, F.dir .. "/never")
  F.go()
  eventually("A's instances all block in charge", function()
    return F.count("SELECT count(*) AS n FROM attempts WHERE proc = 'A' AND key LIKE '%:charge'") == n
  end)
  os.execute("kill -9 " .. a)
  eventually("A is gone", function() return not F.alive(a) end)
  io.open(F.dir .. "/open", "w"):close()
  os.remove(F.dir .. "/go")
  local b1 = F.launch("B1", "recover", n, F.dir .. "/open")
  local b2 = F.launch("B2", "recover", n, F.dir .. "/open")
  F.go() -- both start recovering at the same moment
  eventually("B1 and B2 exit", function() return not F.alive(b1) and not F.alive(b2) end, 90)
  T.match(F.out("B1"), "all finished")
  T.match(F.out("B2"), "all finished")
  F.check_once(n)
  T.eq(F.count("SELECT count(*) AS n FROM saga_events WHERE kind = 'recovered'"), n, "each resumed once")
  T.eq(F.count("SELECT count(*) AS n FROM attempts WHERE proc IN ('B1', 'B2') AND key LIKE '%:ship'"), n)
  T.eq(F.count("SELECT count(*) AS n FROM attempts WHERE proc IN ('B1', 'B2') AND key LIKE '%:charge'"), n)
  F.done()
end, { timeout = 120 })

case("a process that lost its lease stops driving its instances", function(url)
  local F = fleet(url)
  local a = F.launch("A", "start", N, F.dir .. "/never")
  F.go()
  eventually("A's instances all block in charge", function()
    return F.count("SELECT count(*) AS n FROM attempts WHERE proc = 'A' AND key LIKE '%:charge'") == N
  end)
  -- A stops (a long pause, a partition): its lease runs out and B takes over
  os.execute("kill -STOP " .. a)
  io.open(F.dir .. "/open", "w"):close()
  local st, out, err = T.script(CHILD, { args = { url, "recover", tostring(N), F.dir .. "/open", "B", F.dir },
    timeout = 90 })
  T.eq(st, 0, err)
  T.match(out, "all finished")
  -- A carries on, finds its lease lost, and gives its instances up
  os.execute("kill -CONT " .. a)
  eventually("A exits", function() return not F.alive(a) end)
  local _, aerr = F.out("A")
  T.match(aerr, "lease lost")
  local lost = 0
  for _ in aerr:gmatch("order %x+: saga: lease lost") do lost = lost + 1 end
  T.eq(lost, N, aerr)
  F.check_once(N)
  T.eq(F.count("SELECT count(*) AS n FROM attempts WHERE proc = 'A' AND key LIKE '%:ship'"), 0)
  F.done()
end, { timeout = 120 })

case("a process whose renewals fail for a whole lease stops driving its instances", function(url)
  local j = assert(saga.journal(url, { lease = 1 }))
  local def = saga.define { name = "cut", journal = j, recover = false, steps = {
    { name = "a", action = function()
        if not orrery.sleep(120) then return nil, "canceled" end
        return 1 end },
  } }
  local out = T.spawn(function() return def:run({}, { key = "cut" }) end)
  local db = assert(pg.connect(url))
  eventually("the instance is recorded", function()
    return one(db, "SELECT count(*) AS n FROM saga_instances WHERE key = 'cut'").n == 1
  end)
  cluster.down() -- the database is unreachable: no renewal succeeds
  local r = out:recv()
  assert(cluster.up())
  T.eq(r[1], true)
  T.eq(r[2], nil)
  T.match(r[3], "^saga: lease lost: the lease was not renewed for 1s")
end)

T.test("saga on pg: the cluster stops", function()
  if cluster then cluster.stop() end
end)
