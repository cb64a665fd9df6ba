-- sync_test.lua -- waitgroup, mutex and semaphore: waiting, timeouts,
-- contexts, FIFO handoff and misuse.
local T = require "orrery.test"
local orrery = require "orrery"

local go, chan = orrery.go, orrery.chan

local settle = T.settle

local function spawn(fn, ...)
  local out = chan(1)
  local id = go(function(...) out:send({ pcall(fn, ...) }) end, ...)
  return out, id
end

-- waitgroup ------------------------------------------------------------

T.test("waitgroup: wait returns at once when the counter is zero", function()
  local wg = orrery.waitgroup()
  T.eq(wg:count(), 0)
  T.eq(wg:wait(), true)
end)

T.test("waitgroup: wait returns once every add is matched by done", function()
  local wg = orrery.waitgroup()
  local finished = 0
  for i = 1, 5 do
    wg:add(1)
    go(function()
      orrery.sleep(0.001 * i)
      finished = finished + 1
      wg:done()
    end)
  end
  T.eq(wg:count(), 5)
  T.eq(wg:wait(), true)
  T.eq(finished, 5)
  T.eq(wg:count(), 0)
end)

T.test("waitgroup: add(n) and add() default to 1; every waiter wakes", function()
  local wg = orrery.waitgroup()
  wg:add(2)
  wg:add()
  T.eq(wg:count(), 3)
  local outs, ids = {}, {}
  for i = 1, 3 do outs[i], ids[i] = spawn(function() return wg:wait() end) end
  settle(ids)
  wg:done(); wg:done()
  T.eq({ outs[1]:try_recv() }, { nil, false, "empty" }, "still one to go")
  wg:done()
  for i = 1, 3 do T.eq(outs[i]:recv(), { true, true }) end
end)

T.test("waitgroup: can be reused after reaching zero", function()
  local wg = orrery.waitgroup()
  for round = 1, 3 do
    wg:add(1)
    go(function() wg:done() end)
    T.eq(wg:wait(), true, "round " .. round)
  end
end)

T.test("waitgroup: wait accepts a timeout and a context", function()
  local wg = orrery.waitgroup()
  wg:add(1)
  T.eq({ wg:wait(0.01) }, { nil, "timeout" })
  local ctx, cancel = orrery.context.with_cancel()
  local out, id = spawn(function() return wg:wait(ctx) end)
  settle({ id })
  cancel()
  T.eq(out:recv(), { true, nil, "canceled" })
  wg:done()
  T.eq(wg:wait(), true)
end)

T.test("waitgroup: a negative counter raises at the caller", function()
  local wg = orrery.waitgroup()
  local err = T.raises(function() wg:add(-1) end, "negative counter")
  T.match(err, "sync_test.lua:%d+:")
  err = T.raises(function() wg:done() end, "negative counter")
  T.match(err, "^[^\n]*sync_test.lua:%d+:", "done() blames its caller")
  T.eq(wg:count(), 0, "the failed call changed nothing")
  T.raises(function() wg:add(1.5) end, "orrery.waitgroup:add: bad argument #1")
  T.raises(function() wg:add("1") end, "orrery.waitgroup:add: bad argument #1")
  T.raises(function() wg:wait("soon") end, "orrery.waitgroup:wait: bad argument #1")
end)

-- mutex ----------------------------------------------------------------

T.test("mutex: lock and unlock", function()
  local mu = orrery.mutex()
  T.eq(mu:lock(), true)
  T.eq(mu:try_lock(), false)
  mu:unlock()
  T.eq(mu:try_lock(), true)
  mu:unlock()
end)

T.test("mutex: excludes coroutines that yield inside the critical section", function()
  local mu = orrery.mutex()
  local inside, max_inside, total = 0, 0, 0
  local wg = orrery.waitgroup()
  for _ = 1, 10 do
    wg:add(1)
    go(function()
      for _ = 1, 5 do
        mu:lock()
        inside = inside + 1
        if inside > max_inside then max_inside = inside end
        orrery.yield()
        total = total + 1
        inside = inside - 1
        mu:unlock()
      end
      wg:done()
    end)
  end
  wg:wait()
  T.eq(max_inside, 1)
  T.eq(total, 50)
end)

