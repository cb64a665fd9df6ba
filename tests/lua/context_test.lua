-- context_test.lua -- contexts: cancel, timeout, deadline, values, done(),
-- inheritance, waking every parked operation, the scoped forms and
-- orrery.group.
local T = require "orrery.test"
local orrery = require "orrery"

local go, chan, context = orrery.go, orrery.chan, orrery.context

local settle = T.settle

-- Starts fn in a coroutine bound to ctx; returns a channel that gets
-- { pcall results } and the coroutine id.
local function spawn_in(ctx, fn)
  local out = chan(1)
  local id
  orrery.with_context(ctx, function()
    id = go(function() out:send({ pcall(fn) }) end)
  end)
  return out, id
end

T.test("with_cancel: err is nil until cancelled, then canceled; cancel is idempotent", function()
  local ctx, cancel = context.with_cancel()
  T.eq(ctx:err(), nil)
  T.eq(ctx:deadline(), nil)
  cancel()
  T.eq(ctx:err(), "canceled")
  cancel()
  ctx:cancel()
  T.eq(ctx:err(), "canceled")
  local c2 = context.with_cancel()
  c2:cancel()
  T.eq(c2:err(), "canceled")
end)

T.test("with_timeout: err becomes timeout at the deadline", function()
  local t0 = orrery.now()
  local ctx = context.with_timeout(0.02)
  local t1 = orrery.now()
  local dl = ctx:deadline()
  T.ok(dl >= t0 + 0.02 and dl <= t1 + 0.02, "deadline is now + timeout")
  T.eq(ctx:err(), nil)
  local v, ok, err = ctx:done():recv()
  T.eq({ v, ok }, { nil, false })
  T.eq(err, "closed")
  T.eq(ctx:err(), "timeout")
  T.ok(orrery.now() >= dl)
end)

T.test("with_timeout: cancel before the deadline gives canceled", function()
  local ctx, cancel = context.with_timeout(10)
  cancel()
  T.eq(ctx:err(), "canceled")
end)

T.test("with_deadline: deadline() is the given time; a past deadline is already expired", function()
  local at = orrery.now() + 0.02
  local ctx = context.with_deadline(at)
  T.eq(ctx:deadline(), at)
  T.eq(ctx:done():recv(), nil)
  T.eq(ctx:err(), "timeout")
  local past = context.with_deadline(orrery.now() - 1)
  T.eq(past:err(), "timeout")
  T.eq({ past:done():try_recv() }, { nil, false, "closed" })
end)

T.test("a child's deadline is the earlier of its own and its parent's", function()
  local parent = context.with_timeout(0.05)
  local child = context.with_timeout(10, parent)
  T.eq(child:deadline(), parent:deadline())
  local sooner = context.with_timeout(0.001, parent)
  T.ok(sooner:deadline() < parent:deadline())
  T.eq(select(2, sooner:done():recv()), false)
  T.eq(sooner:err(), "timeout")
  T.eq(parent:err(), nil, "a child's expiry does not touch the parent")
end)

T.test("with_value: values are inherited and shadowed down the tree", function()
  local a = context.with_value("user", "ann")
  local b = context.with_value("req", 7, a)
  local c = context.with_value("user", "bob", b)
  local d = context.with_cancel(c)
  T.eq(a:value("user"), "ann")
  T.eq(b:value("user"), "ann")
  T.eq(b:value("req"), 7)
  T.eq(c:value("user"), "bob")
  T.eq(d:value("user"), "bob")
  T.eq(d:value("req"), 7)
  T.eq(a:value("req"), nil)
  T.eq(context.background():value("user"), nil)
  local key = {}
  T.eq(context.with_value(key, false):value(key), false)
  T.raises(function() context.with_value(nil, 1) end, "orrery.context.with_value: bad argument #1")
end)

T.test("done() can be taken before or after the cancel", function()
  local ctx, cancel = context.with_cancel()
  local d = ctx:done()
  T.ok(rawequal(d, ctx:done()), "one channel per context")
  T.eq({ d:try_recv() }, { nil, false, "empty" })
  cancel()
  T.eq({ d:try_recv() }, { nil, false, "closed" })
  local late, cancel2 = context.with_cancel()
  cancel2()
  T.eq({ late:done():recv() }, { nil, false, "closed" })
end)

