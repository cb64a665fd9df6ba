-- SPDX-License-Identifier: MIT
-- breaker_test.lua -- orrery.breaker: the gobreaker v2 state machine driven
-- by an injected clock, concurrency, helpers, validation, JIT hot path.
local T = require "orrery.test"
local orrery = require "orrery"
local breaker = require "orrery.breaker"

local function succeed() return true end
local function fail() return nil, "fail" end

-- A breaker on a fake clock; returns cb and a function to set the time.
local function fake(opts)
  local now = 0
  opts = opts or {}
  opts.clock = function() return now end
  local cb = breaker.new(opts)
  return cb, function(t) now = t end
end

-- counts as a compact list: requests, successes, failures, exclusions,
-- consecutive successes, consecutive failures (the order gobreaker prints).
local function C(cb)
  local c = cb:counts()
  return { c.requests, c.total_successes, c.total_failures, c.total_exclusions,
    c.consecutive_successes, c.consecutive_failures }
end

local function ratio_trip(c)
  return c.requests >= 3 and c.total_failures / c.requests >= 0.6
end

T.test("defaults follow gobreaker", function()
  local cb, at = fake()
  T.eq(cb:state(), "closed")
  T.eq(cb.name, "breaker")
  T.eq(cb.max_requests, 1)
  T.eq(cb.timeout, 60)
  T.eq(cb.interval, 0)
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  -- interval 0: the closed state never clears its counts
  for _ = 1, 5 do cb:call(fail) end
  at(1e9)
  T.eq(C(cb), { 5, 0, 5, 0, 0, 5 })
  T.eq(breaker.new { max_requests = 0, timeout = 0 }.max_requests, 1)
end)

T.test("consecutive failures trip the default breaker", function()
  local cb, at = fake()
  for _ = 1, 5 do T.eq({ cb:call(fail) }, { nil, "fail" }) end
  T.eq(cb:state(), "closed")
  T.eq(C(cb), { 5, 0, 5, 0, 0, 5 })
  T.eq(cb:call(succeed), true)
  T.eq(C(cb), { 6, 1, 5, 0, 1, 0 })
  cb:call(fail)
  T.eq(C(cb), { 7, 1, 6, 0, 0, 1 })
  for _ = 1, 5 do cb:call(fail) end -- 6 consecutive failures
  T.eq(cb:state(), "open")
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  -- rejected calls change no counts and never run fn
  local ran = false
  T.eq({ cb:call(function() ran = true end) }, { nil, "open" })
  T.eq({ cb:call(fail) }, { nil, "open" })
  T.eq(ran, false)
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  at(59)
  T.eq(cb:state(), "open")
  at(60) -- the timeout must strictly pass
  T.eq(cb:state(), "open")
  at(60.001)
  T.eq(cb:state(), "half-open")
  cb:call(fail) -- one failure reopens
  T.eq(cb:state(), "open")
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  at(120.001)
  T.eq(cb:state(), "open")
  at(120.002)
  T.eq(cb:state(), "half-open")
  cb:call(succeed) -- max_requests (1) successes close it
  T.eq(cb:state(), "closed")
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  local s = cb:stats()
  T.eq({ s.state_changes, s.rejected_open, s.calls, s.successes, s.failures },
    { 5, 2, 14, 2, 12 })
end)

