-- SPDX-License-Identifier: MIT
-- sieve.lua -- orrery: Go's concurrent prime sieve, a chain of coroutines
-- linked by unbuffered channels, run until it yields the first N primes.
-- Prints the wall time and the last prime (a check that all peers agree).
-- Usage: orrery sieve.lua [N]
local orrery = require "orrery"

local N = tonumber(arg[1]) or 2000

local function generate(ch)
  local i = 2
  while true do
    ch:send(i)
    i = i + 1
  end
end

local function filter(src, dst, prime)
  while true do
    local i = src:recv()
    if i % prime ~= 0 then dst:send(i) end
  end
end

local t0 = orrery.now()
local ch = orrery.chan()
orrery.go(generate, ch)
local prime
for _ = 1, N do
  prime = ch:recv()
  local ch1 = orrery.chan()
  orrery.go(filter, ch, ch1, prime)
  ch = ch1
end
local t1 = orrery.now()
print(("RESULT sieve ms %.2f"):format((t1 - t0) * 1e3))
print(("RESULT sieve last_prime %d"):format(prime))
io.stdout:flush()
orrery.exit(0)
