-- SPDX-License-Identifier: MIT
-- memory_test.lua -- the Lua heap's limit and recovery: an allocation past
-- the limit fails the coroutine that made it with "not enough memory",
-- other coroutines keep running, and the memory is usable again after.
local T = require "orrery.test"
local orrery = require "orrery"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

local MB = 1048576

-- Runs fn with the limit set to what is live now plus extra bytes, and
-- always removes the limit again, so that a failure here does not starve
-- the tests that run after this one in the same process.
local function with_limit(extra, fn)
  collectgarbage()
  orrery.set_memory_limit(orrery.memory().used + extra)
  local ok, err = pcall(fn)
  orrery.set_memory_limit(nil)
  if not ok then error(err, 0) end
end

-- Grows a table of small tables until an allocation fails.
local function grow()
  local t = {}
  for i = 1, math.huge do t[i] = { i } end
end

T.test("memory() reports the live bytes, the limit and refused allocations", function()
  local m = orrery.memory()
  T.eq(type(m.used), "number")
  T.ok(m.used > 0)
  T.eq(m.limit, false)
  T.eq(type(m.failures), "number")
  orrery.set_memory_limit(1024 * MB)
  T.eq(orrery.memory().limit, 1024 * MB)
  orrery.set_memory_limit(nil)
  T.eq(orrery.memory().limit, false)
  T.raises(function() orrery.set_memory_limit("1G") end, "orrery.set_memory_limit: bad argument #1")
  T.raises(function() orrery.set_memory_limit(-1) end, "bad argument #1")
end)

T.test("a coroutine past the limit gets not enough memory; the others keep running", function()
  with_limit(8 * MB, function()
    local before = orrery.memory().failures
    local ticks = 0
    local g = orrery.group()
    g:go(grow)
    local other = orrery.waitgroup()
    other:add(1)
    orrery.go(function()
      for _ = 1, 100 do
        ticks = ticks + 1
        local _ = { ticks }
        orrery.yield()
      end
      other:done()
    end)
    T.match(tostring(g:wait()), "not enough memory")
    other:wait()
    T.eq(ticks, 100)
    T.ok(orrery.memory().failures > before)
    -- The failed coroutine's garbage was collected: most of the limit can
    -- be allocated again, as small objects and as one large string.
    T.ok(orrery.memory().used < orrery.memory().limit - 6 * MB)
    local t = {}
    for i = 1, 20000 do t[i] = { i } end
    local s = string.rep("x", 2 * MB)
    T.eq(#s, 2 * MB)
    T.eq(#t, 20000)
  end)
end)

T.test("pcall catches not enough memory and the coroutine carries on", function()
  with_limit(8 * MB, function()
    local ok, err = pcall(grow)
    T.eq(ok, false)
    T.match(err, "not enough memory")
    orrery.sleep(0) -- the scheduler collects between batches of coroutines
    local s = string.rep("y", 2 * MB)
    T.eq(#s, 2 * MB)
  end)
end)

T.test("an HTTP handler past the limit gets a 500; the next request succeeds", function()
  local srv = H.start(function(req)
    if req.path == "/grow" then grow() end
    return 200, "fine"
  end)
  with_limit(16 * MB, function()
    local res = H.get(srv, "/grow")
    T.eq(res.status, 500)
    T.match(table.concat(srv.logged, "\n"), "not enough memory")
    for _ = 1, 3 do
      res = H.get(srv, "/")
      T.eq(res.status, 200)
      T.eq(res.body, "fine")
    end
  end)
  srv:close()
end)

-- Without a limit, the same failure comes from the address space running
-- out (ulimit -v): the free lists must give their memory back, or the
-- large allocation after it and every C malloc would fail for good.
T.test("regression: after running out of address space, large allocations succeed again", function()
  if os.getenv("ORRERY_SANITIZED") then T.skip("ASan reserves more address space than ulimit -v allows") end
  local f = os.tmpname() .. ".lua"
  local h = io.open(f, "w")
  h:write([[
    local orrery = require "orrery"
    local g = orrery.group()
    g:go(function()
      local t = {}
      for i = 1, math.huge do t[i] = tostring(i) .. "-some-padding-to-make-it-longer" end
    end)
    local err = g:wait()
    orrery.yield()
    local s = string.rep("z", 64 * 1048576)
    print(tostring(err):match("not enough memory"), #s)
  ]])
  h:close()
  local p = io.popen("ulimit -v 400000; timeout -s KILL 60 " .. T.shquote(T.exe) .. " " .. T.shquote(f) .. " 2>&1; echo status $?")
  local out = p:read("*a")
  p:close()
  os.remove(f)
  T.match(out, "^not enough memory\t67108864\nstatus 0\n$")
end)