T.test("ctx:done() works in select, also inside the context itself", function()
  local ctx, cancel = context.with_cancel()
  local work = chan()
  local out, id = spawn_in(ctx, function()
    return orrery.select { work:recv_case(), ctx:done():recv_case() }
  end)
  settle({ id })
  cancel()
  T.eq(out:recv(), { true, 2, nil, false, "closed" })
  -- Already cancelled: the done case is ready at once.
  out = spawn_in(ctx, function()
    return orrery.select { work:recv_case(), ctx:done():recv_case() }
  end)
  T.eq(out:recv(), { true, 2, nil, false, "closed" })
end)

T.test("coroutines inherit their creator's context", function()
  local ctx = context.with_value("k", "v")
  local got = chan(2)
  orrery.with_context(ctx, function()
    go(function()
      got:send(context.current())
      go(function() got:send(context.current()) end)
    end)
  end)
  T.ok(rawequal(got:recv(), ctx), "child")
  T.ok(rawequal(got:recv(), ctx), "grandchild")
  T.ok(context.current() ~= ctx, "with_context restored the caller's context")
end)

T.test("cancelling wakes every parked operation bound to the context", function()
  local ctx, cancel = context.with_cancel()
  -- One channel per operation, so that no two of them pair up.
  local rch, sch, selr, full = chan(), chan(), chan(), chan(1)
  full:send("x")
  local wg, mu, sem = orrery.waitgroup(), orrery.mutex(), orrery.semaphore(1)
  wg:add(1); mu:lock(); sem:acquire()
  local ops = {
    recv = function() return rch:recv() end,
    send = function() return sch:send(1) end,
    send_full = function() return full:send(2) end,
    select = function() return orrery.select { selr:recv_case(), full:send_case(3) } end,
    sleep = function() return orrery.sleep(100) end,
    waitgroup = function() return wg:wait() end,
    mutex = function() return mu:lock() end,
    semaphore = function() return sem:acquire() end,
    timeout_recv = function() return rch:recv(100) end,
  }
  local want = {
    recv = { true, nil, false, "canceled" },
    send = { true, nil, "canceled" },
    send_full = { true, nil, "canceled" },
    select = { true, nil, "canceled" },
    sleep = { true, nil, "canceled" },
    waitgroup = { true, nil, "canceled" },
    mutex = { true, nil, "canceled" },
    semaphore = { true, nil, "canceled" },
    timeout_recv = { true, nil, false, "canceled" },
  }
  local outs, ids = {}, {}
  for name, fn in pairs(ops) do
    local out, id = spawn_in(ctx, fn)
    outs[name] = out
    ids[#ids + 1] = id
  end
  settle(ids)
  cancel()
  for name, out in pairs(outs) do T.eq(out:recv(), want[name], name) end
  -- Nothing stays queued after the wake.
  T.eq({ rch:try_send(1) }, { false, "full" }, "no receiver left")
  T.eq({ selr:try_send(1) }, { false, "full" }, "no select receiver left")
  T.eq({ sch:try_recv() }, { nil, false, "empty" }, "no sender left")
  T.eq({ full:recv() }, { "x", true })
  T.eq({ full:try_recv() }, { nil, false, "empty" }, "no parked sender refilled it")
  T.eq(wg:count(), 1)
  T.eq(mu:try_lock(), false, "still held by its owner")
  mu:unlock()
  T.eq(mu:try_lock(), true)
  T.eq(sem:available(), 0)
  sem:release()
  T.eq(sem:available(), 1)
end)

T.test("a context's deadline wakes parked operations with timeout", function()
  local ctx = context.with_timeout(0.01)
  local ch, ch2 = chan(), chan()
  local out1 = spawn_in(ctx, function() return ch:recv() end)
  local out2 = spawn_in(ctx, function() return orrery.sleep(100) end)
  local out3 = spawn_in(ctx, function() return orrery.select { ch2:send_case(1) } end)
  T.eq(out1:recv(), { true, nil, false, "timeout" })
  T.eq(out2:recv(), { true, nil, "timeout" })
  T.eq(out3:recv(), { true, nil, "timeout" })
end)

T.test("a context passed to an operation wakes it too", function()
  local ctx, cancel = context.with_cancel()
  local ch = chan()
  local out, id = spawn_in(context.background(), function() return ch:recv(ctx) end)
  settle({ id })
  cancel()
  T.eq(out:recv(), { true, nil, false, "canceled" })
  T.eq({ ch:send(1, ctx) }, { nil, "canceled" }, "an already cancelled context fails at once")
end)

T.test("waits in a cancelled context fail at once, non-blocking operations still work", function()
  local ctx, cancel = context.with_cancel()
  cancel()
  local ch = chan(1)
  local out = spawn_in(ctx, function()
    local t0 = orrery.now()
    local r = { orrery.sleep(10) }
    r[#r + 1] = orrery.now() - t0 < 10
    r[#r + 1] = ch:try_send(5)
    r[#r + 1] = ch:recv() -- ready: no wait needed
    return unpack(r)
  end)
  T.eq(out:recv(), { true, nil, "canceled", true, true, 5 })
end)

T.test("children are cancelled with their parents, not the other way round", function()
  local parent, cancel = context.with_cancel()
  local child = context.with_cancel(parent)
  local grandchild = context.with_value("k", 1, child)
  local sibling, cancel_sibling = context.with_cancel(parent)
  cancel_sibling()
  T.eq(parent:err(), nil)
  T.eq(child:err(), nil)
  cancel()
  T.eq(child:err(), "canceled")
  T.eq(grandchild:err(), "canceled")
  local ch = chan()
  local out = spawn_in(grandchild, function() return ch:recv() end)
  T.eq(out:recv(), { true, nil, false, "canceled" })
  local late = context.with_cancel(parent)
  T.eq(late:err(), "canceled", "a context made under a cancelled parent starts cancelled")
end)

T.test("a parent's timeout reaches its children as timeout", function()
  local parent = context.with_timeout(0.01)
  local child = context.with_cancel(parent)
  local out = spawn_in(child, function() return orrery.sleep(100) end)
  T.eq(out:recv(), { true, nil, "timeout" })
  T.eq(child:err(), "timeout")
end)

T.test("orrery.with_timeout runs fn under a deadline and returns its results", function()
  T.eq({ orrery.with_timeout(1, function(a, b) return a + b, nil, "x" end, 1, 2) }, { 3, nil, "x" })
  T.eq({ orrery.with_timeout(0.01, function() return orrery.sleep(100) end) }, { nil, "timeout" })
  local ch = chan()
  T.eq({ orrery.with_timeout(0.01, function() return ch:recv() end) }, { nil, false, "timeout" })
  T.eq(context.current():err(), nil, "the caller's context is untouched")
  T.eq({ orrery.sleep(0) }, { true })
end)

T.test("orrery.with_timeout cancels coroutines started inside when fn returns", function()
  local out = chan(1)
  orrery.with_timeout(10, function()
    go(function() out:send({ orrery.sleep(100) }) end)
  end)
  T.eq(out:recv(), { nil, "canceled" })
end)

T.test("scoped forms propagate errors and restore the caller's context", function()
  local before = context.current()
  T.raises(function() orrery.with_timeout(1, function() error("inner") end) end, "inner")
  T.ok(rawequal(context.current(), before))
  T.raises(function() orrery.with_cancel(function() error("inner2") end) end, "inner2")
  T.ok(rawequal(context.current(), before))
  T.raises(function() orrery.with_timeout("1", function() end) end, "orrery.with_timeout: bad argument #1")
  T.raises(function() orrery.with_timeout(1) end, "orrery.with_timeout: bad argument #2")
  T.raises(function() orrery.with_deadline(nil, function() end) end, "orrery.with_deadline: bad argument #1")
  T.raises(function() orrery.with_context({}, function() end) end, "orrery.with_context: bad argument #1")
end)

T.test("orrery.with_deadline and orrery.with_cancel", function()
  T.eq({ orrery.with_deadline(orrery.now() + 0.01, function() return orrery.sleep(100) end) },
    { nil, "timeout" })
  T.eq({ orrery.with_cancel(function()
    local ctx = context.current()
    ctx:cancel()
    return orrery.sleep(100)
  end) }, { nil, "canceled" })
  local inner
  orrery.with_cancel(function() inner = context.current() end)
  T.eq(inner:err(), "canceled", "cancelled when fn returns")
end)

T.test("with_context binds the current coroutine and restores it, also on error", function()
  local ctx, cancel = context.with_cancel()
  local before = context.current()
  T.eq(orrery.with_context(ctx, function() return context.current() end), ctx)
  T.ok(rawequal(context.current(), before))
  cancel()
  T.eq({ orrery.with_context(ctx, function() return orrery.sleep(1) end) }, { nil, "canceled" })
  T.raises(function() orrery.with_context(ctx, function() error("x") end) end, "x")
  T.ok(rawequal(context.current(), before))
end)

T.test("without_cancel: keeps the values, not the cancellation or the deadline", function()
  local parent, cancel = context.with_timeout(100)
  local valued = context.with_value("k", "v", parent)
  local detached = context.without_cancel(valued)
  T.eq(detached:value("k"), "v")
  T.eq(detached:deadline(), nil)
  local out = spawn_in(detached, function()
    local r = { orrery.sleep(0.01) }
    r[#r + 1] = detached:err()
    return unpack(r)
  end)
  orrery.yield()
  cancel()
  T.eq(valued:err(), "canceled")
  T.eq(out:recv(), { true, true, nil }, "the wait under the detached context went on")
  local child, cancel_child = context.with_cancel(detached)
  cancel_child()
  T.eq(child:err(), "canceled", "it can still have cancellable children")
  T.eq(detached:err(), nil)
  T.raises(function() context.without_cancel(5) end, "orrery.context.without_cancel: bad argument #1")
end)

T.test("background() is the root context", function()
  local root = context.background()
  T.ok(context.is_ctx(root))
  T.eq(root:err(), nil)
  T.eq(root:deadline(), nil)
  T.match(tostring(root), "root")
  T.ok(not context.is_ctx({}))
end)

T.test("bad arguments raise errors naming the function", function()
  T.raises(function() context.with_cancel(5) end, "orrery.context.with_cancel: bad argument #1")
  T.raises(function() context.with_timeout("1") end, "orrery.context.with_timeout: bad argument #1")
  T.raises(function() context.with_timeout(1, {}) end, "orrery.context.with_timeout: bad argument #2")
  T.raises(function() context.with_deadline() end, "orrery.context.with_deadline: bad argument #1")
  T.raises(function() context.with_value("k", 1, "p") end, "orrery.context.with_value: bad argument #3")
end)

-- orrery.group ----------------------------------------------------------

T.test("group: wait returns nil when every function succeeds", function()
  local g = orrery.group()
  local n = 0
  for i = 1, 5 do g:go(function(k) orrery.sleep(0.001); n = n + k end, i) end
  T.eq(g:wait(), nil)
  T.eq(n, 15)
end)

T.test("group: wait returns the first error and cancels the others", function()
  local g = orrery.group()
  local others = chan(2)
  g:go(function()
    others:send({ "sleep", orrery.sleep(100) })
  end)
  g:go(function()
    others:send({ "recv", chan():recv() })
  end)
  g:go(function()
    orrery.sleep(0.001)
    error("first failure")
  end)
  g:go(function()
    orrery.sleep(0.05)
    error("second failure")
  end)
  local err = g:wait()
  T.match(err, "first failure")
  T.match(err, "context_test.lua:%d+:", "the error names where it was raised")
  local got = {}
  for _ = 1, 2 do
    local r = others:recv()
    got[r[1]] = { unpack(r, 2, 4) }
  end
  T.eq(got, { sleep = { nil, "canceled" }, recv = { nil, false, "canceled" } })
  T.eq(g.ctx:err(), "canceled")
end)

T.test("group: returning nil, err counts as a failure", function()
  local g = orrery.group()
  g:go(function() return nil, "bad input" end)
  g:go(function() return orrery.sleep(100) end)
  T.eq(g:wait(), "bad input")
end)

T.test("group: an error in a group coroutine does not end the process", function()
  local g = orrery.group()
  g:go(function() local t = nil; return t.field end)
  T.match(g:wait(), "attempt to index")
  T.eq(orrery.sleep(0), true, "still running")
end)

T.test("group: derives its context from the caller's or a given parent", function()
  local parent, cancel = context.with_cancel()
  local g = orrery.group(parent)
  local out = chan(1)
  g:go(function() out:send({ orrery.sleep(100) }) end)
  cancel()
  T.eq(out:recv(), { nil, "canceled" })
  T.eq(g:wait(), nil, "cancelled from outside is not an error of the group")
  T.raises(function() g:go(42) end, "orrery.group:go: bad argument #1")
end)

T.test("group: wait waits for every coroutine even when the caller is cancelled", function()
  local ctx, cancel = context.with_cancel()
  local finished = false
  local out = spawn_in(ctx, function()
    local g = orrery.group()
    g:go(function()
      local ok, err = orrery.sleep(100)       -- woken by the cancel
      for _ = 1, 3 do orrery.yield() end       -- some cleanup after it
      finished = true
      return ok, err
    end)
    local err = g:wait()
    return finished, err
  end)
  orrery.yield()
  cancel()
  T.eq(out:recv(), { true, true, "canceled" })
end)
