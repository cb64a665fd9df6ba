-- SPDX-License-Identifier: MIT
-- orrery.sched -- coroutine glue: per-slot tables, parking, contexts' hooks.
--
-- C (host/sched.c) owns the run queue and resumes coroutines; this module
-- keeps the Lua half of each coroutine, indexed by its slot: the value a
-- peer hands it (ibox), the value it offers while parked in a send (obox),
-- its context (ctxs, nil meaning the root context) and where it was
-- created (sites). C clears all four when a coroutine dies.
local core = require "orrery.core"
local C = require "orrery.ffi"
local ffi = require "ffi"

local yield = coroutine.yield

local M = {}

-- These tables are kept dense (false, never nil, in unused slots) so that
-- every slot lives in the array part: a slot in the hash part costs a
-- chained lookup on every channel operation and a rehash now and then.
local tnew = require "table.new"
local INITIAL = 1024
local ibox, obox, ctxs, sites = tnew(INITIAL, 0), tnew(INITIAL, 0), tnew(INITIAL, 0), tnew(INITIAL, 0)
local tables = { ibox, obox, ctxs, sites }
local tables_cap = 0
local function grow(upto)
  for _, t in ipairs(tables) do
    for i = tables_cap + 1, upto do
      if t[i] == nil then t[i] = false end
    end
  end
  tables_cap = upto
end
grow(INITIAL)
core.set_tables(tables)
M.ibox, M.obox, M.ctxs, M.sites = ibox, obox, ctxs, sites

-- The parking protocol's statuses and wake codes (host/ffi_cdef.h).
local DONE, DECLINED, PARKED = C.ORRERY_DONE, C.ORRERY_DECLINED, C.ORRERY_PARKED
local WAKE_TIMEOUT, WAKE_CANCELED, WAKE_DEADLINE =
  C.ORRERY_WAKE_TIMEOUT, C.ORRERY_WAKE_CANCELED, C.ORRERY_WAKE_DEADLINE
M.DONE, M.DECLINED, M.PARKED = DONE, DECLINED, PARKED
M.WAKE_TIMEOUT, M.WAKE_CANCELED, M.WAKE_DEADLINE =
  WAKE_TIMEOUT, WAKE_CANCELED, WAKE_DEADLINE
local co_token, co_wake, now = C.orrery_ffi_co_token, C.orrery_ffi_wake, C.orrery_ffi_now

-- The root context; contexts proper live in orrery.context, which fills in
-- its methods. It is cancelled by SIGINT/SIGTERM.
-- e (the error) is false rather than absent so that the check in wait()
-- is one hit in the table instead of a miss and a metatable lookup.
local root = { e = false, parked = false, children = setmetatable({}, { __mode = "k" }) }
M.root = root

local function err_code(err)
  return err == "timeout" and WAKE_DEADLINE or WAKE_CANCELED
end
M.err_code = err_code

-- The error a wait that ended from outside returns.
local function wake_err(code)
  if code == WAKE_TIMEOUT or code == WAKE_DEADLINE then return "timeout" end
  return "canceled"
end
M.wake_err = wake_err

-- park(slot [, xctx]) -> wake code. The one way a coroutine waits: a
-- primitive answered ORRERY_PARKED (C has linked the coroutine wherever
-- it waits and registered the cleanup), and this yields to the scheduler
-- until something wakes it. A cancelled context wakes it at once;
-- otherwise the wait is registered with the coroutine's context, and with
-- xctx when the operation was given one explicitly, under the wait's
-- token, so that cancelling either wakes this wait and never a later one.
local function park(slot, xctx)
  local ctx = ctxs[slot]
  -- The common case: bound to the root context, no context of its own.
  if not ctx and not xctx then return yield() end
  ctx = ctx or root
  local tok = co_token(slot)
  local err = ctx.e or (xctx and xctx.e)
  if err then
    co_wake(slot, tok, err_code(err))
    return yield()
  end
  local p, xp = ctx.parked, xctx and xctx.parked
  if p then p[slot] = tok end
  if xp then xp[slot] = tok end
  local code = yield()
  if p then p[slot] = nil end
  if xp then xp[slot] = nil end
  return code
end
M.park = park

-- The time left until deadline, as a primitive's timeout (-1: none).
local function left(deadline)
  if not deadline then return -1 end
  local l = deadline - now()
  return l > 0 and l or 0
end
M.left = left

-- await(fn, obj, timeout, xctx, a, b) -> fn's results: the loop around a
-- C API primitive. fn(obj, timeout, a, b) returns its results when done,
-- or ORRERY_PARKED, slot when it parked the coroutine; after the wake it
-- is called again, with the time left, and takes up where it was. A wait
-- that ends by its timeout or a cancellation returns nil, "timeout" |
-- "canceled" and leaves the primitive as its cleanup left it.
function M.await(fn, obj, timeout, xctx, a, b)
  timeout = timeout or -1
  local deadline = timeout >= 0 and now() + timeout or nil
  local r, e = fn(obj, timeout, a, b)
  while r == PARKED do
    local code = park(e, xctx)
    if code < 0 then return nil, wake_err(code) end
    r, e = fn(obj, left(deadline), a, b)
  end
  return r, e