T.test("custom failure ratio trips, interval clears closed counts", function()
  local changes = {}
  local cb, at = fake { name = "cb", max_requests = 3, interval = 30, timeout = 90,
    ready_to_trip = ratio_trip,
    on_state_change = function(name, from, to) changes[#changes + 1] = name .. ":" .. from .. ">" .. to end }
  for _ = 1, 5 do
    cb:call(succeed)
    cb:call(fail)
  end
  T.eq(cb:state(), "closed")
  T.eq(C(cb), { 10, 5, 5, 0, 0, 1 })
  at(29)
  cb:call(succeed)
  T.eq(C(cb), { 11, 6, 5, 0, 1, 0 })
  at(30) -- not yet over the interval
  T.eq(C(cb), { 11, 6, 5, 0, 1, 0 })
  at(30.5) -- over the interval: a new window from 30.5
  cb:call(fail)
  T.eq(C(cb), { 1, 0, 1, 0, 0, 1 })
  cb:call(succeed)
  cb:call(fail) -- 2/3 >= 0.6
  T.eq(cb:state(), "open")
  T.eq(changes, { "cb:closed>open" })
  at(30.5 + 90.001)
  T.eq(cb:state(), "half-open")
  T.eq(changes[2], "cb:open>half-open")
  cb:call(succeed)
  cb:call(succeed)
  T.eq(cb:state(), "half-open")
  T.eq(C(cb), { 2, 2, 0, 0, 2, 0 })
  cb:call(succeed)
  T.eq(cb:state(), "closed")
  T.eq(changes[3], "cb:half-open>closed")
  -- the new closed window starts at the transition
  local t0 = 30.5 + 90.001
  at(t0 + 30) -- the last instant of that window
  cb:call(fail)
  T.eq(C(cb), { 1, 0, 1, 0, 0, 1 })
  at(t0 + 30.25) -- over: cleared, and the next window starts now
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  cb:call(fail)
  at(t0 + 60.25)
  T.eq(C(cb), { 1, 0, 1, 0, 0, 1 })
end)

T.test("half-open admits max_requests with calls in flight, rejects the rest", function()
  local cb, at = fake { max_requests = 3, timeout = 10 }
  cb:trip()
  at(10.5)
  T.eq(cb:state(), "half-open")
  cb:call(succeed)
  cb:call(succeed)
  local gate, done = orrery.chan(), orrery.chan(1)
  orrery.go(function()
    done:send({ cb:call(function() gate:recv() return "late ok" end) })
  end)
  orrery.yield() -- the call is now in flight
  T.eq(C(cb), { 3, 2, 0, 0, 2, 0 })
  T.eq({ cb:call(succeed) }, { nil, "too_many_requests" })
  T.eq(cb:stats().rejected_too_many, 1)
  gate:send(true)
  T.eq(done:recv(), { "late ok" })
  T.eq(cb:state(), "closed")
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
end)

T.test("a result from an earlier generation is ignored", function()
  local cb, at = fake { interval = 5 }
  local gate, done = orrery.chan(), orrery.chan(1)
  orrery.go(function()
    done:send({ cb:call(function() return nil, (gate:recv()) end) })
  end)
  orrery.yield()
  T.eq(C(cb), { 1, 0, 0, 0, 0, 0 })
  for _ = 1, 6 do cb:call(fail) end
  T.eq(cb:state(), "open")
  gate:send("late") -- fails after the trip
  T.eq(done:recv(), { nil, "late" })
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  T.eq(cb:stats().ignored, 1)
  T.eq(cb:state(), "open")

  -- the same across an interval in the closed state
  local cb2, at2 = fake { interval = 5 }
  local gate2 = orrery.chan()
  orrery.go(function()
    done:send({ cb2:call(function() return nil, (gate2:recv()) end) })
  end)
  orrery.yield()
  at2(5.5)
  cb2:call(succeed) -- a new window
  gate2:send("boom")
  T.eq(done:recv(), { nil, "boom" })
  T.eq(C(cb2), { 1, 1, 0, 0, 1, 0 })
  T.eq(cb2:stats().ignored, 1)
  at(0)
end)

T.test("excluded outcomes count only as exclusions", function()
  local cb, at = fake { max_requests = 2, timeout = 1,
    is_excluded = function(err) return err == "canceled" end }
  local function canceled() return nil, "canceled" end
  cb:call(fail)
  cb:call(canceled)
  cb:call(fail)
  T.eq(C(cb), { 3, 0, 2, 1, 0, 2 })
  cb:call(succeed)
  cb:call(canceled)
  T.eq(C(cb), { 5, 1, 2, 2, 1, 0 })
  T.eq(cb:stats().exclusions, 2)
  -- in half-open an excluded call gives its admission back
  cb:trip()
  at(1.5)
  T.eq({ cb:call(canceled) }, { nil, "canceled" })
  T.eq({ cb:call(canceled) }, { nil, "canceled" })
  T.eq(C(cb), { 2, 0, 0, 2, 0, 0 })
  cb:call(succeed)
  T.eq(cb:state(), "half-open")
  cb:call(succeed)
  T.eq(cb:state(), "closed")
end)

T.test("is_successful overrides the failure rule", function()
  local cb = fake { is_successful = function(err) return err == nil or err == "not_found" end }
  T.eq({ cb:call(function() return nil, "not_found" end) }, { nil, "not_found" })
  cb:call(fail)
  T.eq(C(cb), { 2, 1, 1, 0, 0, 1 })
  -- false or nil without an error value is an ordinary result
  T.eq({ cb:call(function() return false end) }, { false })
  T.eq({ cb:call(function() end) }, {})
  T.eq(C(cb), { 4, 3, 1, 0, 2, 0 })
end)

T.test("an error raised inside the call is a failure and is raised again", function()
  local cb = fake()
  local err = T.raises(function() cb:call(function() error("kaboom") end) end, "kaboom")
  T.match(err, "breaker_test.lua:%d+: kaboom") -- position of the original raise
  T.eq(C(cb), { 1, 0, 1, 0, 0, 1 })
  local tbl = {}
  local ok, e = pcall(cb.call, cb, function() error(tbl) end)
  T.eq(ok, false)
  T.ok(e == tbl, "error values are passed through")
  T.eq(C(cb), { 2, 0, 2, 0, 0, 2 })
  for _ = 1, 4 do pcall(cb.call, cb, error) end
  T.eq(cb:state(), "open")
  -- extra arguments reach fn
  cb:reset()
  T.eq({ cb:call(function(a, b) return a + b, "x" end, 2, 3) }, { 5, "x" })
end)

T.test("rolling window drops the oldest bucket", function()
  local changes = {}
  local cb, at = fake { name = "rw", max_requests = 3, interval = 30, bucket_period = 3, timeout = 90,
    ready_to_trip = ratio_trip,
    on_state_change = function(_, from, to) changes[#changes + 1] = from .. ">" .. to end }
  T.eq(cb.nb, 10)
  for _ = 1, 5 do
    cb:call(succeed)
    cb:call(fail)
  end
  T.eq(C(cb), { 10, 5, 5, 0, 0, 1 })
  at(3)
  cb:call(succeed)
  T.eq(C(cb), { 11, 6, 5, 0, 1, 0 })
  at(5)
  cb:call(succeed)
  T.eq(C(cb), { 12, 7, 5, 0, 2, 0 })
  at(7)
  cb:call(succeed)
  T.eq(C(cb), { 13, 8, 5, 0, 3, 0 })
  at(9)
  cb:call(fail)
  T.eq(C(cb), { 14, 8, 6, 0, 0, 1 })
  local t = 9
  for i = 0, 5 do -- fill every bucket
    t = t + 3
    at(t)
    cb:call(succeed)
    cb:call(fail)
    T.eq(C(cb), { 16 + 2 * i, 9 + i, 7 + i, 0, 0, 1 })
  end
  at(30) -- the bucket of t=0..3 leaves the window
  cb:call(fail)
  T.eq(C(cb), { 17, 9, 8, 0, 0, 2 })
  for i = 0, 4 do
    cb:call(fail)
    T.eq(C(cb), { 18 + i, 9, 9 + i, 0, 0, 3 + i })
  end
  T.eq(cb:state(), "closed")
  cb:call(fail) -- 14/23 >= 0.6
  T.eq(cb:state(), "open")
  T.eq(changes, { "closed>open" })
end)

T.test("rolling window: consecutive runs, late results and long gaps", function()
  local cb, at = fake { interval = 4, bucket_period = 1, ready_to_trip = function() return false end }
  T.eq(cb.nb, 4)
  cb:call(fail)
  at(1)
  cb:call(fail)
  cb:call(fail)
  at(2)
  T.eq(C(cb), { 3, 0, 3, 0, 0, 3 })
  at(4) -- bucket 0 leaves: its trailing run of 1 failure goes with it
  T.eq(C(cb), { 2, 0, 2, 0, 0, 2 })
  -- a call admitted in one bucket and finished after that bucket left
  local gate, done = orrery.chan(), orrery.chan(1)
  orrery.go(function() done:send({ cb:call(function() return (gate:recv()) end) }) end)
  orrery.yield()
  T.eq(C(cb), { 3, 0, 2, 0, 0, 2 })
  at(6.5) -- bucket 1 leaves with its run of 2 failures
  T.eq(C(cb), { 1, 0, 0, 0, 0, 0 })
  at(8) -- bucket 4, where the call was admitted, leaves
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  gate:send("ok")
  T.eq(done:recv(), { "ok" })
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 }, "a result outside the window is dropped")
  -- a gap longer than the window clears everything
  cb:call(succeed)
  at(100)
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  -- a clock going backwards moves nothing
  cb:call(succeed)
  at(50)
  T.eq(C(cb), { 1, 1, 0, 0, 1, 0 })
end)

T.test("interval is rounded up to whole buckets", function()
  T.eq(breaker.new { interval = 10, bucket_period = 3 }.nb, 4)
  T.eq(breaker.new { interval = 10, bucket_period = 3 }.interval, 12)
  T.eq(breaker.new { interval = 0.3, bucket_period = 0.1 }.nb, 3)
  local b = breaker.new { interval = 2, bucket_period = 5 } -- one bucket of 5 s
  T.eq({ b.nb, b.interval }, { 1, 5 })
  T.eq(breaker.new { bucket_period = 5 }.nb, 1) -- no interval: never cleared
end)

T.test("a clock going backwards never clears or reopens", function()
  local cb, at = fake { interval = 10, timeout = 5 }
  at(100)
  cb:call(fail)
  at(50)
  T.eq(C(cb), { 1, 0, 1, 0, 0, 1 })
  cb:trip()
  at(40)
  T.eq(cb:state(), "open")
  at(55.5)
  T.eq(cb:state(), "half-open")
end)

T.test("many coroutines calling concurrently leave exact counts", function()
  local cb = fake { ready_to_trip = function() return false end }
  local wg = orrery.waitgroup()
  local results = { ok = 0, fail = 0 }
  for i = 1, 200 do
    wg:add(1)
    orrery.go(function()
      local r, err = cb:call(function()
        orrery.yield()
        orrery.yield()
        if i <= 60 then return nil, "e" end
        return i
      end)
      if r then results.ok = results.ok + 1 elseif err == "e" then results.fail = results.fail + 1 end
      wg:done()
    end)
  end
  T.eq(cb:counts().requests, 0)
  T.ok(wg:wait())
  T.eq(results, { ok = 140, fail = 60 })
  -- FIFO scheduling: the failures finish first
  T.eq(C(cb), { 200, 140, 60, 0, 140, 0 })
  local s = cb:stats()
  T.eq({ s.calls, s.successes, s.failures, s.ignored }, { 200, 140, 60, 0 })
end)

T.test("concurrent callers in half-open: exactly max_requests get through", function()
  local cb, at = fake { max_requests = 5, timeout = 1 }
  cb:trip()
  at(2)
  local gate = orrery.chan()
  local wg = orrery.waitgroup()
  local admitted, rejected = 0, 0
  for _ = 1, 20 do
    wg:add(1)
    orrery.go(function()
      local r, err = cb:call(function() return (gate:recv()) or "ok" end)
      if r then admitted = admitted + 1 elseif err == "too_many_requests" then rejected = rejected + 1 end
      wg:done()
    end)
  end
  orrery.yield()
  T.eq(rejected, 15)
  T.eq(C(cb), { 5, 0, 0, 0, 0, 0 })
  gate:close() -- every admitted call returns "ok": a success
  T.ok(wg:wait())
  T.eq(admitted, 5)
  T.eq(cb:state(), "closed") -- max_requests consecutive successes
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  local s = cb:stats()
  T.eq({ s.calls, s.successes, s.rejected_too_many }, { 5, 5, 15 })
end)

T.test("two-step allow/done", function()
  local cb, at = fake { name = "ts" }
  for _ = 1, 5 do
    local done = cb:allow()
    done(false)
  end
  T.eq(C(cb), { 5, 0, 5, 0, 0, 5 })
  local done = cb:allow()
  done(true)
  T.eq(C(cb), { 6, 1, 5, 0, 1, 0 })
  T.raises(function() done(true) end, "done called twice")
  for _ = 1, 6 do cb:allow()(false, "err") end
  T.eq(cb:state(), "open")
  T.eq({ cb:allow() }, { nil, "open" })
  at(61)
  local d1 = cb:allow()
  T.eq({ cb:allow() }, { nil, "too_many_requests" })
  d1(true)
  T.eq(cb:state(), "closed")
  -- done passes err through is_excluded
  local cb2 = fake { is_excluded = function(e) return e == "skip" end }
  cb2:allow()(false, "skip")
  T.eq(C(cb2), { 1, 0, 0, 1, 0, 0 })
end)

T.test("manual overrides: trip, force_open, disable, reset", function()
  local changes = {}
  local cb, at = fake { timeout = 1, on_state_change = function(_, f, t) changes[#changes + 1] = f .. ">" .. t end }
  cb:force_open()
  T.eq(cb:state(), "forced-open")
  at(1000) -- a forced-open breaker does not time out
  T.eq({ cb:call(succeed) }, { nil, "open" })
  T.eq(cb:state(), "forced-open")
  cb:disable()
  T.eq(cb:state(), "disabled")
  for _ = 1, 20 do T.eq({ cb:call(fail) }, { nil, "fail" }) end
  T.eq(cb:state(), "disabled")
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  cb:reset()
  T.eq(cb:state(), "closed")
  cb:call(fail)
  cb:reset() -- reset of a closed breaker clears its counts, no state change
  T.eq(C(cb), { 0, 0, 0, 0, 0, 0 })
  cb:trip()
  T.eq(cb:state(), "open")
  at(1001.5)
  T.eq(cb:state(), "half-open")
  T.eq(changes, { "closed>forced-open", "forced-open>disabled", "disabled>closed",
    "closed>open", "open>half-open" })
  T.eq(cb:stats().state_changes, 5)
  T.match(tostring(cb), "half%-open")
end)

T.test("slow calls and the resilience4j helpers", function()
  local now = 0
  local cb = breaker.new { clock = function() return now end, slow_call_duration = 1,
    ready_to_trip = breaker.any(breaker.failure_rate { threshold = 0.5, min_calls = 4 },
      breaker.slow_call_rate { threshold = 0.6, min_calls = 4 }) }
  local function slow(d) return function() now = now + d return "ok" end end
  cb:call(slow(2))
  cb:call(slow(0.5))
  cb:call(slow(1)) -- exactly the threshold is not slow
  T.eq(cb:counts().slow_calls, 1)
  cb:call(slow(3))
  T.eq(cb:state(), "closed") -- 2/4 slow < 0.6
  cb:call(slow(3))
  T.eq(cb:state(), "open") -- 3/5 >= 0.6, though every call succeeded
  T.eq(cb:stats().slow_calls, 3)
  T.eq(cb:stats().failures, 0)
end)

T.test("failure_rate waits for min_calls and counts completed calls", function()
  local f = breaker.failure_rate { threshold = 0.5, min_calls = 4 }
  T.eq(f { total_successes = 0, total_failures = 3, slow_calls = 0 }, false)
  T.eq(f { total_successes = 2, total_failures = 2, slow_calls = 0 }, true)
  T.eq(f { total_successes = 3, total_failures = 2, slow_calls = 0 }, false)
  local g = breaker.consecutive_failures(3)
  T.eq(g { consecutive_failures = 2 }, false)
  T.eq(g { consecutive_failures = 3 }, true)
  local cb = fake { ready_to_trip = breaker.failure_rate { threshold = 0.5, min_calls = 4 } }
  cb:call(succeed)
  cb:call(fail)
  cb:call(fail)
  T.eq(cb:state(), "closed")
  cb:call(succeed) -- the trip is only checked on failures
  T.eq(cb:state(), "closed")
  cb:call(fail)
  T.eq(cb:state(), "open")
end)

T.test("every option is validated", function()
  local function bad(opts, what)
    local err = T.raises(function() breaker.new(opts) end, what)
    T.match(err, "^[^:]*breaker_test%.lua:%d+:", "error points at the caller")
  end
  bad({ interval = -1 }, "orrery.breaker.new: bad option 'interval' (non-negative number expected, got -1)")
  bad({ interval = "30" }, "bad option 'interval' (non-negative number expected, got string)")
  bad({ interval = 0 / 0 }, "bad option 'interval'")
  bad({ timeout = -5 }, "bad option 'timeout'")
  bad({ bucket_period = -1 }, "bad option 'bucket_period'")
  bad({ interval = 1, bucket_period = 1e-6 }, "bad option 'bucket_period'")
  bad({ max_requests = -1 }, "bad option 'max_requests'")
  bad({ max_requests = 1.5 }, "bad option 'max_requests' (integer expected")
  bad({ slow_call_duration = 0 }, "bad option 'slow_call_duration' (positive number")
  bad({ name = 42 }, "bad option 'name' (string expected, got number)")
  bad({ ready_to_trip = true }, "bad option 'ready_to_trip' (function expected, got boolean)")
  bad({ on_state_change = "x" }, "bad option 'on_state_change'")
  bad({ is_successful = 1 }, "bad option 'is_successful'")
  bad({ is_excluded = {} }, "bad option 'is_excluded'")
  bad({ clock = 0 }, "bad option 'clock'")
  bad({ clock = function() return "x" end }, "bad option 'clock'")
  bad({ timout = 5 }, "orrery.breaker.new: unknown option 'timout'")
  bad("x", "bad argument #1 (options table expected")
  local cb = breaker.new()
  T.raises(function() cb:call(nil) end, "orrery.breaker:call: bad argument #1 (function expected, got nil)")
  T.raises(function() cb.call(succeed) end, "orrery.breaker:call: bad self")
  T.raises(function() breaker.failure_rate { threshold = 2 } end, "orrery.breaker.failure_rate: bad option 'threshold'")
  T.raises(function() breaker.failure_rate { min_calls = 0 } end, "bad option 'min_calls'")
  T.raises(function() breaker.slow_call_rate { threshold = "x" } end, "orrery.breaker.slow_call_rate: bad option 'threshold'")
  T.raises(function() breaker.consecutive_failures(0) end, "orrery.breaker.consecutive_failures: bad argument #1")
  T.raises(function() breaker.any(succeed, 3) end, "orrery.breaker.any: bad argument #2")
  -- a callable table is a function
  local callable = setmetatable({}, { __call = function() return "called" end })
  T.eq(cb:call(callable), "called")
end)

local traced = T.traced

T.test("cb:call on a closed breaker stays JIT-compiled", function()
  if not jit or not jit.status() then T.skip("JIT is off") end
  local cb = breaker.new { name = "hot" }
  local function work(x) return x + 1 end
  local sum = 0
  local aborts, stops = traced(function()
    for i = 1, 5000 do sum = sum + cb:call(work, i) end
  end, "orrery/breaker.lua")
  T.eq(sum, 5000 * 5001 / 2 + 5000)
  T.eq(aborts, {}, "trace aborts")
  T.ok(stops >= 1, "at least one trace")
  -- a rolling-window breaker with a real clock as well
  local rw = breaker.new { interval = 10, bucket_period = 1 }
  local function work2(x) return x - 1 end
  aborts, stops = traced(function()
    for i = 1, 5000 do sum = sum + rw:call(work2, i) end
  end, "orrery/breaker.lua")
  T.eq(aborts, {}, "trace aborts (rolling window)")
  T.ok(stops >= 1)
  T.eq(rw:counts().total_successes, 5000)
end)

T.test("list() finds live breakers; stats() has every counter", function()
  local cb = breaker.new { name = "zz-listed", interval = math.huge, timeout = math.huge }
  local found = false
  for _, b in ipairs(breaker.list()) do
    if b == cb then found = true end
  end
  T.ok(found)
  T.eq(cb.interval, 0, "an infinite interval never clears")
  local s = cb:stats()
  for _, k in ipairs { "name", "state", "generation", "since", "counts", "calls", "successes",
    "failures", "exclusions", "slow_calls", "rejected", "rejected_open", "rejected_too_many",
    "ignored", "state_changes" } do
    T.ok(s[k] ~= nil, k)
  end
  local got
  local cb2 = breaker.new { on_state_change = function(_, _, _, b) got = b end }
  cb2:trip()
  T.ok(got == cb2, "on_state_change gets the breaker")
end)
