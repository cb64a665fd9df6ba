-- misuse_test.lua -- every misuse of the runtime's public functions raises
-- an error that starts with the caller's file:line and names the function
-- (docs/errors.md). Each case is one line, so the line it must name is the
-- line where its function is defined.
local T = require "orrery.test"
local orrery = require "orrery"

local ctx = orrery.context
local bg = ctx.background()

local function closed_chan()
  local c = orrery.chan(1)
  c:close()
  return c
end

local function stopped(t)
  t:stop()
  return t
end

local cases = {
  -- orrery
  { "orrery.go", function() orrery.go() end },
  { "orrery.with_timeout", function() orrery.with_timeout(1) end },
  { "orrery.with_timeout", function() orrery.with_timeout("1", print) end },
  { "orrery.with_timeout", function() orrery.with_timeout(0 / 0, print) end },
  { "orrery.with_deadline", function() orrery.with_deadline(orrery.now() + 1) end },
  { "orrery.with_deadline", function() orrery.with_deadline(nil, print) end },
  { "orrery.with_cancel", function() orrery.with_cancel() end },
  { "orrery.with_context", function() orrery.with_context(1, print) end },
  { "orrery.with_context", function() orrery.with_context(bg) end },
  { "orrery.exit", function() orrery.exit("x") end },
  { "orrery.on_shutdown", function() orrery.on_shutdown(1) end },
  { "orrery.set_grace", function() orrery.set_grace("x") end },
  { "orrery.set_grace", function() orrery.set_grace(-1) end },
  -- channels and select
  { "orrery.chan", function() orrery.chan(-1) end },
  { "orrery.chan", function() orrery.chan(0, 1) end },
  { "orrery.chan:send", function() closed_chan():send(1) end },
  { "orrery.chan:try_send", function() closed_chan():try_send(1) end },
  { "orrery.chan:close", function() closed_chan():close() end },
  { "orrery.chan:send", function() orrery.chan(1).send() end },
  { "orrery.chan:recv", function() orrery.chan(1):recv("x") end },
  { "orrery.select", function() orrery.select(1) end },
  { "orrery.select", function() orrery.select({ 1 }) end },
  { "orrery.select", function() orrery.select({ timeout = "x" }) end },
  -- timers
  { "orrery.sleep", function() orrery.sleep("x") end },
  { "orrery.after", function() orrery.after("x") end },
  { "orrery.timer", function() orrery.timer("x") end },
  { "orrery.timer", function() orrery.timer(1, 1) end },
  { "orrery.timer:reset", function() stopped(orrery.timer(1)):reset("x") end },
  { "orrery.timer:stop", function() stopped(orrery.timer(1)).stop() end },
  { "orrery.ticker", function() orrery.ticker(0) end },
  { "orrery.ticker", function() orrery.ticker("x") end },
  { "orrery.ticker:reset", function() stopped(orrery.ticker(1)):reset(0) end },
  { "orrery.ticker:stop", function() stopped(orrery.ticker(1)).stop() end },
  -- synchronisation
  { "orrery.waitgroup:add", function() orrery.waitgroup():add("x") end },
  { "orrery.waitgroup:done", function() orrery.waitgroup():done() end },
  { "orrery.waitgroup:add", function() orrery.waitgroup().add() end },
  { "orrery.waitgroup:wait", function() local w = orrery.waitgroup(); w:add(); w:wait("x") end },
  { "orrery.waitgroup:wait", function() orrery.waitgroup().wait() end },
  { "orrery.waitgroup:count", function() orrery.waitgroup().count() end },
  { "orrery.mutex:lock", function() orrery.mutex():lock("x") end },
  { "orrery.mutex:lock", function() orrery.mutex().lock() end },
  { "orrery.mutex:try_lock", function() orrery.mutex().try_lock() end },
  { "orrery.mutex:unlock", function() orrery.mutex():unlock() end },
  { "orrery.mutex:unlock", function() orrery.mutex().unlock() end },
  { "orrery.semaphore", function() orrery.semaphore(0) end },
  { "orrery.semaphore:acquire", function() orrery.semaphore(1):acquire("x") end },
  { "orrery.semaphore:acquire", function() orrery.semaphore(1).acquire() end },
  { "orrery.semaphore:try_acquire", function() orrery.semaphore(1).try_acquire() end },
  { "orrery.semaphore:available", function() orrery.semaphore(1).available() end },
  { "orrery.semaphore:release", function() orrery.semaphore(1):release() end },
  { "orrery.group", function() orrery.group("x") end },
  { "orrery.group:go", function() orrery.group():go(1) end },
  { "orrery.group:go", function() orrery.group().go() end },
  { "orrery.group:wait", function() orrery.group().wait() end },
  -- contexts
  { "orrery.context.with_cancel", function() ctx.with_cancel(1) end },
  { "orrery.context.with_timeout", function() ctx.with_timeout("x") end },
  { "orrery.context.with_timeout", function() ctx.with_timeout(1, 1) end },
  { "orrery.context.with_deadline", function() ctx.with_deadline("x") end },
  { "orrery.context.with_value", function() ctx.with_value(nil, 1) end },
  { "orrery.context.with_value", function() ctx.with_value(1, 1, 1) end },
  { "orrery.context.without_cancel", function() ctx.without_cancel(1) end },
  { "ctx:err", function() bg.err() end },
  { "ctx:deadline", function() bg.deadline() end },
  { "ctx:cancel", function() bg.cancel() end },
  { "ctx:value", function() bg.value() end },
  { "ctx:done", function() bg.done() end },
}

T.test("every misuse error starts with the caller's file:line and names the function", function()
  for _, c in ipairs(cases) do
    local fname, fn = c[1], c[2]
    local line = debug.getinfo(fn, "S").linedefined
    local ok, err = pcall(fn)
    T.eq(ok, false, fname .. " raised")
    err = tostring(err)
    local where = "misuse_test.lua:" .. line .. ": "
    T.ok(err:find(where, 1, true), fname .. ": '" .. err .. "' starts with " .. where)
    T.ok(err:find(fname .. ":", 1, true), fname .. ": '" .. err .. "' names the function")
  end
end)

-- The regression: the helper behind with_timeout raised at a level that
-- a tail call had made one frame too deep, and the message had no place.
T.test("orrery.with_timeout(1) without a function names the caller's line", function()
  local ok, err = pcall(function() orrery.with_timeout(1) end)
  T.eq(ok, false)
  T.match(err, "^[^\n]*misuse_test%.lua:%d+: orrery%.with_timeout: bad argument #2 %(function expected, got nil%)$")
end)

-- Outside the scheduler's coroutines (inside coroutine.wrap) the scoped
-- forms refuse with the caller's line too, instead of a line in orrery.lua.
T.test("with_timeout and with_context inside coroutine.wrap name the caller's line", function()
  for _, f in ipairs({
    function() orrery.with_timeout(1, print) end,
    function() orrery.with_context(bg, print) end,
  }) do
    local ok, err = pcall(coroutine.wrap(f))
    T.eq(ok, false)
    T.match(err, "misuse_test%.lua:%d+: orrery%.with_[a-z]+: not inside a coroutine")
  end
end)
