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
local check = require "orrery.check"

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

-- pid() -> the process id (io.popen's /proc/self is the shell's, and
-- reading /proc/self/stat for it was repeated across the modules).
do
  local ffi = require "ffi"
  pcall(ffi.cdef, "int getpid(void);")
  local libc = ffi.C
  function M.pid() return tonumber(libc.getpid()) end
end

-- Misuse errors are raised at level 2 from the public function itself:
-- a helper that raised for it would have to count frames, and a tail call
-- (`return helper(...)`) removes the public function's frame, so that the
-- level lands one frame too far and the message loses the caller's line.
local function scope_args(fname, argn, fn)
  if type(fn) ~= "function" then
    error(("orrery.%s: bad argument #%d (function expected, got %s)"):format(fname, argn, type(fn)), 3)
  end
  if C.orrery_ffi_co_slot() == 0 then
    error(("orrery.%s: not inside a coroutine (or inside coroutine.wrap/resume)"):format(fname), 3)
  end
end

local function scoped(ctx, cancel, fn, ...)
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
  if type(s) ~= "number" or s ~= s then
    error("orrery.with_timeout: bad argument #1 (seconds expected, got " .. check.show(s) .. ")", 2)
  end
  scope_args("with_timeout", 2, fn)
  local ctx, cancel = context.with_timeout(s)
  return scoped(ctx, cancel, fn, ...)
end

function M.with_deadline(t, fn, ...)
  if type(t) ~= "number" or t ~= t then
    error("orrery.with_deadline: bad argument #1 (deadline expected, got " .. check.show(t) .. ")", 2)
  end
  scope_args("with_deadline", 2, fn)
  local ctx, cancel = context.with_deadline(t)
  return scoped(ctx, cancel, fn, ...)
end

function M.with_cancel(fn, ...)
  scope_args("with_cancel", 1, fn)
  local ctx, cancel = context.with_cancel()
  return scoped(ctx, cancel, fn, ...)
end

-- with_context(ctx, fn, ...): runs fn with the current coroutine bound to ctx.
function M.with_context(ctx, fn, ...)
  if not context.is_ctx(ctx) then
    error("orrery.with_context: bad argument #1 (context expected, got " .. type(ctx) .. ")", 2)
  end
  scope_args("with_context", 2, fn)
  return sched.with_ctx(ctx, fn, ...)
end

-- What a wait on a channel that implements another primitive means, by
-- role and by the operation C reports. Another operation on such a channel
-- (none of the primitives parks one) is shown as a plain channel wait.
local role_waits = {
  mutex = { ["chan send"] = "mutex lock" },
  semaphore = { ["chan send"] = "semaphore acquire" },
  waitgroup = { ["chan receive"] = "waitgroup wait" },
  errgroup = { ["chan receive"] = "errgroup wait" },
  timer = { ["chan receive"] = "timer receive" },
  ticker = { ["chan receive"] = "ticker receive" },
  ["ctx.done"] = { ["chan receive"] = "ctx.done receive" },
}

-- The channel with this id as its creator knows it: '#3 "jobs"' for a
-- channel the user named, '#5 mutex' for one with a role, else '#7'.
local function chan_label(id)
  local ch = chan.by_id[id]
  local s = string.format("#%d", id)
  if ch and ch.name then return s .. " " .. string.format("%q", ch.name):gsub("\\\n", "\\n") end
  if ch and ch.role then return s .. " " .. ch.role end
  return s
end

-- coroutines() -> list of { id, state, wait, chan, name, role, cases,
-- since, until, site, traceback, main }, one per live coroutine. C knows
-- channels only by id; the names and roles come from orrery.chan's
-- registry of live channels.
function M.coroutines()
  local list = core.coroutines()
  table.sort(list, function(a, b) return a.id < b.id end)
  local by_id = chan.by_id
  for _, c in ipairs(list) do
    local ch = c.chan and by_id[c.chan]
    if ch then
      c.name, c.role = ch.name, ch.role
      local w = ch.role and role_waits[ch.role]
      c.wait = w and w[c.wait] or c.wait
    end
    local cases = c.cases
    if cases then
      for i = 1, #cases do
        local op, id = cases[i]:match("^(%a+) #(%d+)$")
        if op then cases[i] = op .. " " .. chan_label(tonumber(id)) end
      end
    end
  end
  return list
