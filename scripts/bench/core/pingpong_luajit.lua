-- SPDX-License-Identifier: MIT
-- pingpong_luajit.lua -- plain LuaJIT baseline: a value goes into a
-- coroutine with resume and comes back with yield, the floor that any
-- Lua-coroutine scheduler pays for two switches (no channels, no run
-- queue). Prints nanoseconds per round trip. Usage: luajit pingpong_luajit.lua [N]
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

local N = tonumber(arg[1]) or 1000000
local WARM = 10000
local resume, yield = coroutine.resume, coroutine.yield

local co = coroutine.create(function(v)
  while true do v = yield(v) end
end)
for i = 1, WARM do resume(co, i) end
local t0 = now()
for i = 1, N do
  local _, v = resume(co, i)
  if v ~= i then error("lost the value") end
end
local t1 = now()
print(("RESULT pingpong ns_per_rt %.1f"):format((t1 - t0) * 1e9 / N))
