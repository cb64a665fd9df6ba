-- SPDX-License-Identifier: MIT
-- pingpong.lua -- orrery: two coroutines bounce a value over two
-- unbuffered channels; prints nanoseconds per round trip (a send and a
-- receive on each side, two coroutine switches). Usage: orrery pingpong.lua [N]
local orrery = require "orrery"

local N = tonumber(arg[1]) or 1000000
local WARM = 10000

local ping, pong = orrery.chan(), orrery.chan()
orrery.go(function()
  for _ = 1, WARM + N do
    local v = ping:recv()
    pong:send(v)
  end
end)

for i = 1, WARM do
  ping:send(i)
  pong:recv()
end
local t0 = orrery.now()
for i = 1, N do
  ping:send(i)
  pong:recv()
end
local t1 = orrery.now()
print(("RESULT pingpong ns_per_rt %.1f"):format((t1 - t0) * 1e9 / N))