end

-- Drops the runtime's own frames from a traceback so that the dump shows
-- where user code is blocked: the runtime's Lua frames, and the C frames
-- above the first frame of user code, which are the yield inside a wait
-- (named 'yield' or, after a tail call, after the function that made it).
local function tidy(tb)
  if not tb then return "  (not started)" end
  local out = {}
  for line in tb:gmatch("[^\n]+") do
    line = line:gsub("^%s+", "")
    if not line:find("^stack traceback") and not line:find("[orrery]", 1, true)
      and not (#out == 0 and line:find("^%[C%]:")) then
      out[#out + 1] = "  " .. line
    end
  end
  return table.concat(out, "\n")
end

-- describe(c [, now]) -> what, traceback: how the dump shows an entry of
-- coroutines(): "chan receive on chan #3 "jobs", 1.250s" and its tidied
-- traceback (without the runtime's frames). Used by orrery.console too.
function M.describe(c, now)
  now = now or C.orrery_ffi_now()
  local what = c.state
  if c.wait then
    what = c.wait
    if c.chan then
      -- "chan receive on chan #3 "jobs"", but "mutex lock (chan #5)".
      if c.wait == "chan receive" or c.wait == "chan send" then
        what = what .. " on chan " .. chan_label(c.chan)
      else
        what = what .. string.format(" (chan #%d)", c.chan)
      end
    end
    if c.cases then what = what .. " [" .. table.concat(c.cases, ", ") .. "]" end
    what = what .. string.format(", %.3fs", now - c.since)
    if c["until"] then
      what = what .. string.format(", until +%.3fs", c["until"] - now)
    end
  end
  return what, tidy(c.traceback)
end

-- dump() -> text listing every coroutine, as printed on deadlock/SIGQUIT.
function M.dump()
  local now = C.orrery_ffi_now()
  local out = {}
  for _, c in ipairs(M.coroutines()) do
    local what, tb = M.describe(c, now)
    out[#out + 1] = string.format("coroutine %d%s [%s]:\ncreated at %s\n%s\n",
      c.id, c.main and " (main)" or "", what, c.main and "startup" or c.site or "?", tb)
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

-- on_hup(fn): fn(signum) runs (in its own coroutine) on every SIGHUP,
-- after the handlers added before it. Once a function (or a TLS
-- listener, which reloads its certificate) asks for SIGHUP, the signal no
-- longer ends the process. Returns false when another worker of the
-- process holds the signals (fn is kept, but will not be called).
function M.on_hup(fn)
  if type(fn) ~= "function" then
    error("orrery.on_hup: bad argument #1 (function expected)", 2)
  end
  return sched.on_hup(fn)
end

-- watchdog{ timeout = s, action = "report" | "interrupt" | "exit" } or
-- watchdog(false): when the loop has not completed a turn for timeout
-- seconds (one coroutine kept the thread busy), a thread of its own
-- reports the running coroutine on stderr and, as asked, interrupts it
-- with an error or ends the process with status 70. Off by default; also
-- ORRERY_WATCHDOG=SECONDS[:action]. See docs/runtime.md.
function M.watchdog(opts)
  if opts == false then
    core.watchdog(0, "report")
    return
  end
  if type(opts) ~= "table" then
    error("orrery.watchdog: bad argument #1 (options table or false expected, got " .. type(opts) .. ")", 2)
  end
  for k in pairs(opts) do
    if k ~= "timeout" and k ~= "action" then
      error(("orrery.watchdog: unknown option %s"):format(tostring(k)), 2)
    end
  end
  local t, action = opts.timeout, opts.action or "report"
  if type(t) ~= "number" or not (t > 0) then
    error("orrery.watchdog: option timeout must be a positive number of seconds", 2)
  end
  if action ~= "report" and action ~= "interrupt" and action ~= "exit" then
    error("orrery.watchdog: option action must be \"report\", \"interrupt\" or \"exit\"", 2)
  end
  core.watchdog(t, action)
end

-- set_grace(s): how long SIGINT/SIGTERM wait for coroutines (default 5).
function M.set_grace(s)
  if type(s) ~= "number" or s ~= s or s < 0 then
    error("orrery.set_grace: bad argument #1 (non-negative seconds expected, got " .. check.show(s) .. ")", 2)
  end
  core.set_grace(s)
end

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
