-- leaks_test.lua -- the leak report: a coroutine parked on a channel that
-- nothing live can reach is reported; one parked on a channel something
-- still holds (a local, a global, a live coroutine, a timer) is not, nor
-- one that a timeout or a cancellable context will wake.
local T = require "orrery.test"
local orrery = require "orrery"
local leaks = require "orrery.leaks"
local console = require "orrery.console"
local admin = require "orrery.admin"
local json = require "orrery.json"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

local root = orrery.context.background()

-- Starts fn in a coroutine bound to the root context (a test case's own
-- context could be cancelled, which would wake it) and returns its id.
local function go_root(fn, ...)
  local id
  local args = { n = select("#", ...), ... }
  orrery.with_context(root, function() id = orrery.go(fn, unpack(args, 1, args.n)) end)
  return id
end

-- Runs fn in a coroutine of its own and waits for it to end: the channels
-- it makes and drops are then nowhere on this coroutine's stack (a dead
-- stack slot that still held one would keep it reachable, for the walk as
-- for the GC).
local function setup(fn)
  local done = orrery.chan(1)
  go_root(function() fn(); done:send(true) end)
  done:recv()
end

-- The names of the channels the reported coroutines wait on (select cases
-- too), as a set.
local function reported()
  local set = {}
  for _, c in ipairs((leaks.find())) do
    if c.name then set[c.name] = c.id end
    for _, cs in ipairs(c.cases or {}) do
      local name = cs:match('"(.-)"')
      if name then set[name] = c.id end
    end
  end
  return set
end

kept_in_global = orrery.chan(0, "leaks_test global")

T.test("a coroutine parked on a dropped channel is reported; one on a channel still held is not", function()
  local kept = orrery.chan(0, "leaks_test local")
  local holder = { ch = orrery.chan(0, "leaks_test field") }
  local ids = {}
  -- The channels made in here are dropped when it returns, except what it
  -- hands to coroutines that stay live.
  local function start()
    local dropped = orrery.chan(0, "leaks_test dropped")
    ids.dropped = go_root(function() dropped:recv() end)
    ids.kept = go_root(function() kept:recv() end)
    ids.global = go_root(function() kept_in_global:recv() end)
    ids.field = go_root(function() holder.ch:send(1) end)
    -- A live coroutine (parked in a sleep: its timer will wake it) holds it.
    local held = orrery.chan(0, "leaks_test held by a sleeper")
    ids.held = go_root(function() held:recv() end)
    go_root(function() orrery.sleep(3600); held:send(1) end)
    -- Two coroutines that each hold the other's channel, and nobody else.
    local a, b = orrery.chan(0, "leaks_test pair a"), orrery.chan(0, "leaks_test pair b")
    ids.a = go_root(function() local _ = b; a:recv() end)
    ids.b = go_root(function() local _ = a; b:recv() end)
    -- A full buffered channel: the sender is parked for good.
    local full = orrery.chan(1, "leaks_test full")
    ids.full = go_root(function() full:send(1); full:send(2) end)
  end
  setup(start)
  T.settle { ids.dropped, ids.kept, ids.global, ids.field, ids.held, ids.a, ids.b, ids.full }
  local r = reported()
  T.eq(r["leaks_test dropped"], ids.dropped)
  T.eq(r["leaks_test pair a"], ids.a)
  T.eq(r["leaks_test pair b"], ids.b)
  T.eq(r["leaks_test full"], ids.full)
  T.eq(r["leaks_test local"], nil, "held by this function's local")
  T.eq(r["leaks_test global"], nil, "held by a global")
  T.eq(r["leaks_test field"], nil, "held by a table a local holds")
  T.eq(r["leaks_test held by a sleeper"], nil, "held by a coroutine that will wake")
  kept:send(1)
  kept_in_global:send(1)
  T.eq(holder.ch:recv(), 1)
end)

