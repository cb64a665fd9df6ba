-- select_test.lua -- select over receive and send cases, timeout, default,
-- disabled cases, fairness, and the state of the channels afterwards.
local T = require "orrery.test"
local orrery = require "orrery"

local go, chan, select = orrery.go, orrery.chan, orrery.select

local settle = T.settle

local function spawn(fn, ...)
  local out = chan(1)
  local id = go(function(...) out:send({ pcall(fn, ...) }) end, ...)
  return out, id
end

T.test("select returns the ready receive case: i, v, true", function()
  local a, b = chan(1), chan(1)
  b:send("bee")
  T.eq({ select { a:recv_case(), b:recv_case() } }, { 2, "bee", true })
end)

T.test("select returns the ready send case: i, true", function()
  local a, b = chan(), chan(1)
  T.eq({ select { a:recv_case(), b:send_case("x") } }, { 2, true })
  T.eq({ b:recv() }, { "x", true })
end)

T.test("a receive case on a closed channel is ready: i, nil, false, closed", function()
  local a, b = chan(), chan()
  b:close()
  T.eq({ select { a:recv_case(), b:recv_case() } }, { 2, nil, false, "closed" })
end)

T.test("a closed receive case reports the same values whether ready or parked", function()
  local a, b = chan(), chan()
  b:close()
  local ready = { select { a:recv_case(), b:recv_case() } }
  local c = chan()
  local out, id = spawn(function() return select { a:recv_case(), c:recv_case() } end)
  settle({ id })
  c:close()
  local r = out:recv() -- pcall's true, then select's results
  T.eq({ r[2], r[3], r[4], r[5] }, { ready[1], ready[2], ready[3], ready[4] })
end)

T.test("a send case on a closed channel raises", function()
  local a = chan()
  a:close()
  T.raises(function() select { a:send_case(1) } end, "send on closed channel")
end)

T.test("timeout: nil, timeout, and no waiter stays queued", function()
  local a, b = chan(), chan()
  T.eq({ select { a:recv_case(), b:send_case(1), timeout = 0.01 } }, { nil, "timeout" })
  T.eq({ a:try_send(1) }, { false, "full" }, "no receiver left on a")
  T.eq({ b:try_recv() }, { nil, false, "empty" }, "no sender left on b")
  T.eq({ select { timeout = 0 } }, { nil, "timeout" })
end)

T.test("default: nil, default when nothing is ready, else the ready case", function()
  local a = chan(1)
  T.eq({ select { a:recv_case(), default = true } }, { nil, "default" })
  a:send(5)
  T.eq({ select { a:recv_case(), default = true } }, { 1, 5, true })
  T.eq({ select { default = true } }, { nil, "default" })
end)

T.test("a false case is disabled, like a nil channel in Go", function()
  local a = chan(1)
  a:send(1)
  T.eq({ select { false, a:recv_case() } }, { 2, 1, true })
  T.eq({ select { false, false, default = true } }, { nil, "default" })
  T.eq({ select { false, timeout = 0.001 } }, { nil, "timeout" })
  -- A disabled case on a ready channel is never chosen.
  a:send(2)
  T.eq({ select { false and a:recv_case(), default = true } }, { nil, "default" })
end)

