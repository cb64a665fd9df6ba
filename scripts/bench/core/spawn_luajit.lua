-- SPDX-License-Identifier: MIT
-- spawn_luajit.lua -- plain LuaJIT baseline: create N coroutines and resume
-- each up to a yield (the cheapest possible "parked" coroutine: no
-- scheduler, no channel); prints the wall time and the peak RSS growth per
-- coroutine. Usage: luajit spawn_luajit.lua [N]
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

local function hwm()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) * 1024
end

local create, resume, yield = coroutine.create, coroutine.resume, coroutine.yield
local parked = 0
local function body()
  parked = parked + 1
  yield()
end

collectgarbage()
collectgarbage()
local base = hwm()
local t0 = now()
local all = {}
for i = 1, N do
  local co = create(body)
  resume(co)
  all[i] = co
end
local t1 = now()
assert(parked == N)
local peak = hwm()
print(("RESULT spawn seconds %.4f"):format(t1 - t0))
print(("RESULT spawn bytes_per_co %.0f"):format((peak - base) / N))
