-- timer_test.lua -- sleep, after, timer (stop, reset, fn), ticker, and
-- many concurrent sleepers. Durations are only checked from below: a
-- sleep lasts AT LEAST its duration; nothing asserts an upper bound.
local T = require "orrery.test"
local orrery = require "orrery"

local go, chan, now, sleep = orrery.go, orrery.chan, orrery.now, orrery.sleep

-- Blocks until a timer with a later deadline than every timer under test
-- has fired; timers fire in deadline order, so anything due before it has
-- fired by then.
local function fence(s)
  orrery.after(s):recv()
end

T.test("now() is monotonic seconds", function()
  local a = now()
  T.eq(type(a), "number")
  local b = now()
  T.ok(b >= a)
end)

T.test("sleep returns true and lasts at least its duration", function()
  local t0 = now()
  T.eq(sleep(0.02), true)
  T.ok(now() - t0 >= 0.02, "slept " .. (now() - t0))
end)

T.test("sleep counts from the call, not from the last loop iteration", function()
  local t0 = now()
  -- Keep the loop from running for 0.05 s: a sleep counted from the last
  -- loop iteration would then return 0.05 s early.
  while now() - t0 < 0.05 do end
  local t1 = now()
  T.eq(sleep(0.1), true)
  local slept = now() - t1
  T.ok(slept >= 0.1, ("sleep(0.1) returned after %.3fs"):format(slept))
end, { timeout = 10 })

T.test("sleep(0) and negative sleeps yield and return true", function()
  local ran = false
  go(function() ran = true end)
  T.eq(sleep(0), true)
  T.eq(ran, true, "sleep(0) let another coroutine run")
  T.eq(sleep(-1), true)
end)

T.test("sleep rejects non-numbers", function()
  T.raises(function() sleep() end, "orrery.sleep: bad argument #1")
  T.raises(function() sleep("1") end, "orrery.sleep: bad argument #1")
  T.raises(function() sleep(0 / 0) end, "orrery.sleep: bad argument #1")
end)

T.test("sleepers wake in deadline order", function()
  local order = chan(3)
  for _, d in ipairs({ 0.03, 0.01, 0.02 }) do
    go(function() sleep(d); order:send(d) end)
  end
  T.eq({ (order:recv()), (order:recv()), (order:recv()) }, { 0.01, 0.02, 0.03 })
end)

T.test("after(s) delivers the time on a channel once", function()
  local t0 = now()
  local c = orrery.after(0.02)
  T.eq(c:cap(), 1)
  local t, ok = c:recv()
  T.eq(ok, true)
  T.ok(t - t0 >= 0.02, "delivered after " .. (t - t0))
  T.ok(now() - t0 >= 0.02)
  fence(0.03)
  T.eq({ c:try_recv() }, { nil, false, "empty" }, "fires only once")
  T.raises(function() orrery.after("x") end, "orrery.after: bad argument #1")
end)

T.test("timer(s) fires once on t.c", function()
  local t0 = now()
  local t = orrery.timer(0.02)
  local v = t.c:recv()
  T.ok(v - t0 >= 0.02)
  T.eq(t:stop(), false, "stop after firing returns false")
end)

T.test("timer:stop prevents firing and returns true once", function()
  local t = orrery.timer(0.01)
  T.eq(t:stop(), true)
  T.eq(t:stop(), false)
  fence(0.03)
  T.eq({ t.c:try_recv() }, { nil, false, "empty" })
end)

T.test("timer:reset re-arms from now and reports whether it was pending", function()
  local t0 = now()
  local t = orrery.timer(10)
  T.eq(t:reset(0.02), true)
  local v = t.c:recv()
  T.ok(v - t0 >= 0.02)
  T.eq(t:reset(0.01), false, "already fired")
  T.ok(t.c:recv() ~= nil, "fires again after reset")

  -- Reset to later: the old deadline no longer fires.
  local u = orrery.timer(0.01)
  T.eq(u:reset(0.05), true)
  fence(0.02)
  T.eq({ u.c:try_recv() }, { nil, false, "empty" })
  T.ok(u.c:recv() ~= nil)
  T.raises(function() u:reset("x") end, "orrery.timer:reset: bad argument #1")
end)