T.test("mutex: waiters get the lock in FIFO order", function()
  local mu = orrery.mutex()
  mu:lock()
  local order = chan(3)
  local ids = {}
  for i = 1, 3 do
    ids[i] = go(function()
      mu:lock()
      order:send(i)
      mu:unlock()
    end)
    settle(ids)
  end
  mu:unlock()
  T.eq({ (order:recv()), (order:recv()), (order:recv()) }, { 1, 2, 3 })
end)

T.test("mutex: lock accepts a timeout and a context, and a failed lock leaves no trace", function()
  local mu = orrery.mutex()
  mu:lock()
  T.eq({ mu:lock(0.01) }, { nil, "timeout" })
  local ctx, cancel = orrery.context.with_cancel()
  local out, id = spawn(function() return mu:lock(ctx) end)
  settle({ id })
  cancel()
  T.eq(out:recv(), { true, nil, "canceled" })
  mu:unlock()
  T.eq(mu:try_lock(), true, "nobody else took the lock")
  mu:unlock()
  T.raises(function() mu:lock("x") end, "orrery.mutex:lock: bad argument #1")
end)

T.test("mutex: unlock of an unlocked mutex raises", function()
  local mu = orrery.mutex()
  local err = T.raises(function() mu:unlock() end, "unlock of unlocked mutex")
  T.match(err, "sync_test.lua:%d+:")
  mu:lock()
  mu:unlock()
  T.raises(function() mu:unlock() end, "unlock of unlocked mutex")
end)

-- semaphore ------------------------------------------------------------

T.test("semaphore: at most n holders at a time", function()
  local sem = orrery.semaphore(3)
  local inside, max_inside = 0, 0
  local wg = orrery.waitgroup()
  for _ = 1, 12 do
    wg:add(1)
    go(function()
      sem:acquire()
      inside = inside + 1
      if inside > max_inside then max_inside = inside end
      orrery.sleep(0.001)
      inside = inside - 1
      sem:release()
      wg:done()
    end)
  end
  wg:wait()
  T.eq(max_inside, 3)
  T.eq(sem:available(), 3)
end)

T.test("semaphore: try_acquire, available and release", function()
  local sem = orrery.semaphore(2)
  T.eq(sem:available(), 2)
  T.eq(sem:try_acquire(), true)
  T.eq(sem:acquire(), true)
  T.eq(sem:available(), 0)
  T.eq(sem:try_acquire(), false)
  sem:release()
  T.eq(sem:available(), 1)
  sem:release()
  T.eq(sem:available(), 2)
end)

T.test("semaphore: acquire accepts a timeout and a context; a release wakes the first waiter", function()
  local sem = orrery.semaphore(1)
  sem:acquire()
  T.eq({ sem:acquire(0.01) }, { nil, "timeout" })
  local ctx, cancel = orrery.context.with_cancel()
  local out, id = spawn(function() return sem:acquire(ctx) end)
  settle({ id })
  cancel()
  T.eq(out:recv(), { true, nil, "canceled" })
  T.eq(sem:available(), 0)
  local out2, id2 = spawn(function() return sem:acquire() end)
  settle({ id2 })
  sem:release()
  T.eq(out2:recv(), { true, true })
  T.eq(sem:available(), 0, "the waiter holds it now")
  sem:release()
  T.raises(function() sem:acquire(-1) end, "orrery.semaphore:acquire: bad argument #1")
end)

T.test("semaphore: misuse raises", function()
  local sem = orrery.semaphore(1)
  local err = T.raises(function() sem:release() end, "release without acquire")
  T.match(err, "sync_test.lua:%d+:")
  T.raises(function() orrery.semaphore(0) end, "orrery.semaphore: bad argument #1")
  T.raises(function() orrery.semaphore(1.5) end, "orrery.semaphore: bad argument #1")
  T.raises(function() orrery.semaphore("2") end, "orrery.semaphore: bad argument #1")
  T.raises(function() orrery.semaphore() end, "orrery.semaphore: bad argument #1")
end)
