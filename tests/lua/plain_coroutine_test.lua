-- SPDX-License-Identifier: MIT
-- plain_coroutine_test.lua -- plain Lua coroutines inside orrery ones:
-- generators work; a blocking orrery call inside one raises instead of
-- yielding to the plain coroutine's resumer and corrupting the scheduler.
local T = require "orrery.test"
local orrery = require "orrery"

T.test("coroutine.wrap generators work inside orrery coroutines", function()
  local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
  T.eq({ gen(), gen(), gen() }, { 1, 2, 3 })
  local co = coroutine.create(function(a) local b = coroutine.yield(a + 1); return a + b end)
  T.eq({ coroutine.resume(co, 1) }, { true, 2 })
  T.eq({ coroutine.resume(co, 10) }, { true, 11 })
  T.eq({ coroutine.resume(co) }, { false, "cannot resume dead coroutine" })
end)

T.test("errors inside coroutine.wrap propagate unchanged", function()
  local f = coroutine.wrap(function() error({ code = 7 }) end)
  local ok, e = pcall(f)
  T.eq(ok, false)
  T.eq(e, { code = 7 })
end)

T.test("a blocking call inside coroutine.wrap raises, and the scheduler stays sound", function()
  local ch = orrery.chan()
  local err = T.raises(coroutine.wrap(function() ch:recv() end), "inside coroutine.wrap/resume")
  T.match(err, "orrery.chan:recv")
  T.raises(coroutine.wrap(function() orrery.sleep(0.001) end), "orrery.sleep")
  T.raises(coroutine.wrap(function() orrery.select { ch:recv_case() } end), "orrery.select")
  -- Non-blocking operations are fine in there.
  local b = orrery.chan(1)
  coroutine.wrap(function() T.ok(b:try_send(1)) end)()
  T.eq({ b:try_recv() }, { 1, true })
  -- The orrery coroutine itself still blocks and is woken normally.
  orrery.go(function() ch:send("after") end)
  T.eq({ ch:recv() }, { "after", true })
  T.ok(orrery.sleep(0.001))
end)

T.test("nested plain coroutines restore the orrery coroutine on the way out", function()
  local outer = coroutine.wrap(function()
    local inner = coroutine.wrap(function() coroutine.yield("in") end)
    coroutine.yield(inner())
  end)
  T.eq(outer(), "in")
  local ch = orrery.chan(1)
  orrery.go(function() ch:send(orrery.id()) end)
  T.ok(ch:recv() > 0)
  T.ok(orrery.id() > 0, "still inside an orrery coroutine")
end)
