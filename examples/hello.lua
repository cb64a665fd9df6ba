-- hello.lua -- a worker pool: three coroutines double jobs from a channel.
local orrery = require "orrery"

local jobs, results = orrery.chan(100), orrery.chan(100)
for w = 1, 3 do
  orrery.go(function()
    for job in jobs:iter() do
      orrery.sleep(0.01) -- pretend to work
      results:send({ worker = w, value = job * 2 })
    end
  end)
end
for j = 1, 5 do jobs:send(j) end
jobs:close()

local sum = 0
for _ = 1, 5 do
  local r = results:recv()
  print(("worker %d -> %d"):format(r.worker, r.value))
  sum = sum + r.value
end
print("sum", sum)
