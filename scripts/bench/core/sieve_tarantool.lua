-- SPDX-License-Identifier: MIT
-- sieve_tarantool.lua -- Tarantool: Go's concurrent prime sieve with
-- fibers linked by unbuffered fiber.channel(0), first N primes. Prints the
-- wall time and the last prime. Usage: tarantool sieve_tarantool.lua [N]
local fiber = require "fiber"
local clock = require "clock"

local N = tonumber(arg[1]) or 2000

local function generate(ch)
  local i = 2
  while true do
    ch:put(i)
    i = i + 1
  end
end

local function filter(src, dst, prime)
  while true do
    local i = src:get()
    if i % prime ~= 0 then dst:put(i) end
  end
end

local t0 = clock.monotonic()
local ch = fiber.channel(0)
fiber.create(generate, ch)
local prime
for _ = 1, N do
  prime = ch:get()
  local ch1 = fiber.channel(0)
  fiber.create(filter, ch, ch1, prime)
  ch = ch1
end
local t1 = clock.monotonic()
print(("RESULT sieve ms %.2f"):format((t1 - t0) * 1e3))
print(("RESULT sieve last_prime %d"):format(prime))
io.stdout:flush()
os.exit(0)