T.test("disabling cases in a loop merges two channels until both close", function()
  local a, b = chan(), chan()
  go(function() for i = 1, 3 do a:send("a" .. i) end a:close() end)
  go(function() for i = 1, 2 do b:send("b" .. i) end b:close() end)
  local ca, cb = a:recv_case(), b:recv_case()
  local got = {}
  while ca or cb do
    local i, v, ok = select { ca or false, cb or false }
    if not ok then
      if i == 1 then ca = nil else cb = nil end
    else
      got[#got + 1] = v
    end
  end
  table.sort(got)
  T.eq(got, { "a1", "a2", "a3", "b1", "b2" })
end)

T.test("ready cases are chosen uniformly at random", function()
  local a, b = chan(1), chan(1)
  local n = { 0, 0 }
  for _ = 1, 10000 do
    a:try_send(1)
    b:try_send(2)
    local i = select { a:recv_case(), b:recv_case() }
    n[i] = n[i] + 1
  end
  T.ok(n[1] >= 4000 and n[1] <= 6000, ("case 1 chosen %d times of 10000"):format(n[1]))
  T.ok(n[2] >= 4000 and n[2] <= 6000, ("case 2 chosen %d times of 10000"):format(n[2]))

  -- Three ready cases mixing sends and receives: each about a third.
  local c, d, e = chan(1), chan(1), chan(1)
  local m = { 0, 0, 0 }
  for _ = 1, 9000 do
    c:try_send(1)
    d:try_recv()
    e:try_send(1)
    local i = select { c:recv_case(), d:send_case(1), e:recv_case() }
    m[i] = m[i] + 1
    c:try_recv(); e:try_recv()
  end
  for i = 1, 3 do
    T.ok(m[i] >= 2400 and m[i] <= 3600, ("case %d chosen %d times of 9000"):format(i, m[i]))
  end
end)

T.test("a select never matches its own send with its own receive", function()
  local u = chan()
  T.eq({ select { u:send_case(1), u:recv_case(), default = true } }, { nil, "default" })
  T.eq({ select { u:send_case(1), u:recv_case(), timeout = 0.01 } }, { nil, "timeout" })
  T.eq({ u:try_send(1) }, { false, "full" })
  T.eq({ u:try_recv() }, { nil, false, "empty" })
  -- With a peer it completes one side only.
  local out, id = spawn(function() return select { u:send_case("mine"), u:recv_case() } end)
  settle({ id })
  T.eq(u:send("peer"), true)
  T.eq(out:recv(), { true, 2, "peer", true })
  T.eq({ u:try_recv() }, { nil, false, "empty" }, "its send case was disarmed")
end)

T.test("after a select fires on one case, none of its other waiters remain", function()
  local A, B = chan(), chan()
  local out, id = spawn(function() return select { A:recv_case(), B:recv_case() } end)
  settle({ id })
  T.eq(A:send("x"), true)
  T.eq(out:recv(), { true, 1, "x", true })
  T.eq({ B:try_send(1) }, { false, "full" }, "no receiver is queued on B")
  T.eq(B:len(), 0)
  -- B still works normally afterwards.
  go(function() B:send("later") end)
  T.eq({ B:recv() }, { "later", true })

  -- The same for send cases: the other send waiter is gone.
  local C, D = chan(), chan()
  local out2, id2 = spawn(function() return select { C:send_case("c"), D:send_case("d") } end)
  settle({ id2 })
  T.eq({ D:recv() }, { "d", true })
  T.eq(out2:recv(), { true, 2, true })
  T.eq({ C:try_recv() }, { nil, false, "empty" }, "no sender is queued on C")
end)

T.test("a parked select is woken by a sender, a receiver or a close", function()
  local a, b = chan(), chan()
  local out, id = spawn(function() return select { a:recv_case(), b:send_case("to-b") } end)
  settle({ id })
  T.eq({ b:recv() }, { "to-b", true })
  T.eq(out:recv(), { true, 2, true })

  out, id = spawn(function() return select { a:recv_case(), b:recv_case() } end)
  settle({ id })
  b:close()
  T.eq(out:recv(), { true, 2, nil, false, "closed" })

  local c = chan()
  out, id = spawn(function() return select { c:send_case(1), a:recv_case() } end)
  settle({ id })
  c:close()
  local r = out:recv()
  T.eq(r[1], false)
  T.match(r[2], "send on closed channel")
end)

T.test("a parked send case on a full buffered channel refills it", function()
  local ch = chan(1)
  ch:send("first")
  local out, id = spawn(function() return select { ch:send_case("second") } end)
  settle({ id })
  T.eq({ ch:recv() }, { "first", true })
  T.eq(out:recv(), { true, 1, true })
  T.eq(ch:len(), 1)
  T.eq({ ch:recv() }, { "second", true })
end)

T.test("send cases carry nil", function()
  local u = chan()
  go(function() select { u:send_case(nil) } end)
  T.eq({ u:recv() }, { nil, true })
end)

T.test("select works with more than 64 cases", function()
  local cases, chans = {}, {}
  for i = 1, 100 do
    chans[i] = chan(1)
    cases[i] = chans[i]:recv_case()
  end
  chans[77]:send("x")
  T.eq({ select(cases) }, { 77, "x", true })
  local out, id = spawn(function() return select(cases) end)
  settle({ id })
  chans[99]:send("y")
  T.eq(out:recv(), { true, 99, "y", true })
  for i = 1, 100 do
    T.eq({ chans[i]:try_send(1) }, { true }, "chan " .. i)
  end
end)

T.test("select takes a context: cancelling it ends the select", function()
  local ctx, cancel = orrery.context.with_cancel()
  local a = chan()
  local out, id = spawn(function() return select { a:recv_case(), ctx = ctx } end)
  settle({ id })
  cancel()
  T.eq(out:recv(), { true, nil, "canceled" })
  T.eq({ a:try_send(1) }, { false, "full" })
  -- timeout = ctx is accepted too.
  local tctx = orrery.context.with_timeout(0.01)
  T.eq({ select { a:recv_case(), timeout = tctx } }, { nil, "timeout" })
end)

T.test("ctx:done() is a receive case that fires on cancel", function()
  local ctx, cancel = orrery.context.with_cancel()
  local a = chan()
  local out, id = spawn(function() return select { a:recv_case(), ctx:done():recv_case() } end)
  settle({ id })
  cancel()
  T.eq(out:recv(), { true, 2, nil, false, "closed" })
end)

T.test("bad arguments raise errors naming orrery.select", function()
  local a = chan()
  T.raises(function() select() end, "orrery.select: bad argument #1")
  T.raises(function() select("x") end, "orrery.select: bad argument #1")
  T.raises(function() select { a } end, "orrery.select: bad case #1")
  T.raises(function() select { a:recv_case(), 42 } end, "orrery.select: bad case #2")
  T.raises(function() select { a:recv_case(), timeout = "1s" } end, "orrery.select")
  T.raises(function() select { a:recv_case(), timeout = -1 } end, "orrery.select")
  local err = T.raises(function() select { true } end, "orrery.select: bad case #1")
  T.match(err, "select_test.lua:%d+:", "the error points at the caller")
end)

T.test("select refuses a ctx option that is not a context", function()
  local orrery = require "orrery"
  local ch = orrery.chan()
  T.raises(function() orrery.select { ch:recv_case(), ctx = 1 } end, "bad option ctx")
end)
