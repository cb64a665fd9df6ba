-- SPDX-License-Identifier: MIT
-- saga_test.lua -- orrery.saga with in-process fake services on a real
-- SQLite journal: every failure point and the compensation order, retries,
-- compensation failure and its retry by hand, the pivot, duplicate keys
-- and key conflicts, step deadlines, and recovery after the process
-- running an instance was killed with SIGKILL in the middle of a step.
local T = require "orrery.test"
local orrery = require "orrery"
local saga = require "orrery.saga"

local function tmpdb()
  local p = io.popen("mktemp -d")
  local d = p:read("*l")
  p:close()
  return d .. "/saga.db"
end

-- Three fake services that log what they are asked to do.
local function order_saga(journal, opts)
  opts = opts or {}
  local log = {}
  local function service(name, undo)
    return function(sc)
      log[#log + 1] = name
      local f = opts.fail and opts.fail[name]
      local how = f and f(sc)
      if how == "refuse" then return saga.refuse(name .. " failed") end
      if how then return nil, name .. " failed" end
      return { by = name, key = sc.key, attempt = sc.attempt }
    end, function(sc)
      log[#log + 1] = undo
      local f = opts.fail and opts.fail[undo]
      if f and f(sc) then return nil, undo .. " failed" end
      return true
    end
  end
  local create, cancel = service("create", "cancel")
  local charge, refund = service("charge", "refund")
  local reserve, release = service("reserve", "release")
  local ship, unship = service("ship", "unship")
  local def = saga.define {
    name = opts.name or "order", journal = journal, recover = false,
    steps = {
      { name = "create", action = create, compensate = cancel },
      { name = "charge", action = charge, compensate = refund, retry = opts.charge_retry,
        compensate_retry = { max_attempts = 2, initial = 0 } },
      { name = "reserve", action = reserve, compensate = release, timeout = opts.reserve_timeout,
        pivot = opts.pivot_reserve },
      { name = "ship", action = ship, compensate = unship },
    },
  }
  return def, log
end

T.test("a saga that succeeds runs every step once, in order, and records it all", function()
  local def, log = order_saga(tmpdb())
  local r, err = def:run({ item = "apple" }, { key = "order-1" })
  T.eq(err, nil)
  T.eq(r.by, "ship")
  T.match(r.key, ":ship$")
  T.eq(log, { "create", "charge", "reserve", "ship" })
  local g = assert(def:get("order-1"))
  T.eq(g.state, "completed")
  T.eq(g.input, { item = "apple" })
  T.eq(g.result.by, "ship")
  local kinds = {}
  for _, e in ipairs(g.history) do kinds[#kinds + 1] = e.kind .. (e.step and ("/" .. e.step) or "") end
  T.eq(kinds, { "started", "step_started/create", "step_done/create", "step_started/charge",
    "step_done/charge", "step_started/reserve", "step_done/reserve", "step_started/ship",
    "step_done/ship", "finished" })
end)

-- Fails the saga at each step in turn, the way `how` says ("refuse" or
-- a plain failure), and checks what ran: the steps up to the failing one,
-- then undo[step] in order.
local function fail_each(prefix, how, undo)
  local journal = tmpdb()
  for _, at in ipairs { "create", "charge", "reserve", "ship" } do
    local def, log = order_saga(journal, { name = prefix .. at,
      charge_retry = { max_attempts = 3, initial = 0 },
      fail = { [at] = function() return how end } })
    local r, err = def:run({})
    T.eq({ r, err }, { nil, at .. " failed" })
    local expect = { "create", "charge", "reserve", "ship" }
    local i = 1
    while expect[i] ~= at do i = i + 1 end
    local want = {}
    for k = 1, i do want[k] = expect[k] end
    for _, u in ipairs(undo[at]) do want[#want + 1] = u end
    T.eq(log, want, tostring(how) .. " at " .. at)
  end
end

T.test("a failure at each step compensates it and the steps before it, last first", function()
  -- a failure may have taken effect (a call whose answer was lost): the
  -- failed step is compensated first (and a charge that keeps failing is
  -- retried by its policy, then compensated)
  fail_each("fail-", true, { create = { "cancel" }, charge = { "charge", "charge", "refund", "cancel" },
    reserve = { "release", "refund", "cancel" }, ship = { "unship", "release", "refund", "cancel" } })
end)

T.test("a refusal (saga.refuse) is not retried and not compensated", function()
  fail_each("refuse-", "refuse", { create = {}, charge = { "cancel" }, reserve = { "refund", "cancel" },
    ship = { "release", "refund", "cancel" } })
end)

T.test("an action that raises is compensated too; after the pivot a refusal is retried", function()
  local def, log = order_saga(tmpdb(), { fail = { reserve = function() error("bug in reserve") end } })
  local r, err = def:run({})
  T.eq(r, nil)
  T.match(err, "bug in reserve")
  T.eq(log, { "create", "charge", "reserve", "release", "refund", "cancel" })
  local n = 0
  local def2, log2 = order_saga(tmpdb(), { name = "pivoted", pivot_reserve = true,
    fail = { ship = function() n = n + 1; return n < 3 and "refuse" end } })
  assert(def2:run({}))
  T.eq(log2, { "create", "charge", "reserve", "ship", "ship", "ship" })
end)

T.test("a step is retried by its policy with a stable idempotency key", function()
  local keys = {}
  local def, log = order_saga(tmpdb(), {
    charge_retry = { max_attempts = 3, initial = 0 },
    fail = { charge = function(sc) keys[#keys + 1] = sc.key; return sc.attempt < 3 end } })
  local r = assert(def:run({}, { key = "k" }))
  T.eq(r.by, "ship")
  T.eq(log, { "create", "charge", "charge", "charge", "reserve", "ship" })
  T.eq(#keys, 3)
  T.eq(keys[1], keys[3])
  local id = def:get("k").id
  T.eq(keys[1], id .. ":charge")
  local starts = 0
  for _, e in ipairs(def:get("k").history) do
    if e.kind == "step_started" and e.step == "charge" then starts = starts + 1 end
  end
  T.eq(starts, 3)
end)

T.test("a compensation that keeps failing leaves compensation_failed; retry finishes it", function()
  local broken = true
  local def, log = order_saga(tmpdb(), { fail = {
    reserve = function() return "refuse" end,
    refund = function() return broken end } })
  local r, err = def:run({}, { key = "stuck" })
  T.eq({ r, err }, { nil, "reserve failed" })
  T.eq(def:get("stuck").state, "compensation_failed")
  T.eq(log, { "create", "charge", "reserve", "refund", "refund" })
  broken = false
  local r2, err2 = def:retry("stuck")
  T.eq(r2, nil)
  T.eq(err2, "reserve failed")
  T.eq(def:get("stuck").state, "compensated")
  -- the refund ran again, then the cancel that was still owed
  T.eq(log, { "create", "charge", "reserve", "refund", "refund", "refund", "cancel" })
  T.eq({ def:retry("stuck") }, { nil, "not_failed" })
  -- a definition of another version does not resume it
  broken = true
  local journal = def.journal
  T.eq({ def:run({}, { key = "stuck3" }) }, { nil, "reserve failed" })
  T.eq(def:get("stuck3").state, "compensation_failed")
  local v2 = saga.define { name = "order", version = 2, journal = journal, recover = false, steps = {
    { name = "other", action = function() return 1 end } } }
  local r3, err3 = v2:retry("stuck3")
  T.eq(r3, nil)
  T.match(err3, "recorded under version 1 with step 'create', which version 2 does not define")
  T.eq(def:get("stuck3").state, "compensating")
end)

T.test("after the pivot the saga only moves forward", function()
  local n = 0
  local def, log = order_saga(tmpdb(), { pivot_reserve = true,
    fail = { ship = function() n = n + 1; return n < 4 end } })
  local r = assert(def:run({}))
  T.eq(r.by, "ship")
  T.eq(log, { "create", "charge", "reserve", "ship", "ship", "ship", "ship" })
end)

T.test("the same key returns the same instance; a different input is key_conflict", function()
  local def, log = order_saga(tmpdb())
  local a = assert(def:run({ n = 1 }, { key = "dup" }))
  local b = assert(def:run({ n = 1 }, { key = "dup" }))
  T.eq(a, b)
  T.eq(#log, 4, "ran once")
  T.eq({ def:run({ n = 2 }, { key = "dup" }) }, { nil, "key_conflict" })
  -- concurrent duplicates while the first is in flight wait for it
  local gate = orrery.chan()
  local def2, log2 = order_saga(tmpdb(), { name = "gated",
    fail = { charge = function() gate:recv(); return false end } })
  local out1 = T.spawn(function() return def2:run({}, { key = "g" }) end)
  local out2 = T.spawn(function() return def2:run({}, { key = "g" }) end)
  orrery.yield()
  gate:send(true)
  local r1, r2 = out1:recv(), out2:recv()
  T.eq(r1[1], true)
  T.eq(r2[1], true)
  T.eq(r1[2], r2[2])
  T.eq(#log2, 4, "the duplicate did not run the steps again")
end)

T.test("the same key from another process matches whatever member order it recorded", function()
  -- LuaJIT seeds its string hashes per process, so the process that
  -- recorded an input may have written its members in another order.
  local def, log = order_saga(tmpdb())
  local input = { sku = "apple", qty = 1, amount = 42, note = "x" }
  local a = assert(def:run(input, { key = "other-order" }))
  assert(def.journal.db:exec("UPDATE saga_instances SET input = ? WHERE key = ?",
    '{"note":"x","amount":42,"qty":1,"sku":"apple"}', "other-order"))
  local b = assert(def:run({ amount = 42, qty = 1, sku = "apple", note = "x" }, { key = "other-order" }))
  T.eq(b, a)
  T.eq(#log, 4, "ran once")
  T.eq({ def:run({ amount = 43, qty = 1, sku = "apple", note = "x" }, { key = "other-order" }) },
    { nil, "key_conflict" })
end)

T.test("a step past its deadline fails with timeout and is compensated too", function()
  local def, log = order_saga(tmpdb(), { reserve_timeout = 0.05, fail = {
    reserve = function(sc) orrery.sleep(10); return false end } })
  local r, err = def:run({}, { key = "slow" })
  T.eq(r, nil)
  T.eq(err, "timeout")
  T.eq(log, { "create", "charge", "reserve", "release", "refund", "cancel" })
  T.eq(def:get("slow").state, "compensated")
end)

T.test("start runs in the background; wait and get see the outcome", function()
  local def = order_saga(tmpdb())
  local id = assert(def:start({ x = 1 }, { key = "bg" }))
  T.eq(def:start({ x = 1 }, { key = "bg" }), id)
  local r = assert(def:wait(id))
  T.eq(r.by, "ship")
  T.eq(def:get(id).state, "completed")
  T.eq({ def:get("nope") }, { nil, "not_found" })
end)

-- The child runs the saga and kills itself with SIGKILL inside `at`.
local CHILD = [[
  local saga = require "orrery.saga"
  local pid = require("orrery").pid()
  local at, journal, mode = ...
  local def = saga.define { name = "crashy", journal = journal, recover = false, steps = {
    { name = "a", action = function() return "a" end, compensate = function() return true end },
    { name = "b", action = function(sc)
        if at == "b" then os.execute("kill -9 " .. pid) end
        return "b" end, compensate = function() return true end, recovery = mode },
    { name = "c", action = function() return "c" end },
  } }
  def:run({ v = 1 }, { key = "crash-1" })
]]

local function crash_then_recover(mode)
  local journal = tmpdb()
  local status = T.script(CHILD, { args = { "b", journal, mode } })
  T.eq(status, 137, "the child was killed")
  local log = {}
  local def = saga.define { name = "crashy", journal = journal, recover = false, steps = {
    { name = "a", action = function() log[#log + 1] = "a"; return "a" end,
      compensate = function() log[#log + 1] = "undo a"; return true end },
    { name = "b", action = function(sc) log[#log + 1] = "b " .. sc.key:match(":(.*)"); return "b" end,
      compensate = function() log[#log + 1] = "undo b"; return true end, recovery = mode },
    { name = "c", action = function() log[#log + 1] = "c"; return "c" end },
  } }
  T.eq(def:get("crash-1").state, "running")
  T.eq(def:recover(), 1)
  T.eq(def:recover(), 0, "recovery is safe to run twice")
  return def, log
end

T.test("recovery re-runs an interrupted step with the same key", function()
  local def, log = crash_then_recover("retry")
  T.eq(log, { "b b", "c" })
  local g = def:get("crash-1")
  T.eq(g.state, "completed")
  T.eq(g.result, "c")
end)

T.test("recovery compensates an interrupted step whose definition says so", function()
  local def, log = crash_then_recover("compensate")
  T.eq(log, { "undo b", "undo a" })
  T.eq(def:get("crash-1").state, "compensated")
end)

T.test("bad definitions and arguments raise errors naming the function", function()
  local j = tmpdb()
  local ok = { name = "x", action = function() end }
  T.raises(function() saga.define(42) end, "orrery.saga.define: bad argument #1")
  T.raises(function() saga.define { name = "x", journal = j } end, "bad option 'steps'")
  T.raises(function() saga.define { name = "x", journal = j, steps = { { name = "a" } } } end,
    "step 'a': bad option 'action'")
  T.raises(function() saga.define { name = "x", journal = j, steps = { ok, ok } } end,
    "duplicate step name 'x'")
  T.raises(function() saga.define { name = "x", journal = j, steps = { { name = "a", action = print, colour = 1 } } } end,
    "unknown option 'colour'")
  T.raises(function() saga.define { name = "x", journal = 7, steps = { ok } } end, "bad option 'journal'")
  T.raises(function() saga.journal(nil) end, "orrery.saga.journal: bad argument #1")
  local def = saga.define { name = "x", journal = j, steps = { ok }, recover = false }
  T.raises(function() def:run({}, { kee = 1 }) end, "orrery.saga.run: unknown option 'kee'")
  T.raises(function() def:run({}, { key = 1 }) end, "bad option 'key'")
  T.raises(function() def:run(function() end) end, "cannot be journaled")
  T.eq({ saga.journal("mysql://x") }, { nil, "saga: unsupported journal URL mysql://x" })
  T.raises(function() saga.journal(j, { leese = 1 }) end, "orrery.saga.journal: unknown option 'leese'")
  T.raises(function() saga.define { name = "x", journal = j, steps = { ok }, resume_versions = 1 } end, "bad option 'resume_versions'")
end)

T.test("orrery saga ls|show|retry|skip: the operator's view of a journal", function()
  local json = require "orrery.json"
  local journal = tmpdb()
  local broken = true
  local def, log = order_saga(journal, { fail = {
    ship = function() return true end,
    refund = function() return broken end } })
  T.eq({ def:run({ n = 1 }, { key = "cli-1" }) }, { nil, "ship failed" })
  assert(def:run({ n = 2 }, { key = "cli-2" }) == nil)
  local st, out = T.run { "saga", "ls", journal }
  T.eq(st, 0)
  T.match(out, "cli%-1%s+order%s+compensation_failed")
  T.match(out, "2 instances: 2 compensation_failed")
  st, out = T.run { "saga", "ls", journal, "--json", "--state", "compensation_failed" }
  T.eq(st, 0)
  local rows = json.decode(out)
  T.eq(#rows, 2)
  T.eq(rows[1].key, "cli-1")
  T.eq(rows[1].error, "ship failed (compensation: refund failed)")
  st, out = T.run { "saga", "show", journal, "cli-1" }
  T.eq(st, 0)
  T.match(out, "state    compensation_failed")
  T.match(out, "step_failed%s+ship%s+1%s+[%d.]+ms%s+ship failed")
  T.match(out, "compensation_failed%s+charge")
  st, out = T.run { "saga", "show", journal, "cli-1", "--json" }
  local shown = json.decode(out)
  T.eq(shown.state, "compensation_failed")
  T.eq(shown.history[1].kind, "started")
  -- retry hands cli-1 back; skip marks cli-2's refund as done by hand
  broken = false
  st, out = T.run { "saga", "retry", journal, "cli-1" }
  T.eq(st, 0, out)
  st, out = T.run { "saga", "skip", journal, "cli-2" }
  T.eq(st, 0, out)
  T.eq(def:get("cli-1").state, "compensating")
  local before = #log
  T.eq(def:recover(), 2)
  T.eq(def:get("cli-1").state, "compensated")
  T.eq(def:get("cli-2").state, "compensated")
  local ran = {}
  for i = before + 1, #log do ran[#ran + 1] = log[i] end
  table.sort(ran)
  T.eq(ran, { "cancel", "cancel", "refund" }, "one refund retried, one skipped")
  -- errors
  st = T.run { "saga", "retry", journal, "cli-1" }
  T.eq(st, 1)
  local _, _, err = T.run { "saga", "show", journal, "nope" }
  T.match(err, "no instance nope")
  st, _, err = T.run { "saga", "ls", "/nonexistent.db" }
  T.eq(st, 1)
  T.match(err, "no journal at /nonexistent.db")
  st, _, err = T.run { "saga", "frob", journal }
  T.eq(st, 2)
  T.match(err, "unknown command 'frob'")
end)

T.test("a shutdown during a step leaves the instance for recovery, not compensated", function()
  local journal = tmpdb()
  local status, _, err = T.script([[
    local orrery = require "orrery"
    local saga = require "orrery.saga"
    local pid = require("orrery").pid()
    local def = saga.define { name = "term", journal = ..., recover = false, steps = {
      { name = "a", action = function() return "a" end, compensate = function() print("undo a"); return true end },
      { name = "b", action = function()
          os.execute("kill -TERM " .. pid)
          if not orrery.sleep(30) then return nil, "canceled" end -- the shutdown ends it
          return "b" end, retry = { max_attempts = 3, initial = 1 } },
    } }
    print(def:run({}, { key = "t" }))
  ]], { args = { journal } })
  T.eq(status ~= nil, true)
  T.eq(err:match("undo a"), nil)
  local def = saga.define { name = "term", journal = journal, recover = false, steps = {
    { name = "a", action = function() return "a" end, compensate = function() return true end },
    { name = "b", action = function() return "b2" end } } }
  T.eq(def:get("t").state, "running")
  T.eq(def:recover(), 1)
  T.eq(def:get("t").state, "completed")
  T.eq(def:get("t").result, "b2")
end)

T.test("recovery leaves an instance of another version in place and reports it", function()
  local journal = tmpdb()
  T.eq(T.script(CHILD, { args = { "b", journal, "retry" } }), 137, "the child was killed")
  local log = {}
  local function define(version, bname, resume_versions)
    return saga.define { name = "crashy", version = version, journal = journal, recover = false,
      resume_versions = resume_versions, steps = {
        { name = "a", action = function() return "a" end },
        { name = bname, action = function() log[#log + 1] = bname; return "b" end },
        { name = "c", action = function() log[#log + 1] = "c"; return "c" end },
      } }
  end
  local n, skipped = define(2, "b"):recover()
  T.eq(n, 0)
  T.eq(#skipped, 1)
  T.eq(skipped[1].version, 1)
  T.match(skipped[1].reason, "recorded under version 1; this is version 2")
  n, skipped = define(3, "b2", { 1 }):recover()
  T.eq(n, 0)
  T.match(skipped[1].reason, "with step 'b', which version 3 does not define")
  T.eq(log, {})
  local v4 = define(4, "b", { 1 })
  T.eq(v4:recover(), 1)
  T.eq(log, { "b", "c" })
  T.eq(v4:get("crash-1").state, "completed")
end)
