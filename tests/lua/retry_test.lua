-- SPDX-License-Identifier: MIT
-- retry_test.lua -- orrery.retry: backoff timing with injected random and
-- sleep, cancellation in the middle of a backoff, the timeout combinator.
local T = require "orrery.test"
local orrery = require "orrery"
local retry = require "orrery.retry"

-- A random source that replays `seq` (then repeats its last value).
local function replay(seq)
  local i = 0
  return function()
    i = i + 1
    return seq[i] or seq[#seq]
  end
end

-- A sleep that records its argument and returns at once.
local function recorder()
  local slept = {}
  return function(s)
    slept[#slept + 1] = s
    return true
  end, slept
end

-- fn failing `n` times with "e1", "e2", ... then returning "ok", attempt.
local function flaky(n)
  local calls = 0
  return function()
    calls = calls + 1
    if calls <= n then return nil, "e" .. calls end
    return "ok", calls
  end
end

T.test("defaults: 3 attempts with full jitter from 0.1 s doubling", function()
  local sleep, slept = recorder()
  local r, err = retry.call(flaky(10), { sleep = sleep, random = replay { 0.5, 0.25 } })
  T.eq({ r, err }, { nil, "e3" })
  T.eq(slept, { 0.05, 0.05 }) -- 0.5 * 0.1, 0.25 * 0.2
  local p = retry.new {}
  T.eq({ p.max_attempts, p.initial, p.multiplier, p.max_interval, p.jitter }, { 3, 0.1, 2, 10, "full" })
end)

T.test("success returns every result, after retries", function()
  local sleep, slept = recorder()
  T.eq({ retry.call(flaky(2), { sleep = sleep, jitter = "none" }) }, { "ok", 3 })
  T.eq(slept, { 0.1, 0.2 })
  T.eq({ retry.call(function(a, b) return a, nil, b end, { sleep = sleep }, 1, 2) }, { 1, nil, 2 })
  T.eq(#slept, 2, "no retry after a success")
  -- false or nil without an error value is a result, not a failure
  T.eq({ retry.call(function() return false end, { sleep = sleep }) }, { false })
end)

T.test("backoff schedules: none, equal, full, decorrelated, capped", function()
  local function schedule(opts, seq)
    local sleep, slept = recorder()
    opts.sleep, opts.random = sleep, replay(seq or { 0.5 })
    opts.max_attempts = opts.max_attempts or 6
    retry.call(flaky(100), opts)
    return slept
  end
  T.eq(schedule { jitter = "none", initial = 1, multiplier = 3, max_interval = 20 }, { 1, 3, 9, 20, 20 })
  T.eq(schedule { jitter = "equal", initial = 1, max_interval = 8 }, { 0.75, 1.5, 3, 6, 6 })
  T.eq(schedule({ jitter = "full", initial = 1 }, { 1, 0, 0.5, 0.25, 0.125 }), { 1, 0, 2, 2, 1.25 })
  -- decorrelated: between initial and 3x the previous delay, capped
  T.eq(schedule({ jitter = "decorrelated", initial = 1, max_interval = 10 }, { 0.5 }),
    { 2, 3.5, 5.75, 9.125, 10 })
  T.eq(schedule({ jitter = "decorrelated", initial = 1, max_interval = 100 }, { 0 }), { 1, 1, 1, 1, 1 })
  T.eq(schedule { jitter = "none", initial = 0, max_attempts = 3 }, { 0, 0 })
end)

T.test("a fixed random seed gives the same timing every time", function()
  local function run()
    local sleep, slept = recorder()
    math.randomseed(42)
    retry.call(flaky(100), { sleep = sleep, max_attempts = 8, initial = 0.5, max_interval = 4 })
    return slept
  end
  local a, b = run(), run()
  T.eq(a, b)
  T.eq(#a, 7)
  for i, s in ipairs(a) do
    T.ok(s >= 0 and s <= math.min(4, 0.5 * 2 ^ (i - 1)), "full jitter stays within the base")
  end
end)

T.test("retry_on, on_retry and stats", function()
  local sleep = recorder()
  local seen = {}
  local stats = {}
  local r, err = retry.call(flaky(10), {
    sleep = sleep, jitter = "none", max_attempts = 10, stats = stats, name = "inv",
    retry_on = function(e, n) return e ~= "e3" end,
    on_retry = function(n, e, delay, name) seen[#seen + 1] = { n, e, delay, name } end,
  })
  T.eq({ r, err }, { nil, "e3" })
  T.eq(seen, { { 1, "e1", 0.1, "inv" }, { 2, "e2", 0.2, "inv" } })
  T.eq(stats, { calls = 1, attempts = 3, retries = 2, successes = 0, failures = 1, canceled = 0 })
  local p = retry.new { sleep = sleep, initial = 0 }
  p:call(flaky(1))
  p:call(flaky(5))
  T.eq(p:stats(), { name = "retry", calls = 2, attempts = 5, retries = 3, successes = 1, failures = 1, canceled = 0 })
  T.eq(retry.call(flaky(1), p), "ok", "a policy may be passed to retry.call")
end)

T.test("a raised error is retried, then raised again", function()
  local sleep, slept = recorder()
  local n = 0
  T.raises(function()
    retry.call(function() n = n + 1 error("bug " .. n) end, { sleep = sleep })
  end, "bug 3")
  T.eq(#slept, 2)
  n = 0
  T.eq(retry.call(function() n = n + 1 if n < 2 then error("once") end return "fine" end, { sleep = sleep }), "fine")
end)

T.test("cancelling the context in the middle of a backoff stops at once", function()
  local ctx, cancel = orrery.context.with_cancel()
  local res = orrery.chan(1)
  local attempts = 0
  local t = orrery.now()
  orrery.with_context(ctx, function()
    orrery.go(function()
      res:send({ retry.call(function() attempts = attempts + 1 return nil, "down" end,
        { initial = 30, jitter = "none" }) })
    end)
  end)
  orrery.yield() -- the first attempt failed; the coroutine sleeps 30 s
  T.eq(attempts, 1)
  cancel()
  T.eq(res:recv(), { nil, "canceled", "down" })
  T.eq(attempts, 1)
  T.ok(orrery.now() - t < 5, "did not sleep the backoff")
end)

T.test("a deadline shorter than the backoff ends the retries early", function()
  local attempts = 0
  local r = { orrery.with_timeout(5, function()
    return retry.call(function() attempts = attempts + 1 return nil, "busy" end,
      { initial = 10, jitter = "none", sleep = function() error("must not sleep") end })
  end) }
  T.eq(r, { nil, "timeout", "busy" })
  T.eq(attempts, 1)
  -- with the real sleep, a deadline inside a short backoff ends it
  attempts = 0
  r = { orrery.with_timeout(0.2, function()
    return retry.call(function() attempts = attempts + 1 return nil, "busy" end,
      { initial = 0.01, jitter = "none", max_attempts = math.huge, multiplier = 1 })
  end) }
  T.eq(r[1], nil)
  T.eq(r[2], "timeout")
  T.ok(attempts >= 2)
end)

T.test("attempt_timeout bounds every attempt", function()
  local sleep, slept = recorder()
  local attempts = 0
  local r = { retry.call(function()
    attempts = attempts + 1
    return orrery.sleep(10)
  end, { attempt_timeout = 0.01, max_attempts = 2, sleep = sleep }) }
  T.eq(r, { nil, "timeout" })
  T.eq(attempts, 2)
  T.eq(#slept, 1)
end)

T.test("timeout returns the results of a call that finishes in time", function()
  T.eq({ retry.timeout(1, function(a) return a, "b" end, "a") }, { "a", "b" })
  T.eq({ retry.timeout(1, function() return nil, "mine" end) }, { nil, "mine" })
  T.raises(function() retry.timeout(1, function() error("inner") end) end, "inner")
end)

T.test("timeout wakes fn and every coroutine it started", function()
  local child = orrery.chan(1)
  local t = orrery.now()
  local r = { retry.timeout(0.02, function()
    orrery.go(function() child:send({ orrery.sleep(10) }) end)
    local v, ok, err = orrery.chan():recv()
    return v, err
  end) }
  T.eq(r, { nil, "timeout" })
  T.eq(child:recv(), { nil, "timeout" })
  T.ok(orrery.now() - t < 5)
  -- a failure that ignores the deadline is still reported as a timeout
  T.eq({ retry.timeout(0.01, function() orrery.sleep(1) return nil, "gave up" end) }, { nil, "timeout" })
  -- a result produced anyway is kept
  T.eq(retry.timeout(0.01, function() orrery.sleep(1) return "done" end), "done")
  -- coroutines left running when fn returns are cancelled
  retry.timeout(10, function()
    orrery.go(function() child:send({ orrery.sleep(10) }) end)
  end)
  T.eq(child:recv(), { nil, "canceled" })
  -- an enclosing cancellation is reported as such
  local ctx, cancel = orrery.context.with_cancel()
  cancel()
  T.eq({ orrery.with_context(ctx, retry.timeout, 10, function() return orrery.sleep(1) end) }, { nil, "canceled" })
end)

T.test("every option is validated", function()
  local function bad(fn, what)
    local err = T.raises(fn, what)
    T.match(err, "^[^:]*retry_test%.lua:%d+:", "error points at the caller")
  end
  local f = function() return 1 end
  bad(function() retry.call(nil) end, "orrery.retry.call: bad argument #1 (function expected, got nil)")
  bad(function() retry.call(f, { max_attempts = 0 }) end, "orrery.retry.call: bad option 'max_attempts' (positive integer expected, got 0)")
  bad(function() retry.call(f, { max_attempts = 2.5 }) end, "bad option 'max_attempts'")
  bad(function() retry.call(f, { initial = -1 }) end, "bad option 'initial' (non-negative number of seconds expected, got -1)")
  bad(function() retry.call(f, { initial = "1" }) end, "bad option 'initial' (non-negative number of seconds expected, got string)")
  bad(function() retry.call(f, { multiplier = 0.5 }) end, "bad option 'multiplier' (number >= 1 expected, got 0.5)")
  bad(function() retry.call(f, { max_interval = -3 }) end, "bad option 'max_interval'")
  bad(function() retry.call(f, { attempt_timeout = 0 }) end, "bad option 'attempt_timeout' (positive number")
  bad(function() retry.call(f, { jitter = "fulll" }) end, "bad option 'jitter' (\"full\", \"equal\", \"decorrelated\" or \"none\" expected, got \"fulll\")")
  bad(function() retry.call(f, { retry_on = true }) end, "bad option 'retry_on' (function expected, got boolean)")
  bad(function() retry.call(f, { on_retry = 1 }) end, "bad option 'on_retry'")
  bad(function() retry.call(f, { random = {} }) end, "bad option 'random'")
  bad(function() retry.call(f, { sleep = "x" }) end, "bad option 'sleep'")
  bad(function() retry.call(f, { stats = 1 }) end, "bad option 'stats' (table expected")
  bad(function() retry.call(f, { attempts = 3 }) end, "orrery.retry.call: unknown option 'attempts'")
  bad(function() retry.call(f, 5) end, "orrery.retry.call: bad options (table expected, got number)")
  bad(function() retry.new { initial = -1 } end, "orrery.retry.new: bad option 'initial'")
  bad(function() retry.new {}.call(f) end, "orrery.retry:call: bad self")
  bad(function() retry.new {}:call(3) end, "orrery.retry:call: bad argument #1")
  bad(function() retry.timeout(-1, f) end, "orrery.retry.timeout: bad argument #1 (non-negative seconds expected, got -1)")
  bad(function() retry.timeout("1", f) end, "orrery.retry.timeout: bad argument #1")
  bad(function() retry.timeout(1, nil) end, "orrery.retry.timeout: bad argument #2 (function expected, got nil)")
end)

T.test("list() finds live policies", function()
  local p = retry.new { name = "zz-payments" }
  local found = false
  for _, q in ipairs(retry.list()) do
    if q == p then found = true end
  end
  T.ok(found)
end)
