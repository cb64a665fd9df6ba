-- SPDX-License-Identifier: MIT
-- limit_test.lua -- orrery.limit: token bucket tables at exact instants (the
-- x/time/rate cases with d = 1/8 s), waits, bulkheads, the HTTP middleware.
local T = require "orrery.test"
local orrery = require "orrery"
local limit = require "orrery.limit"

-- Instants are multiples of d = 0.125 s so that every sum is exact.
local d = 0.125
local t0, t1, t2, t3, t4, t5, t9 = 0, d, 2 * d, 3 * d, 4 * d, 5 * d, 9 * d

local function fake(rate, burst, extra)
  local now = 0
  local opts = { rate = rate, burst = burst, clock = function() return now end }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return limit.token_bucket(opts), function(t) now = t end
end

-- allows: list of { t, n, ok }
local function run(lim, at, allows)
  for i, a in ipairs(allows) do
    at(a[1])
    T.eq(lim:allow(a[2]) == true, a[3], ("step %d: allow(t=%s, n=%d)"):format(i, a[1] / d, a[2]))
  end
end

-- reserve at t for n: expects act (or false when the reservation fails)
local function reserve(lim, at, t, n, act)
  at(t)
  local r, err = lim:reserve(n)
  if act == false then
    T.eq(r, nil, ("reserve(t%d, %d)"):format(t / d, n))
    return err
  end
  T.ok(r, ("reserve(t%d, %d): %s"):format(t / d, n, tostring(err)))
  T.eq(r.time_to_act / d, act / d, ("reserve(t%d, %d) acts at"):format(t / d, n))
  return r
end

T.test("allow with burst 1", function()
  local lim, at = fake(8, 1)
  run(lim, at, {
    { t0, 1, true }, { t0, 1, false }, { t0, 1, false },
    { t1, 1, true }, { t1, 1, false }, { t1, 1, false },
    { t2, 2, false }, -- more than the burst never passes
    { t2, 1, true }, { t2, 1, false },
  })
end)

T.test("allow with burst 3", function()
  local lim, at = fake(8, 3)
  run(lim, at, {
    { t0, 2, true }, { t0, 2, false }, { t0, 1, true }, { t0, 1, false },
    { t1, 4, false },
    { t2, 1, true }, { t3, 1, true }, { t4, 1, true }, { t4, 1, true },
    { t4, 1, false }, { t4, 1, false },
    { t9, 3, true }, { t9, 0, true },
  })
end)

T.test("allow when the clock jumps backwards", function()
  local lim, at = fake(8, 3)
  run(lim, at, {
    { t1, 1, true }, -- start at t1
    { t0, 1, true }, -- back to t0: two tokens remain
    { t0, 1, true }, { t0, 1, false }, { t0, 1, false },
    { t1, 1, true }, -- one token accrued since t0
    { t1, 1, false }, { t1, 1, false },
    { t2, 1, true }, { t2, 1, false }, { t2, 1, false },
  })
end)

T.test("reserve acts at the right instant", function()
  local lim, at = fake(8, 2)
  reserve(lim, at, t0, 2, t0)
  reserve(lim, at, t0, 2, t2)
  reserve(lim, at, t3, 2, t4)

  lim, at = fake(8, 2) -- reservations and allows mixed
  T.eq(reserve(lim, at, t0, 3, false), "exceeds_burst")
  reserve(lim, at, t0, 2, t0)
  run(lim, at, { { t1, 2, false } })
  reserve(lim, at, t1, 2, t2)
  run(lim, at, { { t1, 1, false } }) -- negative tokens
  run(lim, at, { { t3, 1, true } })
end)

