-- SPDX-License-Identifier: MIT
-- resilience.lua -- ns per call of the resilience guards' hot paths, each
-- beside its floor (the same loop calling fn through a bare pcall).
-- Usage: orrery scripts/bench/resilience.lua [iterations]  (default 10M)
local orrery = require "orrery"
local breaker = require "orrery.breaker"
local limit = require "orrery.limit"

local N = tonumber(arg and arg[1]) or 10000000
local now = orrery.now

local function work(x) return x end

local function bench(name, fn)
  fn(math.max(1, math.floor(N / 100))) -- warm up and compile
  local t = now()
  local r = fn(N)
  local dt = now() - t
  print(("%-44s %8.1f ns/call  (%d calls, %.3f s)"):format(name, dt / N * 1e9, N, dt))
  return r
end

print(("orrery %s, %s"):format(orrery.version or "?", jit and jit.version or "no JIT"))

bench("floor: pcall(fn, i)", function(n)
  local s = 0
  for i = 1, n do
    local _, v = pcall(work, i)
    s = s + v
  end
  return s
end)

bench("floor: orrery.now() (one clock read)", function(n)
  local s = 0
  for _ = 1, n do s = s + now() end
  return s
end)

local cb = breaker.new { name = "bench" }
bench("breaker cb:call(fn, i), closed", function(n)
  local s = 0
  for i = 1, n do s = s + cb:call(work, i) end
  return s
end)

local cbw = breaker.new { name = "bench-window", interval = 60, bucket_period = 1 }
bench("breaker cb:call, closed, rolling window", function(n)
  local s = 0
  for i = 1, n do s = s + cbw:call(work, i) end
  return s
end)

local cbs = breaker.new { name = "bench-slow", slow_call_duration = 1 }
bench("breaker cb:call, closed, slow-call timing", function(n)
  local s = 0
  for i = 1, n do s = s + cbs:call(work, i) end
  return s
end)

local cbo = breaker.new { name = "bench-open" }
cbo:force_open()
bench("breaker cb:call, open (rejected)", function(n)
  local s = 0
  for _ = 1, n do
    local r = cbo:call(work, 1)
    if r == nil then s = s + 1 end
  end
  return s
end)

local lim = limit.token_bucket { rate = 1e15, burst = 1e12 }
bench("limit lim:allow(), allowed", function(n)
  local s = 0
  for _ = 1, n do
    if lim:allow() then s = s + 1 end
  end
  return s
end)

local shut = limit.token_bucket { rate = 1, burst = 1 }
bench("limit lim:allow(), rejected", function(n)
  local s = 0
  for _ = 1, n do
    if not shut:allow() then s = s + 1 end
  end
  return s
end)

local bh = limit.concurrency { max = 1 }
bench("limit bulkhead try_acquire() + release()", function(n)
  local s = 0
  for _ = 1, n do
    if bh:try_acquire() then
      s = s + 1
      bh:release()
    end
  end
  return s
end)

local st = cb:stats()
assert(st.calls > N and st.failures == 0, "breaker counted every call")