T.test("select: reported only when every channel it waits on is unreachable", function()
  local kept = orrery.chan(0, "leaks_test select kept")
  local ids = {}
  local function start()
    local x, y = orrery.chan(0, "leaks_test select x"), orrery.chan(0, "leaks_test select y")
    ids.both = go_root(function() orrery.select { x:recv_case(), y:recv_case() } end)
    local z = orrery.chan(0, "leaks_test select z")
    ids.one = go_root(function() orrery.select { z:recv_case(), kept:recv_case() } end)
  end
  setup(start)
  T.settle { ids.both, ids.one }
  local r = reported()
  T.eq(r["leaks_test select x"], ids.both)
  T.eq(r["leaks_test select z"], nil, "one of its channels is still held")
  kept:send(1)
end)

T.test("waits that a timeout or a context that can be cancelled will end are not leaks", function()
  local ids = {}
  local ctx, cancel = orrery.context.with_cancel(root)
  local function start()
    ids.timeout = go_root(function() orrery.chan(0, "leaks_test timeout"):recv(3600) end)
    orrery.with_context(ctx, function()
      ids.ctx = orrery.go(function() orrery.chan(0, "leaks_test ctx held"):recv() end)
    end)
    local lost = orrery.context.with_cancel(root) -- its cancel is dropped
    orrery.with_context(lost, function()
      ids.lost = orrery.go(function() orrery.chan(0, "leaks_test ctx dropped"):recv() end)
    end)
    -- A context with a deadline: its timer holds it.
    local dl = orrery.context.with_timeout(3600, root)
    orrery.with_context(dl, function()
      ids.dl = orrery.go(function() orrery.chan(0, "leaks_test deadline"):recv() end)
    end)
  end
  setup(start)
  T.settle { ids.timeout, ids.ctx, ids.lost, ids.dl }
  local r = reported()
  T.eq(r["leaks_test timeout"], nil)
  T.eq(r["leaks_test ctx held"], nil, "its context's cancel is held")
  T.eq(r["leaks_test deadline"], nil)
  T.eq(r["leaks_test ctx dropped"], ids.lost)
  cancel()
end)

-- Regression: a coroutine that has not started yet holds its function and
-- arguments where the debug library cannot see them; find() lets it start
-- first instead of reporting the coroutine that waits for it.
T.test("a coroutine that has not started yet keeps the channel it was given", function()
  local done = orrery.chan(1)
  local late
  go_root(function()
    local ch = orrery.chan(0, "leaks_test for a late sender")
    T.settle { go_root(function() ch:recv() end) }
    -- This coroutine wakes first; the late sender starts after it.
    done:send(true)
    late = go_root(function(c) orrery.sleep(3600); c:send(1) end, ch)
  end)
  done:recv()
  local started = false
  for _, c in ipairs(orrery.coroutines()) do
    if c.id == late then started = c.traceback ~= nil end
  end
  T.eq(started, false, "the case sets up what it means to")
  T.eq(reported()["leaks_test for a late sender"], nil)
end)

T.test("console.leaks, dump{leaked=true} and /debug/leaks", function()
  local id
  setup(function()
    local ch = orrery.chan(0, "leaks_test reported")
    id = go_root(function() ch:recv() end)
  end)
  T.settle { id }
  local mine
  for _, g in ipairs(console.leaks()) do
    if g.wait:find("leaks_test reported", 1, true) then mine = g end
  end
  T.eq(mine and mine.ids, { id })
  T.match(mine.site, "leaks_test%.lua:%d+$")
  T.match(console.dump { leaked = true, wait = "leaks_test reported" },
    "^coroutine " .. id .. " %[chan receive on chan #%d+ \"leaks_test reported\"")
  T.eq(#console.coroutines { leaked = true, wait = "leaks_test reported" }, 1)

  local srv = assert(admin.listen { port = 0 })
  local res
  orrery.go(function() res = H.get(srv, "/debug/leaks?older=0") end)
  while not res do orrery.yield() end
  T.eq(res.status, 200)
  local body = json.decode(res.body)
  local found
  for _, g in ipairs(body.unreachable) do
    if g.wait:find("leaks_test reported", 1, true) then found = g end
  end
  T.eq(found and found.ids, { id })
  T.ok(#body.waits > 0, "and the long waits")
  res = nil
  orrery.go(function() res = H.get(srv, "/debug/leaks?format=text") end)
  while not res do orrery.yield() end
  T.match(res.body, "%[chan receive on chan \"leaks_test reported\"")
  srv:close()
end)
