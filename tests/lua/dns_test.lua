-- SPDX-License-Identifier: MIT
-- dns_test.lua -- host/dns.c over host/work.c: names resolved on the thread
-- pool, and jobs whose coroutine stopped waiting.
local T = require "orrery.test"
local orrery = require "orrery"
local net = require "orrery.net"
local core = require "orrery.net.core"
local sched = require "orrery.sched"

-- core.resolve skips the shortcuts of net.resolve ("localhost", numeric
-- addresses), so these go through getaddrinfo on the pool.
local function resolve(name, timeout, ctx)
  local r, slot, d = core.resolve(name, timeout or -1)
  if r == nil then return nil, slot end
  local code = sched.park(slot, ctx)
  if code < 0 then return nil, net.wake_err(code) end
  return core.resolve_result(d)
end

local function has(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

T.test("localhost and numeric addresses resolve on the thread pool", function()
  local addrs = assert(resolve("localhost"))
  T.ok(has(addrs, "127.0.0.1") or has(addrs, "::1"), table.concat(addrs, " "))
  T.eq(assert(resolve("127.0.0.1")), { "127.0.0.1" })
  T.ok(has(assert(resolve("::1")), "::1"))
  -- Without a network the resolver may say "try again" instead.
  local err = select(2, resolve("no-such-host.invalid", 10))
  T.ok(err == "no_such_host" or err == "dns_temporary_failure", err)
end)

-- Each job outlives the wait: its result is freed by the job when it ends
-- (or the job leaves the queue), never handed to the coroutine that gave
-- up. Run under ASan this fails on a leak or a use after free.
T.test("resolves abandoned by a 0 timeout or a cancelled context are freed", function()
  local timeouts, done = 0, 0
  for i = 1, 200 do
    local ok, err = resolve(i % 2 == 0 and "localhost" or "127.0.0.1", 0)
    if ok then done = done + 1 else T.eq(err, "timeout"); timeouts = timeouts + 1 end
    if i % 50 == 0 then collectgarbage() end
  end
  T.eq(timeouts + done, 200)
  local ctx, cancel = orrery.context.with_cancel()
  cancel()
  for _ = 1, 100 do T.eq({ resolve("localhost", -1, ctx) }, { nil, "canceled" }) end
  -- Many coroutines at once, each giving up at a different moment.
  local wg = orrery.waitgroup()
  for i = 1, 100 do
    wg:add(1)
    orrery.go(function()
      resolve("localhost", (i % 5) * 0.0005)
      wg:done()
    end)
  end
  wg:wait()
  collectgarbage()
  -- The pool still works afterwards.
  T.ok(#assert(resolve("localhost", 5)) > 0)
end)