T.test("timer(s, fn) runs fn in a new coroutine; stop prevents it", function()
  local ran = chan(1)
  local me = orrery.id()
  local t = orrery.timer(0.01, function() ran:send(orrery.id()) end)
  T.eq(t.c, nil, "no channel with fn")
  local id = ran:recv()
  T.ok(id ~= me, "fn ran in its own coroutine")

  local fired = false
  local s = orrery.timer(0.01, function() fired = true end)
  T.eq(s:stop(), true)
  fence(0.03)
  T.eq(fired, false)
  T.raises(function() orrery.timer(1, "f") end, "orrery.timer: bad argument #2")
  T.raises(function() orrery.timer("1") end, "orrery.timer: bad argument #1")
end)

T.test("timer fn runs under the context of the coroutine that made the timer", function()
  local ctx, cancel = orrery.context.with_cancel()
  local got = chan(1)
  orrery.with_context(ctx, function()
    orrery.timer(0.001, function() got:send(orrery.context.current()) end)
  end)
  T.ok(rawequal(got:recv(), ctx))
  cancel()
end)

T.test("ticker delivers ticks at least a period apart until stopped", function()
  local period = 0.01
  local t0 = now()
  local tk = orrery.ticker(period)
  local prev = t0
  for k = 1, 3 do
    local t = tk.c:recv()
    T.ok(t - t0 >= k * period - 1e-9, ("tick %d at %.4f"):format(k, t - t0))
    T.ok(t >= prev)
    prev = t
  end
  tk:stop()
  tk.c:try_recv() -- a tick may have been delivered before stop
  fence(period * 4)
  T.eq({ tk.c:try_recv() }, { nil, false, "empty" }, "no ticks after stop")
end)

T.test("ticker drops ticks for a slow reader (channel capacity 1)", function()
  local tk = orrery.ticker(0.005)
  fence(0.05)
  T.eq(tk.c:len(), 1)
  tk:stop()
end)

T.test("ticker:reset changes the period; bad periods raise", function()
  local tk = orrery.ticker(10)
  local t0 = now()
  tk:reset(0.01)
  T.ok(tk.c:recv() - t0 >= 0.01)
  tk:stop()
  T.raises(function() orrery.ticker(0) end, "orrery.ticker: bad argument #1")
  T.raises(function() orrery.ticker(-1) end, "orrery.ticker: bad argument #1")
  T.raises(function() orrery.ticker("x") end, "orrery.ticker: bad argument #1")
  T.raises(function() tk:reset(0) end, "orrery.ticker:reset: bad argument #1")
end)

T.test("100k concurrent sleeping coroutines all complete", function()
  local N = 100000
  local wg = orrery.waitgroup()
  local woke = 0
  wg:add(N)
  for i = 1, N do
    go(function()
      if sleep((i % 50) * 0.001) then woke = woke + 1 end
      wg:done()
    end)
  end
  T.ok(orrery.stats().coroutines >= N)
  T.eq(wg:wait(), true)
  T.eq(woke, N)
  T.ok(orrery.stats().coroutines < 10, "the sleepers have ended")
end, { timeout = 60 })

T.test("many pending timers can be stopped", function()
  local ts = {}
  local base = orrery.stats().timers
  for i = 1, 10000 do ts[i] = orrery.timer(10 + i * 0.001) end
  T.eq(orrery.stats().timers, base + 10000)
  for i = 1, 10000 do T.eq(ts[i]:stop(), true) end
  T.eq(orrery.stats().timers, base)
end)

-- Regression: a deadline that passed while coroutines were running made
-- the libuv timer fire at the start of uv_run(), before the poll, which
-- then blocked with no timeout because a listening socket kept the loop
-- alive: the timed-out receive below never returned.
T.test("a deadline that passes during a busy stretch fires while a socket is open", function()
  local st, out, err = T.script([[
    local orrery = require "orrery"
    local http = require "orrery.http"
    local srv = assert(http.listen(function() return 200, "x" end, { host = "127.0.0.1", port = 0 }))
    for _ = 1, 20 do
      local ch = orrery.chan()
      orrery.go(function()
        local t = orrery.now() + 0.003
        while orrery.now() < t do end
      end)
      local v, ok, e = ch:recv(0.001)
      assert(e == "timeout", tostring(e))
    end
    srv:close()
    print("done")
  ]], { timeout = 20 })
  T.eq(st, 0, "exit status (137 means it hung; stderr: " .. err:sub(1, 200) .. ")")
  T.eq(out, "done\n")
end)
