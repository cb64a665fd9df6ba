-- SPDX-License-Identifier: MIT
-- sleep_tarantool.lua -- Tarantool: N fibers each sleep a random 0-1 s.
-- Prints the same figures as sleep.lua. Note that fiber.sleep counts from
-- libev's cached loop time, so fibers created late in a long spawning loop
-- wake early against their own sleep call (negative lateness).
-- Usage: tarantool sleep_tarantool.lua [N]
local fiber = require "fiber"
local clock = require "clock"

local N = tonumber(arg[1]) or 100000

local function hwm()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) * 1024
end

local now = clock.monotonic
local max_d, max_deadline, last_wake, late_sum, left = 0, 0, 0, 0, N
local done = fiber.channel(1)
local function sleeper(d)
  local deadline = now() + d
  fiber.sleep(d)
  local t = now()
  if deadline > max_deadline then max_deadline = deadline end
  if d > max_d then max_d = d end
  if t > last_wake then last_wake = t end
  late_sum = late_sum + (t - deadline)
  left = left - 1
  if left == 0 then done:put(true) end
end

math.randomseed(42)
collectgarbage()
collectgarbage()
local base = hwm()
local t0 = now()
local started = 0
local ok, err = pcall(function()
  for _ = 1, N do
    fiber.create(sleeper, math.random())
    started = started + 1
  end
end)
if not ok then
  io.stderr:write(("sleep_tarantool: failed after %d fibers: %s\n"):format(started, tostring(err)))
  print(("RESULT sleep failed_at %d"):format(started))
  io.stdout:flush()
  os.exit(0)
end
done:get()
local peak = hwm()
print(("RESULT sleep past_last_deadline_ms %.3f"):format((last_wake - t0 - max_d) * 1e3))
print(("RESULT sleep last_late_ms %.3f"):format((last_wake - max_deadline) * 1e3))
print(("RESULT sleep mean_late_ms %.3f"):format(late_sum / N * 1e3))
print(("RESULT sleep wall_s %.4f"):format(last_wake - t0))
print(("RESULT sleep rss_mb %.1f"):format((peak - base) / 1048576))
io.stdout:flush()
os.exit(0)
