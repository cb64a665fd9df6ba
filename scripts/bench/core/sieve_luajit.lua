-- SPDX-License-Identifier: MIT
-- sieve_luajit.lua -- plain LuaJIT baseline: the same chain of filters as
-- Go's sieve, but each stage pulls from the previous one with resume/yield
-- (coroutine.wrap) instead of channels and a scheduler. Prints the wall
-- time and the last prime. Usage: luajit sieve_luajit.lua [N]
local ffi = require "ffi"
ffi.cdef [[
struct bench_timespec { long tv_sec, tv_nsec; };
int clock_gettime(int clk, struct bench_timespec *ts);
]]
local ts = ffi.new("struct bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local N = tonumber(arg[1]) or 2000
local wrap, yield = coroutine.wrap, coroutine.yield

local function generate()
  return wrap(function()
    local i = 2
    while true do
      yield(i)
      i = i + 1
    end
  end)
end

local function filter(src, prime)
  return wrap(function()
    while true do
      local i = src()
      if i % prime ~= 0 then yield(i) end
    end
  end)
end

local t0 = now()
local src = generate()
local prime
for _ = 1, N do
  prime = src()
  src = filter(src, prime)
end
local t1 = now()
print(("RESULT sieve ms %.2f"):format((t1 - t0) * 1e3))
print(("RESULT sieve last_prime %d"):format(prime))