end

-- await_code(fn, obj, a) -> fn's results: for primitives that decide
-- themselves what a wake means (an HTTP body read answers its own
-- timeout): fn(obj, a, code) is called again with every wake code.
function M.await_code(fn, obj, a)
  local r, e = fn(obj, a, 0)
  while r == PARKED do
    r, e = fn(obj, a, park(e))
  end
  return r, e
end

-- Splits an optional wait argument into (timeout, ctx); fname names the
-- function for the error message.
function M.wait_opt(fname, argn, opt)
  if opt == nil then return -1, nil end
  local t = type(opt)
  if t == "number" then
    if opt ~= opt or opt < 0 then
      error(("%s: bad argument #%d (timeout must be a non-negative number)")
        :format(fname, argn), 3)
    end
    return opt, nil
  end
  if t == "table" and opt.parked ~= nil then return -1, opt end
  error(("%s: bad argument #%d (timeout in seconds or context expected, got %s)")
    :format(fname, argn, t), 3)
end

function M.current_ctx()
  return ctxs[C.orrery_ffi_co_slot()] or root
end

-- Starts fn(...) in a new coroutine bound to ctx (nil: the caller's).
function M.spawn(ctx, fn, ...)
  local slot, id = core.spawn(fn, ...)
  if slot > tables_cap then grow(slot * 2) end
  if ctx == nil then ctx = ctxs[C.orrery_ffi_co_slot()] end
  if ctx and ctx ~= root then
    ctxs[slot] = ctx
    C.orrery_ffi_co_bind(slot, 0)
  end
  return id
end

local function pack(...) return { n = select("#", ...), ... } end
M.pack = pack

-- bind(slot, ctx) -> the old binding: binds the coroutine in slot to ctx
-- (nil or false: the root context); hand the result back to bind to
-- restore it.
local function bind(slot, ctx)
  local old = ctxs[slot]
  if ctx == root then ctx = false end
  ctxs[slot] = ctx or false
  C.orrery_ffi_co_bind(slot, ctx and 0 or 1)
  return old
end
M.bind = bind

-- Runs fn with the current coroutine bound to ctx, then restores the old
-- binding, also when fn raises.
function M.with_ctx(ctx, fn, ...)
  local slot = C.orrery_ffi_co_slot()
  if slot == 0 then error("orrery: not inside a coroutine", 3) end
  local old = bind(slot, ctx)
  local r = pack(pcall(fn, ...))
  bind(slot, old)
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

-- Lua timers: C keeps the deadline in its heap and hands the id to the
-- dispatcher when it passes. A timer is anchored in `armed` while armed.
local armed, free_ids, next_id = {}, {}, 0

local function release_id(id)
  free_ids[#free_ids + 1] = id
end

function M.new_timer(cb)
  local id
  local n = #free_ids
  if n > 0 then
    id = free_ids[n]
    free_ids[n] = nil
  else
    next_id = next_id + 1
    id = next_id
  end
  local t = C.orrery_ffi_timer_new(id)
  ffi.gc(t, function(p)
    C.orrery_ffi_timer_free(p)
    release_id(id)
  end)
  return { t = t, id = id, cb = cb }
end

function M.timer_start(tm, secs)
  armed[tm.id] = tm
  C.orrery_ffi_timer_start(tm.t, secs)
end

function M.timer_stop(tm)
  armed[tm.id] = nil
  return C.orrery_ffi_timer_stop(tm.t) ~= 0
end

-- Plain Lua coroutines (generators, iterators) keep working inside orrery
-- coroutines; only blocking orrery operations inside them are refused
-- (see orrery_ffi_foreign_enter), since their yield would reach the
-- plain coroutine's resumer instead of the scheduler.
do
  local co_create, co_resume = coroutine.create, coroutine.resume
  local enter, leave = C.orrery_ffi_foreign_enter, C.orrery_ffi_foreign_leave
  local function left(saved, ...)
    leave(saved)
    return ...
  end
  local function resume(co, ...)
    return left(enter(), co_resume(co, ...))
  end
  local function unwrap(ok, ...)
    if not ok then error((...), 0) end
    return ...
  end
  coroutine.resume = resume
  coroutine.wrap = function(f)
    local co = co_create(f)
    return function(...) return unwrap(resume(co, ...)) end
  end
end

local handlers = {}
M.handlers = handlers

-- on_hup(fn): fn(signum) runs in its own coroutine (under the root
-- context) on every SIGHUP, in the order the functions were added; the
-- first call makes SIGHUP a reload signal instead of ending the process
-- (loop_watch_hup). Returns false when another worker of the process
-- holds the signals.
local hup_fns = {}
function M.on_hup(fn)
  hup_fns[#hup_fns + 1] = fn
  return core.watch_hup()
end

handlers.hup = function(signum)
  for _, fn in ipairs(hup_fns) do M.spawn(root, fn, signum) end
end

core.set_dispatch(function(kind, arg)
  if kind == "timer" then
    local tm = armed[arg]
    if tm then
      armed[arg] = nil
      tm.cb(tm)
    end
  else
    local h = handlers[kind]
    if h then h(arg) end
  end
end)

return M