T.test("cancel returns the tokens no later reservation took", function()
  local lim, at = fake(8, 2) -- cancel the last reservation
  reserve(lim, at, t0, 2, t0)
  local r = reserve(lim, at, t0, 2, t2)
  at(t1)
  T.eq(r:delay(), d)
  T.eq(r:cancel(), 2)
  T.eq(r:cancel(), 0, "a second cancel does nothing")
  reserve(lim, at, t1, 2, t2)

  lim, at = fake(8, 2) -- too late: the time to act has passed
  reserve(lim, at, t0, 2, t0)
  r = reserve(lim, at, t0, 2, t2)
  at(t3)
  T.eq(r:delay(), 0)
  T.eq(r:cancel(), 0)
  reserve(lim, at, t3, 2, t4)

  lim, at = fake(8, 2) -- a later reservation took every token back
  reserve(lim, at, t0, 2, t0)
  r = reserve(lim, at, t0, 1, t1)
  reserve(lim, at, t0, 1, t2)
  at(t0)
  T.eq(r:cancel(), 0)
  reserve(lim, at, t0, 1, t3)

  lim, at = fake(8, 2) -- one of two tokens comes back
  reserve(lim, at, t0, 2, t0)
  r = reserve(lim, at, t0, 2, t2)
  reserve(lim, at, t0, 1, t3)
  at(t2)
  T.eq(r:cancel(), 1)
  reserve(lim, at, t2, 2, t4)

  lim, at = fake(8, 4) -- several cancels
  reserve(lim, at, t0, 4, t0)
  local ra = reserve(lim, at, t0, 3, t3)
  reserve(lim, at, t0, 1, t4)
  local rc = reserve(lim, at, t0, 1, t5)
  at(t1)
  T.eq(rc:cancel(), 1)
  T.eq(ra:cancel(), 2) -- as if rc was never reserved
  reserve(lim, at, t1, 3, t5)
  T.eq(lim:stats().canceled, 2)
end)

T.test("reserve and cancel with the clock going backwards", function()
  local lim, at = fake(8, 2)
  reserve(lim, at, t1, 2, t1)
  reserve(lim, at, t0, 1, t1) -- in the past: overdraws, as x/time/rate does
  reserve(lim, at, t2, 2, t3)

  lim, at = fake(8, 2)
  reserve(lim, at, t1, 2, t1)
  local r = reserve(lim, at, t1, 2, t3)
  reserve(lim, at, t1, 1, t4)
  at(t0)
  T.eq(r:cancel(), 1)
  reserve(lim, at, t1, 2, t4)
end)

T.test("set_rate and set_burst take effect from now", function()
  local lim, at = fake(4, 2) -- one token every 2 d
  reserve(lim, at, t0, 2, t0)
  reserve(lim, at, t0, 2, t4)
  at(t2)
  lim:set_rate(8)
  T.eq(lim:rate(), 8)
  reserve(lim, at, t2, 1, t4)

  lim, at = fake(4, 2)
  reserve(lim, at, t0, 2, t0)
  reserve(lim, at, t0, 2, t4)
  at(t3)
  lim:set_burst(4)
  T.eq(lim:burst(), 4)
  reserve(lim, at, t0, 4, t9)

  lim, at = fake(4, 2)
  reserve(lim, at, t0, 2, t0)
  local r = reserve(lim, at, t0, 2, t4)
  at(t2)
  lim:set_rate(8)
  T.eq(r:cancel(), 2)
  reserve(lim, at, t2, 2, t3)

  -- from unlimited back to a rate: the bucket is full again
  lim, at = fake(limit.inf, 1)
  for _ = 1, 10 do T.ok(lim:allow(5)) end
  at(t1)
  lim:set_rate(8)
  run(lim, at, { { t1, 1, true }, { t1, 1, false }, { t2, 1, true } })
end)

T.test("tokens and delay report without taking", function()
  local lim, at = fake(8, 4)
  T.eq(lim:tokens(), 4)
  T.eq(lim:delay(4), 0)
  T.ok(lim:allow(3))
  T.eq(lim:tokens(), 1)
  T.eq(lim:delay(3), 2 * d)
  at(t1)
  T.eq(lim:tokens(), 2)
  T.eq(lim:delay(5), math.huge)
  T.eq(lim:tokens(), 2, "delay took nothing")
  local zero = fake(0, 1)
  T.ok(zero:allow())
  T.eq(zero:delay(), math.huge)
  T.eq(limit.every(0.5), 2)
  T.eq(limit.every(0), math.huge)
end)

T.test("rate 0 allows the initial burst only; inf allows everything", function()
  local lim, at = fake(0, 2)
  T.ok(lim:allow())
  T.ok(lim:allow())
  at(1e6)
  T.eq({ lim:allow() }, { nil, "too_many_requests" })
  T.eq({ lim:reserve() }, { nil, "too_many_requests" })
  T.eq({ lim:wait() }, { nil, "too_many_requests" })
  local inf = fake(limit.inf, 0)
  T.ok(inf:allow(1000))
  T.ok(inf:reserve(1000))
  T.ok(inf:wait(3))
  T.eq(limit.token_bucket { rate = limit.inf }:burst(), 0)
end)

