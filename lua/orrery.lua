-- SPDX-License-Identifier: MIT
-- orrery -- the public runtime API: coroutines, channels, select, timers,
-- contexts and synchronisation (see docs/runtime.md).
local core = require "orrery.core"
local C = require "orrery.ffi"
local sched = require "orrery.sched"
local chan = require "orrery.chan"
local time = require "orrery.time"
local sync = require "orrery.sync"
local context = require "orrery.context"

local M = {
  version = core.version,
  chan = chan.new,
  select = chan.select,
  sleep = time.sleep,
  after = time.after,
  timer = time.timer,
  ticker = time.ticker,
  waitgroup = sync.waitgroup,
  mutex = sync.mutex,
  semaphore = sync.semaphore,
  group = sync.group,
  context = context,
}

-- go(fn, ...) -> id: runs fn(...) in a new coroutine under the caller's
-- context. An error escaping fn is a panic: printed with its traceback,
-- and the process exits with status 2 (use orrery.group to collect it).
function M.go(fn, ...)
  if type(fn) ~= "function" then
    error("orrery.go: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  return sched.spawn(nil, fn, ...)
end

function M.yield()
  if C.orrery_ffi_co_slot() == 0 then error("orrery.yield: not inside a coroutine (or inside coroutine.wrap/resume)", 2) end
  coroutine.yield()
end

function M.now() return C.orrery_ffi_now() end

function M.id()
  return tonumber(C.orrery_ffi_co_id())
end

local function scoped(fname, mk, arg, fn, ...)
  if type(fn) ~= "function" then
    error(("orrery.%s: bad argument #2 (function expected, got %s)"):format(fname, type(fn)), 3)
  end
  local ctx, cancel = mk(arg)
  local r = sched.pack(pcall(sched.with_ctx, ctx, fn, ...))
  cancel()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

-- with_timeout(s, fn, ...): runs fn under a child context that expires
-- after s seconds; every wait inside fn (and in coroutines it starts) ends
-- with nil, "timeout" at the deadline. The context is cancelled when fn
-- returns. Returns fn's results.
function M.with_timeout(s, fn, ...)
  if type(s) ~= "number" then
    error("orrery.with_timeout: bad argument #1 (seconds expected, got " .. type(s) .. ")", 2)
  end
  return scoped("with_timeout", context.with_timeout, s, fn, ...)
end

function M.with_deadline(t, fn, ...)
  if type(t) ~= "number" then
    error("orrery.with_deadline: bad argument #1 (deadline expected, got " .. type(t) .. ")", 2)
  end
  return scoped("with_deadline", context.with_deadline, t, fn, ...)
end

function M.with_cancel(fn, ...)
  return scoped("with_cancel", function() return context.with_cancel() end, nil, fn, ...)
end

-- with_context(ctx, fn, ...): runs fn with the current coroutine bound to ctx.
function M.with_context(ctx, fn, ...)
  if not context.is_ctx(ctx) then
    error("orrery.with_context: bad argument #1 (context expected, got " .. type(ctx) .. ")", 2)
  end
  return sched.with_ctx(ctx, fn, ...)
end

-- coroutines() -> list of { id, state, wait, chan, cases, since, until,
-- site, traceback, main }, one per live coroutine.
function M.coroutines()
  local list = core.coroutines()
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

-- Drops the runtime's own frames (the yield inside a wait) from a
-- traceback so that the dump shows where user code is blocked.
local function tidy(tb)
  if not tb then return "  (not started)" end
  local out = {}
  for line in tb:gmatch("[^\n]+") do
    if not line:find("^stack traceback") and not line:find("[orrery]", 1, true)
      and not line:find("[C]: in function 'yield'", 1, true) then
      out[#out + 1] = "  " .. line:gsub("^%s+", "")
    end
  end
  return table.concat(out, "\n")
end

-- dump() -> text listing every coroutine, as printed on deadlock/SIGQUIT.
function M.dump()
  local now = C.orrery_ffi_now()
  local out = {}
  for _, c in ipairs(M.coroutines()) do
    local what = c.state
    if c.wait then
      what = c.wait
      if c.chan then what = what .. " on chan #" .. string.format("%d", c.chan) end
      if c.cases then what = what .. " [" .. table.concat(c.cases, ", ") .. "]" end
      what = what .. string.format(", %.3fs", now - c.since)
      if c.until_ or c["until"] then
        what = what .. string.format(", until +%.3fs", c["until"] - now)
      end
    end
    out[#out + 1] = string.format("coroutine %d%s [%s]:\ncreated at %s\n%s\n",
      c.id, c.main and " (main)" or "", what, c.main and "startup" or c.site or "?",
      tidy(c.traceback))
  end
  return table.concat(out, "\n")
end

function M.stats() return core.stats() end

-- memory() -> { used = bytes, limit = bytes | false, failures = n }: the
-- Lua heap's live bytes, its limit and how many allocations it refused.
function M.memory() return core.memory() end

-- set_memory_limit(bytes | nil): caps the Lua heap; an allocation that
-- would pass the cap raises "not enough memory" in the coroutine that
-- asked for it. nil removes the cap. Also set by ORRERY_MEMORY_LIMIT.
function M.set_memory_limit(bytes)
  if bytes ~= nil and not (type(bytes) == "number" and bytes >= 0) then
    error("orrery.set_memory_limit: bad argument #1 (bytes or nil expected)", 2)
  end
  core.memory(bytes or 0)
end

-- exit(code): ends the process once the calling coroutine yields.
function M.exit(code)
  if code ~= nil and type(code) ~= "number" then
    error("orrery.exit: bad argument #1 (number expected)", 2)
  end
  core.exit(code or 0)
  if C.orrery_ffi_co_slot() ~= 0 then coroutine.yield() end
end

-- on_shutdown(fn): fn runs (in its own coroutine) when SIGINT or SIGTERM
-- starts the graceful shutdown, after the root context is cancelled.
local on_shutdown = {}
function M.on_shutdown(fn)
  if type(fn) ~= "function" then
    error("orrery.on_shutdown: bad argument #1 (function expected)", 2)
  end
  on_shutdown[#on_shutdown + 1] = fn
end

-- set_grace(s): how long SIGINT/SIGTERM wait for coroutines (default 5).
function M.set_grace(s) core.set_grace(s) end

-- The handlers are queued before the cancellation wakes anyone, so they
-- run (after the root is cancelled) ahead of the coroutines it wakes: a
-- main coroutine that returns as soon as it is woken would otherwise end
-- the process before any handler had started.
sched.handlers.signal = function(signum)
  for _, fn in ipairs(on_shutdown) do sched.spawn(context.root, fn, signum) end
  context.cancel(context.root, "canceled")
end

sched.handlers.dump = function()
  io.stderr:write(M.dump(), "\n")
  io.stderr:flush()
end

return M
