-- gc_test.lua -- the garbage collector and parked coroutines: a parked
-- coroutine is anchored by the runtime, whatever Lua still refers to it,
-- and unreachable channels and timers are freed.
local T = require "orrery.test"
local orrery = require "orrery"

local go, chan = orrery.go, orrery.chan

local function full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

-- Yields until every coroutine whose id is in ids is parked.
local settle = T.settle

T.test("coroutines parked on a channel survive a full GC and finish later", function()
  local results = chan(100)
  local ch = chan()
  local base = #orrery.coroutines()
  local ids = {}
  for i = 1, 100 do
    -- Nothing but the channel's wait queue knows these coroutines.
    ids[i] = go(function() local v = ch:recv(); results:send(v * i) end)
  end
  settle(ids)
  full_gc()
  local sum = 0
  for i = 1, 100 do ch:send(i) end
  for _ = 1, 100 do sum = sum + results:recv() end
  T.eq(sum, 338350) -- sum of i * i
  orrery.yield()
  T.eq(#orrery.coroutines(), base)
end)

T.test("a channel reachable only from its parked coroutines stays alive", function()
  local results = chan(3)
  local weak = setmetatable({}, { __mode = "v" })
  do
    local hidden, hidden2 = chan(), chan()
    weak[1], weak[2] = hidden, hidden2
    settle({ go(function() results:send({ hidden:recv() }) end) })
    settle({ go(function() results:send({ orrery.select { hidden:recv_case() } }) end) })
    settle({ go(function() results:send({ hidden2:send("from a parked sender") }) end) })
  end
  full_gc()
  T.ok(weak[1] ~= nil and weak[2] ~= nil, "the parked coroutines keep the channels alive")
  weak[1]:send("x")
  weak[1]:send("y")
  T.eq({ weak[2]:recv() }, { "from a parked sender", true })
  local got = {}
  for _ = 1, 3 do got[#got + 1] = results:recv() end
  table.sort(got, function(a, b) return #a < #b end)
  T.eq(got, { { true }, { "x", true }, { 1, "y", true } })
end)

T.test("sleeping and selecting coroutines survive a full GC", function()
  local done = chan(2)
  go(function() orrery.sleep(0.01); done:send("slept") end)
  go(function() orrery.select { chan():recv_case(), timeout = 0.01 }; done:send("selected") end)
  orrery.yield()
  full_gc()
  local got = { (done:recv()), (done:recv()) }
  table.sort(got)
  T.eq(got, { "selected", "slept" })
end)

T.test("unreachable idle channels are collected", function()
  local weak = setmetatable({}, { __mode = "k" })
  for i = 1, 100 do
    local ch = chan(i % 3)
    if i % 3 > 0 then ch:send(i) end
    weak[ch] = true
  end
  full_gc()
  T.eq(next(weak), nil)
end)

T.test("timers are freed once fired or stopped and unreachable", function()
  local base = orrery.stats().timers
  for _ = 1, 1000 do orrery.timer(100):stop() end
  local cs = {}
  for i = 1, 100 do cs[i] = orrery.after(0.001) end
  for i = 1, 100 do cs[i]:recv() end
  cs = nil
  full_gc()
  T.eq(orrery.stats().timers, base)
  -- New timers still work after the ids of collected ones are reused.
  T.ok(orrery.after(0.001):recv() ~= nil)
end)

T.test("a process that exits with coroutines still parked shuts down cleanly", function()
  local st, out, err = T.script([[
    local orrery = require "orrery"
    for i = 1, 1000 do
      local ch = orrery.chan()            -- unreachable once the loop ends
      orrery.go(function() ch:recv() end) -- leaked: parked forever
    end
    orrery.go(function() orrery.sleep(100) end)
    orrery.go(function() orrery.select { orrery.chan():recv_case(), orrery.chan():send_case(1) } end)
    orrery.yield()
    collectgarbage("collect")
    print(orrery.stats().coroutines)
  ]])
  T.eq(err, "")
  T.eq(out, "1003\n")
  T.eq(st, 0)
end)

-- The state's allocator files small blocks by 16-byte size class, freed
-- blocks are reused and reallocations cross classes: objects of every
-- size around the classes' edges keep their contents through growth,
-- shrinking and collections.
T.test("objects of every small size keep their contents across reuse and resizing", function()
  local strs, tabs = {}, {}
  for round = 1, 3 do
    for n = 0, 1100, round == 1 and 1 or 7 do
      strs[n] = ("%d:"):format(n) .. ("s"):rep(n)
    end
    for i = 1, 120 do
      local t = {}
      for j = 1, i do t[j] = j * round end          -- the array part grows
      for j = 1, i % 40 do t["k" .. j] = j end      -- and the hash part
      tabs[i] = t
    end
    collectgarbage()
    for n, s in pairs(strs) do T.eq(s, ("%d:"):format(n) .. ("s"):rep(n)) end
    for i, t in ipairs(tabs) do
      T.eq(#t, i)
      T.eq(t[i], i * round)
      T.eq(t["k" .. (i % 40)], i % 40 > 0 and i % 40 or nil)
      for j = i, 1, -1 do t[j] = nil end            -- shrink on the next rehash
      t.x = 1
    end
    strs, tabs = {}, {}
    collectgarbage()
  end
end)
