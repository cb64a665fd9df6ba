-- sched_test.lua -- coroutines: go, yield, id, run order, the coroutine
-- list and dump, stats, and fairness between running and waiting work.
local T = require "orrery.test"
local orrery = require "orrery"

local go, chan = orrery.go, orrery.chan

local settle = T.settle

local function find(id)
  for _, c in ipairs(orrery.coroutines()) do
    if c.id == id then return c end
  end
end

T.test("go returns the new coroutine's id and passes its arguments", function()
  local got = chan(1)
  local id = go(function(a, b, c) got:send({ orrery.id(), a, b, c }) end, 1, nil, "x")
  T.eq(type(id), "number")
  T.eq(got:recv(), { id, 1, nil, "x" })
  local id2 = go(function() end)
  T.ok(id2 > id, "ids increase and are never reused")
  T.ok(orrery.id() > 0)
  T.raises(function() go() end, "orrery.go: bad argument #1")
  T.raises(function() go("f") end, "orrery.go: bad argument #1")
end)

T.test("a new coroutine runs only when the creator yields or parks", function()
  local ran = false
  go(function() ran = true end)
  T.eq(ran, false)
  orrery.yield()
  T.eq(ran, true)
end)

T.test("ready coroutines run in FIFO order; yield goes to the back of the queue", function()
  local log = {}
  for _, name in ipairs({ "a", "b", "c" }) do
    go(function()
      log[#log + 1] = name .. "1"
      orrery.yield()
      log[#log + 1] = name .. "2"
    end)
  end
  orrery.yield()
  orrery.yield()
  T.eq(log, { "a1", "b1", "c1", "a2", "b2", "c2" })
end)

T.test("coroutines() lists every coroutine with what it waits on", function()
  local ch, other = chan(), chan(1)
  local r = go(function() ch:recv(100) end)
  local s = go(function() orrery.select { ch:recv_case(), other:send_case(1), false } end)
  other:send("fill")
  local z = go(function() orrery.sleep(100) end)
  settle({ r, s, z })
  local fresh = go(function() end)
  local now = orrery.now()

  local list = orrery.coroutines()
  for i = 2, #list do T.ok(list[i - 1].id < list[i].id, "sorted by id") end
  local mains = 0
  for _, c in ipairs(list) do
    if c.main then mains = mains + 1 end
    T.eq(type(c.id), "number")
    T.eq(type(c.state), "string")
  end
  T.eq(mains, 1, "exactly one main coroutine")

  local me = find(orrery.id())
  T.eq(me.state, "running")
  T.match(me.traceback, "sched_test.lua")

  local rc = find(r)
  T.eq(rc.state, "waiting")
  T.eq(rc.wait, "chan receive")
  T.eq(rc.chan, ch.id)
  T.ok(rc.since <= now + 1, "since is when it parked")
  T.ok(rc["until"] > now, "until is its timeout")
  T.match(rc.site, "sched_test.lua:%d+", "where it was created")
  T.match(rc.traceback, "sched_test.lua:%d+")

  local sc = find(s)
  T.eq(sc.wait, "select")
  T.eq(sc.cases, { "recv #" .. ch.id, "send #" .. other.id })

  local zc = find(z)
  T.eq(zc.wait, "sleep")
  T.ok(zc["until"] > now)

  T.eq(find(fresh).state, "runnable")
  ch:close() -- ends r and s; the sleeper ends with the test's context
end)

T.test("dump() shows ids, states, waits, creation sites and tracebacks", function()
  local ch = chan(0, "inbox")
  local id = go(function() ch:recv() end)
  settle({ id })
  local text = orrery.dump()
  local block = text:match("(coroutine " .. id .. " %b[]:.-)\n\n") or text:match("(coroutine " .. id .. " .*)$")
  T.ok(block, "the dump has a block for coroutine " .. id)
  T.match(block, "%[chan receive on chan #" .. ch.id)
  T.match(block, "created at [^\n]*sched_test.lua:%d+")
  T.match(block, "sched_test.lua:%d+")
  T.match(text, "%(main%)")
  ch:close()
end)

-- The dump's block for coroutine id: its header line.
local function dump_line(id)
  return orrery.dump():match("coroutine " .. id .. " (%b[]):\n")
end

T.test("dump() names a named channel: chan receive on chan #3 \"jobs\"", function()
  local jobs, results = chan(0, "jobs"), chan(0, "results")
  local r = go(function() jobs:recv() end)
  local s = go(function() results:send(1, 100) end)
  settle({ r, s })
  T.match(dump_line(r), '^%[chan receive on chan #' .. jobs.id .. ' "jobs", ')
  T.match(dump_line(s), '^%[chan send on chan #' .. results.id .. ' "results", ')
  T.eq(find(r).name, "jobs")
  T.eq(find(r).role, nil)
  -- A name with a quote or a newline stays on one line.
  local odd = chan(0, 'say "hi"\nthere')
  local o = go(function() odd:recv() end)
  settle({ o })
  T.match(dump_line(o), '^%[chan receive on chan #%d+ "say \\"hi\\"\\nthere", ')
  jobs:close()
  results:recv()
  odd:close()
end)

T.test("dump() shows waitgroup, mutex and semaphore waits as such", function()
  local wg = orrery.waitgroup()
  wg:add(1)
  local mu = orrery.mutex()
  mu:lock()
  local sem = orrery.semaphore(2)
  sem:acquire()
  sem:acquire()
  local w = go(function() wg:wait() end)
  local m = go(function() mu:lock() end)
  local a = go(function() sem:acquire() end)
  settle({ w, m, a })
  T.match(dump_line(w), "^%[waitgroup wait %(chan #%d+%), ")
  T.match(dump_line(m), "^%[mutex lock %(chan #" .. mu.ch.id .. "%), ")
  T.match(dump_line(a), "^%[semaphore acquire %(chan #" .. sem.ch.id .. "%), ")
  local c = find(m)
  T.eq(c.wait, "mutex lock")
  T.eq(c.role, "mutex")
  T.eq(c.chan, mu.ch.id)
  T.eq(find(w).wait, "waitgroup wait")
  T.eq(find(a).wait, "semaphore acquire")
  -- A channel the user named "mutex" is still a channel.
  local fake = chan(0, "mutex")
  local f = go(function() fake:recv() end)
  settle({ f })
  T.match(dump_line(f), '^%[chan receive on chan #%d+ "mutex", ')
  fake:close()
  wg:done()
  mu:unlock()
  sem:release()
  orrery.yield()
  mu:unlock()
end)

T.test("dump() shows errgroup, timer, ticker and ctx.done waits", function()
  local g = orrery.group()
  local hold = chan()
  g:go(function() hold:recv() end)
  local gw = go(function() g:wait() end)
  local t = orrery.timer(100)
  local tk = orrery.ticker(100)
  local ctx, cancel = orrery.context.with_cancel()
  local tr = go(function() t.c:recv() end)
  local kr = go(function() tk.c:recv() end)
  local dr = go(function() ctx:done():recv() end)
  settle({ gw, tr, kr, dr })
  T.match(dump_line(gw), "^%[errgroup wait %(chan #%d+%), ")
  T.match(dump_line(tr), "^%[timer receive %(chan #" .. t.c.id .. "%), ")
  T.match(dump_line(kr), "^%[ticker receive %(chan #" .. tk.c.id .. "%), ")
  T.match(dump_line(dr), "^%[ctx.done receive %(chan #%d+%), ")
  t:stop()
  tk:stop()
  t.c:close()
  tk.c:close()
  cancel()
  hold:close()
end)

T.test("dump() names the channels of a select's cases", function()
  local jobs, plain, mu = chan(0, "jobs"), chan(), orrery.mutex()
  mu:lock()
  local ctx, cancel = orrery.context.with_cancel()
  local s = go(function()
    orrery.select { jobs:recv_case(), plain:recv_case(), mu.ch:send_case(true), ctx:done():recv_case() }
  end)
  settle({ s })
  T.eq(find(s).cases, { ("recv #%d \"jobs\""):format(jobs.id), "recv #" .. plain.id,
    "send #" .. mu.ch.id .. " mutex", "recv #" .. ctx:done().id .. " ctx.done" })
  T.match(dump_line(s), '^%[select %[recv #%d+ "jobs", recv #%d+, send #%d+ mutex, recv #%d+ ctx.done%], ')
  cancel()
  mu:unlock()
end)

T.test("stats() counts live coroutines and pending timers", function()
  local base = orrery.stats()
  T.eq(type(base.coroutines), "number")
  T.eq(type(base.timers), "number")
  local ch = chan()
  local ids = {}
  for i = 1, 10 do ids[i] = go(function() ch:recv() end) end
  settle(ids)
  T.eq(orrery.stats().coroutines, base.coroutines + 10)
  local t = orrery.timer(100)
  T.eq(orrery.stats().timers, base.timers + 1)
  t:stop()
  ch:close()
  orrery.yield()
  T.eq(orrery.stats().coroutines, base.coroutines)
end)

T.test("pcall works across yields and parks", function()
  local ok, err = pcall(function()
    orrery.sleep(0)
    error("caught")
  end)
  T.eq(ok, false)
  T.match(err, "caught")
end)

-- A coroutine that keeps yielding must not starve timers, I/O and signals:
-- the scheduler has to poll the loop between rounds of ready coroutines.
-- (Regression: run_ready() in host/sched.c loops while anything is ready.)
T.test("a busy coroutine that keeps yielding does not starve timers", function()
  local st, out = T.script([[
    local orrery = require "orrery"
    orrery.go(function() while true do orrery.yield() end end)
    orrery.sleep(0.01)
    print("sleep returned")
    print(orrery.after(0.01):recv() ~= nil)
  ]], { timeout = 5 })
  T.eq(st, 0, "the child hung (137 = killed after 5s)")
  T.eq(out, "sleep returned\ntrue\n")
end, { timeout = 20 })

-- The parking protocol: a wake meant for one wait (its token) can never
-- end a later wait of the same coroutine.
T.test("a stale wake token does not reach a later wait", function()
  local C = require "orrery.ffi"
  local sched = require "orrery.sched"
  local a, b = orrery.chan(), orrery.chan()
  local slot, tok1
  local got = orrery.chan(4)
  local id = orrery.go(function()
    slot = C.orrery_ffi_co_slot()
    got:send({ a:recv() })
    got:send({ b:recv() })
  end)
  T.settle({ id })
  tok1 = C.orrery_ffi_co_token(slot)
  T.ne(tok1, 0)
  a:send("first")
  T.eq(got:recv(), { "first", true })
  T.settle({ id })
  local tok2 = C.orrery_ffi_co_token(slot)
  T.ne(tok2, tok1)
  T.eq(C.orrery_ffi_wake(slot, tok1, sched.WAKE_CANCELED), 0)
  T.eq(select(2, got:try_recv()), false) -- still parked on b
  T.eq(C.orrery_ffi_wake(slot, tok2, sched.WAKE_CANCELED), 1)
  T.eq(got:recv(), { nil, false, "canceled" })
end)
