-- SPDX-License-Identifier: MIT
-- spawn.lua -- orrery: spawn N coroutines that each park on a channel
-- receive; prints the wall time until all are parked and the peak RSS
-- growth per parked coroutine. Usage: orrery spawn.lua [N]
local orrery = require "orrery"

local N = tonumber(arg[1]) or 1000000

-- VmHWM (peak resident set) of this process, in bytes.
local function hwm()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) * 1024
end

local ch = orrery.chan()
local parked = 0
local function body()
  parked = parked + 1
  ch:recv()
end

collectgarbage()
collectgarbage()
local base = hwm()
local t0 = orrery.now()
for _ = 1, N do orrery.go(body) end
-- The main coroutine goes to the back of the run queue, so every new
-- coroutine runs up to its receive and parks before main resumes.
orrery.yield()
local t1 = orrery.now()
assert(parked == N, "not every coroutine parked")
local peak = hwm()
print(("RESULT spawn seconds %.4f"):format(t1 - t0))
print(("RESULT spawn bytes_per_co %.0f"):format((peak - base) / N))
io.stdout:flush()
orrery.exit(0)
