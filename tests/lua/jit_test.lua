-- jit_test.lua -- hot paths stay JIT-compiled: non-blocking channel
-- operations and orrery.now() are FFI calls, so loops over them must
-- compile to traces without a single trace abort.
local T = require "orrery.test"
local orrery = require "orrery"
local jutil = require "jit.util"

local chan = orrery.chan
local SRC = "jit_test.lua"

local function reason(code, extra)
  local ok, vmdef = pcall(require, "jit.vmdef")
  local fmt = ok and vmdef.traceerr[code]
  if not fmt then return "trace error " .. tostring(code) end
  if type(extra) == "number" and fmt:find("%%d") then return fmt:format(extra) end
  if fmt:find("%%s") then
    if type(extra) == "number" and ok then extra = vmdef.ffnames[extra] or extra end
    return fmt:format(tostring(extra))
  end
  return fmt
end

-- Aborts that only say where a trace started (see orrery.test); any other
-- abort in the measured code is a failure.
local BENIGN = T.BENIGN_ABORTS

-- Runs fn with a fresh trace cache and records the trace events:
-- returns { roots = number of root traces started in this file that
-- were completed, stops, aborts = { "where: why", ... } } (benign aborts
-- left out).
local function traces(fn)
  if not jit.status() then T.skip("the JIT is off") end
  jit.flush()
  local started, r = {}, { roots = 0, stops = 0, aborts = {} }
  local function on_trace(what, tr, func, pc, otr, oex)
    if what == "start" then
      local info = jutil.funcinfo(func, pc)
      started[tr] = { root = otr == nil, here = (info.source or ""):find(SRC, 1, true) ~= nil }
    elseif what == "stop" then
      r.stops = r.stops + 1
      local s = started[tr]
      if s and s.root and s.here then r.roots = r.roots + 1 end
    elseif what == "abort" then
      local why = reason(otr, oex)
      if not BENIGN[why] then
        local info = jutil.funcinfo(func, pc)
        r.aborts[#r.aborts + 1] = ("%s:%s: %s"):format(info.source or "?",
          tostring(info.currentline), why)
      end
    end
  end
  jit.attach(on_trace, "trace")
  local ok, err = pcall(fn)
  jit.attach(on_trace)
  if not ok then error(err, 0) end
  return r
end

T.test("try_send/try_recv loop on a buffered channel compiles without aborts", function()
  local ch = chan(64)
  local sum = 0
  local r = traces(function()
    for i = 1, 20000 do
      ch:try_send(i)
      local v = ch:try_recv()
      sum = sum + v
    end
  end)
  T.eq(sum, 20000 * 20001 / 2)
  T.eq(r.aborts, {}, "trace aborts")
  T.ok(r.roots >= 1, "the loop's root trace was compiled")
end)

T.test("a full-then-drain loop of try ops compiles without aborts", function()
  local ch = chan(256)
  local r = traces(function()
    for _ = 1, 200 do
      while ch:try_send(true) do end
      while true do
        local _, ok = ch:try_recv()
        if not ok then break end
      end
    end
  end)
  T.eq(r.aborts, {}, "trace aborts")
  T.ok(r.roots >= 1)
end)

T.test("send/recv between two coroutines that never block compiles without aborts", function()
  local N = 20000
  local ch = chan(N) -- large enough that the sender never parks
  local done = chan(1)
  local sum = 0
  -- The sender starts outside the measured region (creating a closure is
  -- not compiled) and runs its loop when the receiver first parks.
  orrery.go(function()
    for i = 1, N do ch:send(i) end
    done:send(true)
  end)
  local r = traces(function()
    done:recv()
    for _ = 1, N do sum = sum + ch:recv() end
  end)
  T.eq(sum, N * (N + 1) / 2)
  T.eq(r.aborts, {}, "trace aborts")
  T.ok(r.roots >= 2, "both loops were compiled (" .. r.roots .. " root traces)")
end)

T.test("orrery.now() in a loop compiles without aborts", function()
  local last, backwards = 0, 0
  local r = traces(function()
    for _ = 1, 20000 do
      local t = orrery.now()
      if t < last then backwards = backwards + 1 end
      last = t
    end
  end)
  T.eq(backwards, 0)
  T.eq(r.aborts, {}, "trace aborts")
  T.ok(r.roots >= 1)
end)

-- The blocking ping-pong has to yield to the scheduler on every
-- operation. LuaJIT does not compile across coroutine.yield: a trace ends
-- there, and an abort at the yield would be expected and is allowed. In
-- practice the hot wait() in orrery.sched becomes a root trace that ends
-- at the yield, and the code after the resume, the rest of the loop
-- included, is compiled as side traces of it; whether the loop also gets
-- a root trace of its own depends on which hot counter fires first. So
-- the test asserts that traces are compiled and that nothing but the
-- yield aborts one.
T.test("blocking ping-pong compiles, with aborts only at coroutine.yield", function()
  -- Finalizers of earlier cases' channels and timers would otherwise run
  -- in a GC step while a trace records ("error thrown or hook called
  -- during recording": LuaJIT disables recording around __gc), an abort
  -- that says when the GC ran, not what the loop is.
  collectgarbage()
  collectgarbage()
  local a, b = chan(), chan()
  orrery.go(function()
    for i = 1, 5000 do a:send(i); b:recv() end
  end)
  local r = traces(function()
    for i = 1, 5000 do a:recv(); b:send(i) end
  end)
  for _, why in ipairs(r.aborts) do
    T.match(why, "yield", "the only allowed abort is at coroutine.yield")
  end
  T.ok(r.stops >= 2, "traces were compiled (" .. r.stops .. ")")
end)
