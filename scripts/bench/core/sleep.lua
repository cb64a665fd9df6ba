-- SPDX-License-Identifier: MIT
-- sleep.lua -- orrery: N coroutines each sleep a random 0-1 s, all
-- requested together. Prints how long after the latest deadline, counted
-- from the start of the run (the issue's figure: spawning time counts), the
-- last sleeper woke; the same against deadlines counted from each sleep
-- call (timer precision alone); the mean lateness of a wakeup; the wall
-- time and the peak RSS growth. Usage: orrery sleep.lua [N]
local orrery = require "orrery"

local N = tonumber(arg[1]) or 100000

local function hwm()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) * 1024
end

local now = orrery.now
local max_d, max_deadline, last_wake, late_sum = 0, 0, 0, 0
local wg = orrery.waitgroup()
wg:add(N)
local function sleeper(d)
  local deadline = now() + d
  orrery.sleep(d)
  local t = now()
  if deadline > max_deadline then max_deadline = deadline end
  if d > max_d then max_d = d end
  if t > last_wake then last_wake = t end
  late_sum = late_sum + (t - deadline)
  wg:done()
end

math.randomseed(42)
collectgarbage()
collectgarbage()
local base = hwm()
local t0 = now()
for _ = 1, N do orrery.go(sleeper, math.random()) end
wg:wait()
local peak = hwm()
print(("RESULT sleep past_last_deadline_ms %.3f"):format((last_wake - t0 - max_d) * 1e3))
print(("RESULT sleep last_late_ms %.3f"):format((last_wake - max_deadline) * 1e3))
print(("RESULT sleep mean_late_ms %.3f"):format(late_sum / N * 1e3))
print(("RESULT sleep wall_s %.4f"):format(last_wake - t0))
print(("RESULT sleep rss_mb %.1f"):format((peak - base) / 1048576))
