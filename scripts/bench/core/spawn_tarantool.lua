-- SPDX-License-Identifier: MIT
-- spawn_tarantool.lua -- Tarantool: create N fibers that each park on a
-- fiber.channel get; prints the wall time until all are parked and the peak
-- RSS growth per parked fiber. Usage: tarantool spawn_tarantool.lua [N]
local fiber = require "fiber"
local clock = require "clock"

local N = tonumber(arg[1]) or 1000000

local function hwm()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) * 1024
end

local ch = fiber.channel(0)
local parked = 0
local function body()
  parked = parked + 1
  ch:get()
end

collectgarbage()
collectgarbage()
local base = hwm()
local t0 = clock.monotonic()
-- fiber.create runs the new fiber at once, up to its first yield.
local ok, err = pcall(function()
  for _ = 1, N do fiber.create(body) end
end)
local t1 = clock.monotonic()
local peak = hwm()
if not ok then
  io.stderr:write(("spawn_tarantool: failed after %d fibers: %s\n"):format(parked, tostring(err)))
  print(("RESULT spawn failed_at %d"):format(parked))
else
  assert(parked == N, "not every fiber parked")
  print(("RESULT spawn seconds %.4f"):format(t1 - t0))
  print(("RESULT spawn bytes_per_co %.0f"):format((peak - base) / N))
end
io.stdout:flush()
os.exit(0)