T.test("many coroutines share one bucket", function()
  local lim = fake(1, 5)
  local wg, n = orrery.waitgroup(), 0
  for _ = 1, 15 do
    wg:add(1)
    orrery.go(function()
      if lim:allow() then n = n + 1 end
      wg:done()
    end)
  end
  wg:wait()
  T.eq(n, 5)
  local s = lim:stats()
  T.eq({ s.allowed, s.rejected }, { 5, 10 })
end)

-- A fake sleep that moves the fake clock; `script` says how each sleep
-- ends: true (slept it all) or a number of seconds then "canceled".
local function fake_sleeper(at, now0)
  local now, slept = now0 or 0, {}
  local script = {}
  local function sleep(s, ctx)
    slept[#slept + 1] = s
    local how = table.remove(script, 1)
    if type(how) == "number" then
      now = now + how
      at(now)
      return nil, "canceled"
    end
    now = now + s
    at(now)
    return true
  end
  return sleep, slept, script
end

T.test("wait parks for the reservation and gives tokens back when cancelled", function()
  local lim, at
  local sleep, slept, script = fake_sleeper(function(t) at(t) end)
  lim, at = fake(8, 3, { sleep = sleep })
  local ctx, cancel = orrery.context.with_cancel()
  cancel()
  T.eq({ lim:wait(1, ctx) }, { nil, "canceled" }, "an ended context fails at once")
  T.eq({ lim:wait(4) }, { nil, "exceeds_burst" })
  T.eq(lim:wait(2), true)
  T.eq(#slept, 0, "act now: no sleep")
  -- 1 token left; 3 more take 2 d, cancelled after 1 d
  script[1] = d
  T.eq({ lim:wait(3) }, { nil, "canceled" })
  T.eq(slept, { 2 * d })
  T.eq(lim:tokens(), 2, "3 tokens back")
  T.eq(lim:wait(2), true)
  T.eq(#slept, 1)
  T.eq(lim:wait(1), true)
  T.eq(slept, { 2 * d, d })
  local s = lim:stats()
  T.eq({ s.waited, s.wait_failed, s.canceled }, { 4, 3, 1 })
end)

T.test("wait fails at once when the deadline comes before the tokens", function()
  local lim = limit.token_bucket { rate = 1, burst = 1,
    sleep = function() error("must not sleep") end }
  T.ok(lim:allow())
  local r, err = orrery.with_timeout(0.5, function() return lim:wait() end)
  T.eq({ r, err }, { nil, "timeout" })
  local ctx = orrery.context.with_timeout(0.5)
  T.eq({ lim:wait(1, ctx) }, { nil, "timeout" })
  T.ok(lim:tokens() < 0.1, "no tokens were taken") -- about 0 after allow()
  T.ok(lim:tokens() > -0.5)
end)

T.test("wait with the real clock parks, and a cancel wakes it", function()
  local lim = limit.token_bucket { rate = 100, burst = 1 }
  T.ok(lim:allow())
  local t = orrery.now()
  T.eq(lim:wait(), true)
  T.ok(orrery.now() - t >= 0.009, "waited for the next token")

  -- the coroutine's own context
  local slow = limit.token_bucket { rate = 0.5, burst = 1 }
  T.ok(slow:allow())
  local ctx, cancel = orrery.context.with_cancel()
  local res = orrery.chan(1)
  orrery.with_context(ctx, function()
    orrery.go(function() res:send({ slow:wait() }) end)
  end)
  orrery.yield()
  cancel()
  T.eq(res:recv(), { nil, "canceled" })
  T.ok(slow:tokens() > -0.5, "the 1 token came back")

  -- an explicit context that is not the coroutine's
  local ctx2, cancel2 = orrery.context.with_cancel(orrery.context.background())
  orrery.go(function() res:send({ slow:wait(1, ctx2) }) end)
  orrery.yield()
  cancel2()
  T.eq(res:recv(), { nil, "canceled" })
end)

-- -- Concurrency limit --

T.test("concurrency limit without a queue rejects at once", function()
  local bh = limit.concurrency { max = 2 }
  T.ok(bh:acquire())
  T.ok(bh:try_acquire())
  T.eq({ bh:acquire() }, { nil, "too_many_requests" })
  T.eq(bh:in_flight(), 2)
  bh:release()
  T.ok(bh:acquire())
  bh:release()
  bh:release()
  T.raises(function() bh:release() end, "orrery.limit:release: release without acquire")
  local s = bh:stats()
  T.eq({ s.admitted, s.rejected, s.in_flight, s.waiting }, { 3, 1, 0, 0 })
end)

T.test("concurrency limit queues FIFO up to its bound", function()
  local bh = limit.concurrency { max = 1, queue = 3 }
  T.ok(bh:acquire())
  local order, wg = {}, orrery.waitgroup()
  for i = 1, 3 do
    wg:add(1)
    orrery.go(function()
      T.ok(bh:acquire())
      order[#order + 1] = i
      orrery.yield()
      bh:release()
      wg:done()
    end)
  end
  orrery.yield()
  T.eq(bh:stats().waiting, 3)
  T.eq({ bh:acquire() }, { nil, "too_many_requests" }, "queue full")
  bh:release()
  wg:wait()
  T.eq(order, { 1, 2, 3 })
  T.eq(bh:in_flight(), 0)
end)

T.test("concurrency limit wait ends on its timeout or a context", function()
  local bh = limit.concurrency { max = 1, queue = 5, timeout = 0.02 }
  T.ok(bh:acquire())
  local t = orrery.now()
  T.eq({ bh:acquire() }, { nil, "too_many_requests" })
  T.ok(orrery.now() - t >= 0.015)
  T.eq(bh:stats().timeouts, 1)

  local ctx, cancel = orrery.context.with_cancel()
  local res = orrery.chan(1)
  orrery.go(function() res:send({ bh:acquire(ctx) }) end)
  orrery.yield()
  cancel()
  T.eq(res:recv(), { nil, "canceled" })
  T.eq(bh:stats().waiting, 0)

  local inner = limit.concurrency { max = 1, queue = 1 } -- no timeout: the context decides
  T.ok(inner:acquire())
  T.eq({ orrery.with_timeout(0.01, function() return inner:acquire() end) }, { nil, "timeout" })
  inner:release()
  T.ok(inner:acquire(), "no slot leaked")
  bh:release()
end)

T.test("concurrency limit call releases on return and on error", function()
  local bh = limit.concurrency { max = 1 }
  T.eq({ bh:call(function(a) return a, "x" end, 7) }, { 7, "x" })
  T.raises(function() bh:call(function() error("boom") end) end, "boom")
  T.eq(bh:in_flight(), 0)
  local gate = orrery.chan()
  orrery.go(function() bh:call(function() gate:recv() end) end)
  orrery.yield()
  T.eq({ bh:call(function() return 1 end) }, { nil, "too_many_requests" })
  gate:send(true)
  orrery.yield()
  T.eq(bh:call(function() return 1 end), 1)
end)

-- -- HTTP middleware --

local function req(remote, path, headers)
  return { method = "GET", path = path or "/", remote = remote or "10.0.0.1",
    header = function(self, name) return (headers or {})[name:lower()] end }
end

local function ok_next() return 200, "ok", {} end

T.test("middleware answers 429 with Retry-After", function()
  local lim = fake(0.1, 2) -- one token every 10 s
  local mw, ctl = limit.middleware { limiter = lim }
  T.eq({ mw(req(), ok_next) }, { 200, "ok", {} })
  T.eq({ mw(req(), ok_next) }, { 200, "ok", {} })
  local status, body, headers = mw(req(), ok_next)
  T.eq(status, 429)
  T.eq(body, "too many requests\n")
  T.eq(headers["Retry-After"], "10")
  T.eq(ctl:stats(), { allowed = 2, rejected = 1, evictions = 0, keys = 0 })
  local fast, at = fake(4, 1)
  mw = limit.middleware { limiter = fast, status = 503, body = "slow down" }
  mw(req(), ok_next)
  at(0.1) -- 0.15 s to go: rounds up to 1
  T.eq({ mw(req(), ok_next) }, { 503, "slow down",
    { ["Retry-After"] = "1", ["Content-Type"] = "text/plain; charset=utf-8" } })
  local zero = fake(0, 0)
  status, _, headers = limit.middleware { limiter = zero } (req(), ok_next)
  T.eq(status, 429)
  T.eq(headers["Retry-After"], nil, "never: no Retry-After")
end)

T.test("middleware per key keeps a limiter per client, bounded", function()
  local made = {}
  local mw, ctl = limit.middleware { per_key = limit.by_remote, max_keys = 2,
    new = function(key)
      made[#made + 1] = key
      return (fake(1, 1))
    end }
  T.eq(mw(req("a"), ok_next), 200)
  T.eq(mw(req("a"), ok_next), 429)
  T.eq(mw(req("b"), ok_next), 200)
  T.eq(ctl:keys(), 2)
  T.eq(mw(req("c"), ok_next), 200) -- a second generation starts
  T.eq(mw(req("a"), ok_next), 429, "a is still known")
  T.eq(mw(req("d"), ok_next), 200) -- b is dropped
  T.eq(ctl:keys(), 3)
  T.eq(mw(req("b"), ok_next), 200, "b starts again")
  T.eq(made, { "a", "b", "c", "d", "b" })
  T.ok(ctl:limiter("a"))
  T.eq(ctl:stats().evictions, 2)
  -- a nil key is not limited; keys by header and by route
  local passthrough = limit.middleware { per_key = function() return nil end,
    new = function() error("not called") end }
  for _ = 1, 5 do T.eq(passthrough(req(), ok_next), 200) end
  local byh = limit.middleware { per_key = limit.by_header("X-Api-Key"), new = function() return (fake(1, 1)) end }
  T.eq(byh(req("x", "/", { ["x-api-key"] = "k1" }), ok_next), 200)
  T.eq(byh(req("y", "/", { ["x-api-key"] = "k1" }), ok_next), 429)
  T.eq(byh(req("y", "/", { ["x-api-key"] = "k2" }), ok_next), 200)
  T.eq(limit.by_route(req("x", "/orders")), "GET /orders")
end)

T.test("middleware with a concurrency limit and a cost", function()
  local bh = limit.concurrency { max = 1 }
  local mw = limit.middleware { limiter = bh, retry_after = 3 }
  local gate, res = orrery.chan(), orrery.chan(1)
  orrery.go(function()
    res:send({ mw(req(), function() gate:recv() return 201, "made", {} end) })
  end)
  orrery.yield()
  local status, _, headers = mw(req(), ok_next)
  T.eq({ status, headers["Retry-After"] }, { 429, "3" })
  gate:send(true)
  T.eq(res:recv(), { 201, "made", {} })
  T.raises(function() mw(req(), function() error("handler bug") end) end, "handler bug")
  T.eq(bh:in_flight(), 0, "released after an error")
  local lim = fake(1, 10)
  local costly = limit.middleware { limiter = lim, cost = function(r) return r.path == "/bulk" and 8 or 1 end }
  T.eq(costly(req("a", "/bulk"), ok_next), 200)
  T.eq(costly(req("a", "/bulk"), ok_next), 429)
  T.eq(costly(req("a", "/one"), ok_next), 200)
end)

T.test("every option is validated", function()
  local function bad(fn, what)
    local err = T.raises(fn, what)
    T.match(err, "^[^:]*limit_test%.lua:%d+:", "error points at the caller")
  end
  bad(function() limit.token_bucket { burst = 1 } end, "orrery.limit.token_bucket: missing option 'rate'")
  bad(function() limit.token_bucket { rate = 1 } end, "orrery.limit.token_bucket: missing option 'burst'")
  bad(function() limit.token_bucket { rate = -1, burst = 1 } end, "orrery.limit.token_bucket: bad option 'rate'")
  bad(function() limit.token_bucket { rate = "5", burst = 1 } end, "bad option 'rate' (non-negative number (tokens per second) expected, got string)")
  bad(function() limit.token_bucket { rate = 0 / 0, burst = 1 } end, "bad option 'rate'")
  bad(function() limit.token_bucket { rate = 1, burst = -1 } end, "bad option 'burst' (non-negative integer expected, got -1)")
  bad(function() limit.token_bucket { rate = 1, burst = 1.5 } end, "bad option 'burst'")
  bad(function() limit.token_bucket { rate = 1, burst = 1, clock = 5 } end, "bad option 'clock' (function expected, got number)")
  bad(function() limit.token_bucket { rate = 1, burst = 1, sleep = true } end, "bad option 'sleep'")
  bad(function() limit.token_bucket { rate = 1, burst = 1, brust = 2 } end, "unknown option 'brust'")
  local lim = limit.token_bucket { rate = 1, burst = 1 }
  bad(function() lim:allow(-1) end, "orrery.limit:allow: bad argument #1 (non-negative integer expected, got -1)")
  bad(function() lim:allow("1") end, "orrery.limit:allow: bad argument #1")
  bad(function() lim:reserve(0.5) end, "orrery.limit:reserve: bad argument #1")
  bad(function() lim:wait(1, {}) end, "orrery.limit:wait: bad argument #2 (context expected, got table)")
  bad(function() lim:set_rate(-2) end, "orrery.limit:set_rate: bad argument #1")
  bad(function() lim:set_burst(1.5) end, "orrery.limit:set_burst: bad argument #1")
  bad(function() lim.allow() end, "orrery.limit:allow: bad self")
  bad(function() limit.every("x") end, "orrery.limit.every: bad argument #1")
  bad(function() limit.concurrency {} end, "orrery.limit.concurrency: missing option 'max'")
  bad(function() limit.concurrency { max = 0 } end, "bad option 'max' (positive integer expected, got 0)")
  bad(function() limit.concurrency { max = 1, queue = -1 } end, "bad option 'queue'")
  bad(function() limit.concurrency { max = 1, timeout = -1 } end, "bad option 'timeout'")
  bad(function() limit.concurrency { max = 1, size = 1 } end, "unknown option 'size'")
  local bh = limit.concurrency { max = 1 }
  bad(function() bh:acquire(5) end, "orrery.limit:acquire: bad argument #1 (context expected, got number)")
  bad(function() bh:call(nil) end, "orrery.limit:call: bad argument #1 (function expected, got nil)")
  bad(function() limit.middleware {} end, "orrery.limit.middleware: missing option 'limiter' or 'per_key'")
  bad(function() limit.middleware { limiter = 5 } end, "orrery.limit.middleware: bad option 'limiter'")
  bad(function() limit.middleware { per_key = limit.by_remote } end, "bad option 'new' (function expected, got nil)")
  bad(function() limit.middleware { per_key = 1, new = print } end, "bad option 'per_key'")
  bad(function() limit.middleware { limiter = lim, per_key = limit.by_remote } end, "exclusive")
  bad(function() limit.middleware { limiter = lim, max_keys = 0 } end, "bad option 'max_keys'")
  bad(function() limit.middleware { limiter = lim, status = 42 } end, "bad option 'status'")
  bad(function() limit.middleware { limiter = lim, body = 1 } end, "bad option 'body'")
  bad(function() limit.middleware { limiter = lim, cost = -1 } end, "bad option 'cost'")
  bad(function() limit.by_header(1) end, "orrery.limit.by_header: bad argument #1")
end)

local traced = T.traced

T.test("allow stays JIT-compiled, allowed and rejected alike", function()
  if not jit or not jit.status() then T.skip("JIT is off") end
  local open = limit.token_bucket { rate = 1e12, burst = 1e9 }
  local n = 0
  local aborts, stops = traced(function()
    for _ = 1, 5000 do
      if open:allow() then n = n + 1 end
    end
  end, "orrery/limit.lua")
  T.eq(n, 5000)
  T.eq(aborts, {}, "trace aborts")
  T.ok(stops >= 1, "at least one trace")
  local shut = limit.token_bucket { rate = 1, burst = 1 }
  n = 0
  aborts, stops = traced(function()
    for _ = 1, 5000 do
      local ok, err = shut:allow()
      if not ok and err == "too_many_requests" then n = n + 1 end
    end
  end, "orrery/limit.lua")
  T.ok(n >= 4998)
  T.eq(aborts, {}, "trace aborts (rejections)")
  T.ok(stops >= 1)
end)

T.test("list() finds live limiters", function()
  local a = limit.token_bucket { rate = 1, burst = 1, name = "zz-a" }
  local b = limit.concurrency { max = 1, name = "zz-b" }
  local seen = {}
  for _, l in ipairs(limit.list()) do seen[l] = true end
  T.ok(seen[a] and seen[b])
  T.eq(a:stats().kind, "token_bucket")
  T.eq(b:stats().kind, "concurrency")
  T.match(tostring(a), "zz%-a")
  T.match(tostring(b), "zz%-b")
end)
