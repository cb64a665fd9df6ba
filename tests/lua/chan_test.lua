-- chan_test.lua -- channels: send/recv, buffering, close, try ops, FIFO
-- wait queues, direct handoff, values of every type, argument errors.
local T = require "orrery.test"
local orrery = require "orrery"

local go, chan = orrery.go, orrery.chan

-- Yields until every coroutine whose id is in ids is parked, so that a
-- test knows the order in which they queued. Bounded, never time-based.
local settle = T.settle

-- Runs fn in a coroutine and returns a channel that receives
-- { ok, results... } when it ends (also when it raises).
local spawn = T.spawn

T.test("unbuffered send and recv hand values over in order", function()
  local ch = chan()
  go(function() for i = 1, 5 do ch:send(i) end end)
  for i = 1, 5 do
    local v, ok = ch:recv()
    T.eq(v, i)
    T.eq(ok, true)
  end
end)

T.test("buffered channel holds cap values without a receiver", function()
  local ch = chan(3)
  T.eq(ch:cap(), 3)
  T.eq(ch:len(), 0)
  T.eq(ch:send("a"), true)
  T.eq(ch:send("b"), true)
  T.eq(ch:send("c"), true)
  T.eq(ch:len(), 3)
  T.eq({ ch:try_send("d") }, { false, "full" })
  T.eq({ ch:recv() }, { "a", true })
  T.eq(ch:len(), 2)
  T.eq({ ch:recv() }, { "b", true })
  T.eq({ ch:recv() }, { "c", true })
  T.eq(ch:len(), 0)
end)

T.test("unbuffered channel has cap 0 and len 0", function()
  local ch = chan()
  T.eq(ch:cap(), 0)
  T.eq(ch:len(), 0)
  T.eq(chan(0):cap(), 0)
end)

T.test("recv on a closed channel drains, then returns nil, false, closed", function()
  local ch = chan(2)
  ch:send(1)
  ch:send(2)
  ch:close()
  T.eq(ch:closed(), true)
  T.eq({ ch:recv() }, { 1, true })
  T.eq({ ch:recv() }, { 2, true })
  T.eq({ ch:recv() }, { nil, false, "closed" })
  T.eq({ ch:recv() }, { nil, false, "closed" })
  T.eq({ ch:try_recv() }, { nil, false, "closed" })
end)

