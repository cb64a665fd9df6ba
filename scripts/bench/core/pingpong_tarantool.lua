-- SPDX-License-Identifier: MIT
-- pingpong_tarantool.lua -- Tarantool: two fibers bounce a value over two
-- unbuffered fiber.channel(0); prints nanoseconds per round trip.
-- Usage: tarantool pingpong_tarantool.lua [N]
local fiber = require "fiber"
local clock = require "clock"

local N = tonumber(arg[1]) or 1000000
local WARM = 10000

local ping, pong = fiber.channel(0), fiber.channel(0)
fiber.create(function()
  for _ = 1, WARM + N do
    local v = ping:get()
    pong:put(v)
  end
end)

for i = 1, WARM do
  ping:put(i)
  pong:get()
end
local t0 = clock.monotonic()
for i = 1, N do
  ping:put(i)
  pong:get()
end
local t1 = clock.monotonic()
print(("RESULT pingpong ns_per_rt %.1f"):format((t1 - t0) * 1e9 / N))
io.stdout:flush()
os.exit(0)