T.test("iter ends once the channel is closed and drained", function()
  local ch = chan(10)
  for i = 1, 4 do ch:send(i) end
  ch:close()
  local got = {}
  for v in ch:iter() do got[#got + 1] = v end
  T.eq(got, { 1, 2, 3, 4 })

  local u = chan()
  go(function()
    for i = 1, 3 do u:send(i * 10) end
    u:close()
  end)
  got = {}
  for v in u:iter() do got[#got + 1] = v end
  T.eq(got, { 10, 20, 30 })
end)

T.test("iter stops at a nil value (generic for semantics)", function()
  local ch = chan(3)
  ch:send(1)
  ch:send(nil)
  ch:send(3)
  local got = {}
  for v in ch:iter() do got[#got + 1] = v end
  T.eq(got, { 1 })
  T.eq({ ch:recv() }, { 3, true }, "the value after nil is still queued")
end)

T.test("try_send and try_recv never block", function()
  local ch = chan(1)
  T.eq({ ch:try_recv() }, { nil, false, "empty" })
  T.eq(ch:try_send(1), true)
  T.eq({ ch:try_send(2) }, { false, "full" })
  T.eq({ ch:try_recv() }, { 1, true })
  T.eq({ ch:try_recv() }, { nil, false, "empty" })

  local u = chan()
  T.eq({ u:try_send(1) }, { false, "full" }, "unbuffered without a receiver")
  T.eq({ u:try_recv() }, { nil, false, "empty" }, "unbuffered without a sender")
  T.eq(u:len(), 0)
end)

T.test("try_send hands over to a parked receiver; try_recv takes from a parked sender", function()
  local u = chan()
  local out, id = spawn(function() return u:recv() end)
  settle({ id })
  T.eq(u:try_send("x"), true)
  T.eq(out:recv(), { true, "x", true })

  local out2, id2 = spawn(function() return u:send("y") end)
  settle({ id2 })
  T.eq({ u:try_recv() }, { "y", true })
  T.eq(out2:recv(), { true, true })
end)

T.test("channels carry any Lua value, nil included", function()
  local t, f, co = {}, function() end, coroutine.create(function() end)
  local cd = require("ffi").new("int[1]")
  local values = { n = 12, nil, false, true, 0, -1.5, "", "s", t, f, co, cd }
  values[12] = io.stdout
  for _, cap in ipairs({ 0, 1, 16 }) do
    local ch = chan(cap)
    go(function()
      for i = 1, values.n do ch:send(values[i]) end
      ch:send(0 / 0)
    end)
    for i = 1, values.n do
      local v, ok = ch:recv()
      T.ok(ok, "cap " .. cap .. " value " .. i)
      T.ok(rawequal(v, values[i]), ("cap %d value %d: got %s"):format(cap, i, tostring(v)))
    end
    local nan, ok = ch:recv()
    T.ok(ok and nan ~= nan, "NaN survives")
  end
end)

T.test("nil is a value: recv returns nil, true", function()
  local ch = chan(1)
  ch:send(nil)
  T.eq(ch:len(), 1)
  T.eq({ ch:recv() }, { nil, true })
  local u = chan()
  go(function() u:send(nil) end)
  T.eq({ u:recv() }, { nil, true })
end)

T.test("send on a closed channel raises", function()
  local ch = chan(1)
  ch:close()
  local err = T.raises(function() ch:send(1) end, "send on closed channel")
  T.match(err, "orrery.chan:send")
  T.match(err, "chan_test.lua:%d+:", "the error points at the caller")
  T.raises(function() ch:try_send(1) end, "send on closed channel")
  T.raises(function() orrery.select { ch:send_case(1) } end, "send on closed channel")
end)

T.test("close of a closed channel raises", function()
  local ch = chan()
  ch:close()
  local err = T.raises(function() ch:close() end, "close of closed channel")
  T.match(err, "chan_test.lua:%d+:")
end)

T.test("close wakes every parked receiver with nil, false, closed", function()
  local ch = chan()
  local outs, ids = {}, {}
  for i = 1, 3 do outs[i], ids[i] = spawn(function() return ch:recv() end) end
  settle(ids)
  ch:close()
  for i = 1, 3 do T.eq(outs[i]:recv(), { true, nil, false, "closed" }) end
end)

T.test("close wakes parked senders, which raise", function()
  for _, cap in ipairs({ 0, 1 }) do
    local ch = chan(cap)
    if cap == 1 then ch:send("fill") end
    local outs, ids = {}, {}
    for i = 1, 2 do outs[i], ids[i] = spawn(function() return ch:send(i) end) end
    settle(ids)
    ch:close()
    for i = 1, 2 do
      local r = outs[i]:recv()
      T.eq(r[1], false, "cap " .. cap)
      T.match(r[2], "send on closed channel")
    end
    if cap == 1 then
      T.eq({ ch:recv() }, { "fill", true }, "buffered values survive close")
    end
    T.eq({ ch:recv() }, { nil, false, "closed" })
  end
end)

T.test("parked receivers are served in FIFO order", function()
  local ch, got = chan(), chan(10)
  local ids = {}
  for i = 1, 4 do
    ids[i] = go(function() local v = ch:recv(); got:send({ i, v }) end)
    settle(ids) -- park them one after another
  end
  for v = 1, 4 do ch:send(v * 100) end
  local seen = {}
  for _ = 1, 4 do
    local r = got:recv()
    seen[r[1]] = r[2]
  end
  T.eq(seen, { 100, 200, 300, 400 })
end)

T.test("parked senders are served in FIFO order (unbuffered and buffered)", function()
  for _, cap in ipairs({ 0, 2 }) do
    local ch = chan(cap)
    for i = 1, cap do ch:send(-i) end
    local ids = {}
    for i = 1, 4 do
      ids[i] = go(function() ch:send(i) end)
      settle(ids)
    end
    T.eq(ch:len(), cap)
    local got = {}
    for _ = 1, cap + 4 do got[#got + 1] = (ch:recv()) end
    local want = {}
    for i = 1, cap do want[#want + 1] = -i end
    for i = 1, 4 do want[#want + 1] = i end
    T.eq(got, want, "cap " .. cap)
  end
end)

T.test("unbuffered send hands off directly to a parked receiver", function()
  local ch = chan()
  local box = {}
  local received = false
  local id = go(function()
    local v = ch:recv()
    received = rawequal(v, box)
  end)
  settle({ id })
  -- The receiver is parked, so the send completes at once without
  -- parking the sender: the receiver has not even run yet.
  T.eq(ch:send(box), true)
  T.eq(received, false)
  T.eq(ch:len(), 0)
  orrery.yield()
  T.eq(received, true)
end)

T.test("a full buffered channel refills from a parked sender on recv", function()
  local ch = chan(2)
  ch:send(1)
  ch:send(2)
  local out, id = spawn(function() return ch:send(3) end)
  settle({ id })
  T.eq({ ch:recv() }, { 1, true })
  T.eq(ch:len(), 2, "the parked sender's value moved into the buffer")
  T.eq(out:recv(), { true, true })
  T.eq({ ch:recv() }, { 2, true })
  T.eq({ ch:recv() }, { 3, true })
end)

T.test("recv and send accept a timeout and leave nothing queued", function()
  local ch = chan()
  T.eq({ ch:recv(0.01) }, { nil, false, "timeout" })
  T.eq({ ch:send(1, 0.01) }, { nil, "timeout" })
  -- Neither timed-out waiter may still be queued.
  T.eq({ ch:try_recv() }, { nil, false, "empty" })
  T.eq({ ch:try_send(2) }, { false, "full" })
  T.eq({ ch:recv(0) }, { nil, false, "timeout" })
end)

T.test("bad arguments raise errors naming the function", function()
  T.raises(function() chan(-1) end, "orrery.chan: bad argument #1")
  T.raises(function() chan(1.5) end, "orrery.chan: bad argument #1")
  T.raises(function() chan("3") end, "orrery.chan: bad argument #1")
  T.raises(function() chan(1, 42) end, "orrery.chan: bad argument #2")
  local ch = chan(1)
  T.raises(function() ch.send(42, 1) end, "orrery.chan:send: bad self")
  T.raises(function() ch.recv({}) end, "orrery.chan:recv: bad self")
  T.raises(function() ch.try_send(nil) end, "orrery.chan:try_send: bad self")
  T.raises(function() ch.try_recv("x") end, "orrery.chan:try_recv: bad self")
  T.raises(function() ch.close(1) end, "orrery.chan:close: bad self")
  T.raises(function() ch.iter(1) end, "orrery.chan:iter: bad self")
  T.raises(function() ch:recv("soon") end, "orrery.chan:recv: bad argument #1")
  T.raises(function() ch:recv(-1) end, "orrery.chan:recv: bad argument #1")
  T.raises(function() ch:recv(0 / 0) end, "orrery.chan:recv: bad argument #1")
  T.raises(function() ch:send(1, "soon") end, "orrery.chan:send: bad argument #2")
  local err = T.raises(function() chan(-1) end, "orrery.chan")
  T.match(err, "chan_test.lua:%d+:", "the error points at the caller")
end)

T.test("a huge capacity either works or raises an error naming orrery.chan", function()
  local ok, r = pcall(chan, 0x7fffffff)
  if ok then
    T.eq(r:cap(), 0x7fffffff)
  else
    T.match(r, "orrery.chan", "error for chan(0x7fffffff)")
  end
end)

T.test("tostring shows id, name, cap, len and closed", function()
  local ch = chan(4, "jobs")
  ch:send(1)
  local s = tostring(ch)
  T.match(s, "^chan #%d+ jobs %(cap 4, len 1%)$")
  ch:close()
  T.match(tostring(ch), ", closed%)$")
end)

T.test("many producers and consumers lose and duplicate nothing", function()
  local ch, results = chan(8), chan(1000)
  local wg = orrery.waitgroup()
  for p = 1, 5 do
    wg:add(1)
    go(function()
      for i = 1, 100 do ch:send(p * 1000 + i) end
      wg:done()
    end)
  end
  for _ = 1, 4 do
    go(function()
      for v in ch:iter() do results:send(v) end
    end)
  end
  wg:wait()
  ch:close()
  local seen, n = {}, 0
  for _ = 1, 500 do
    local v = results:recv()
    T.eq(seen[v], nil, "duplicate " .. tostring(v))
    seen[v] = true
    n = n + 1
  end
  T.eq(n, 500)
end)
