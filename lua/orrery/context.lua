-- SPDX-License-Identifier: MIT
-- orrery.context -- cancellation scopes with deadlines and values.
--
-- A context is a node in a tree rooted at the process's root context.
-- Cancelling a node cancels its subtree and wakes every coroutine parked
-- under it (host/sched.c does the waking; orrery.sched registers parked
-- coroutines with their context). Coroutines started with orrery.go
-- inherit the caller's context.
local C = require "orrery.ffi"
local sched = require "orrery.sched"
local check = require "orrery.check"

local root = sched.root
local Ctx = {}
Ctx.__index = Ctx
setmetatable(root, Ctx)

local M = { Ctx = Ctx, root = root }

local weak = { __mode = "k" }
local chan -- orrery.chan, loaded lazily (it does not depend on us)

local function is_ctx(v)
  return type(v) == "table" and getmetatable(v) == Ctx
end
M.is_ctx = is_ctx

-- The root context is special: SIGINT/SIGTERM "cancel" it to start the
-- graceful shutdown. That wakes every operation parked at that moment with
-- "canceled", closes root:done() and makes root:err() return "canceled",
-- and cancels every context derived from it so far; but waits that start
-- afterwards in coroutines bound to the root still block normally, and
-- contexts made from the root afterwards start uncancelled, so that the
-- grace period can be used to finish work (flush, answer, clean up).
--
-- done() is closed before the parked operations are woken, so that a
-- coroutine of this context parked in a select on ctx:done() wakes with
-- that case chosen: the same result it gets when the context was already
-- cancelled before the select.
local function cancel(c, err)
  if c == root then
    if root.shutdown then return end
    root.shutdown = err
    if c.done_ch then c.done_ch:close() end
    C.orrery_ffi_wake_all(sched.err_code(err))
  else
    if c.e then return end
    c.e = err
    if c.timer then sched.timer_stop(c.timer) end
    if c.parent then c.parent.children[c] = nil end
    if c.done_ch then c.done_ch:close() end
    local code = sched.err_code(err)
    for slot, tok in pairs(c.parked) do C.orrery_ffi_wake(slot, tok, code) end
  end
  for child in pairs(c.children) do cancel(child, err) end
end
M.cancel = cancel

local function parent_arg(fname, parent, argn)
  if parent == nil then return sched.current_ctx() end
  if not is_ctx(parent) then
    error(("orrery.context.%s: bad argument #%d (context expected, got %s)")
      :format(fname, argn, type(parent)), 3)
  end
  return parent
end

-- Arms a context's deadline timer. A function of its own: a closure made
-- inside child() kept child(), and every request path that makes a
-- context, from being JIT-compiled (UCLO is NYI).
local function arm_deadline(c, left)
  c.timer = sched.new_timer(function() cancel(c, "timeout") end)
  sched.timer_start(c.timer, left)
end

local function child(parent, deadline)
  local pd = parent.dl
  if pd and (not deadline or pd < deadline) then deadline = pd end
  local c = setmetatable({ e = false, parent = parent, parked = {}, dl = deadline,
    children = setmetatable({}, weak), values = parent.values }, Ctx)
  if parent.e then
    c.e = parent.e
  else
    parent.children[c] = true
    if deadline and deadline ~= pd then
      local left = deadline - C.orrery_ffi_now()
      if left <= 0 then
        cancel(c, "timeout")
      else
        arm_deadline(c, left)
      end
    end
  end
  return c
end

function M.background() return root end
function M.current() return sched.current_ctx() end

function M.with_cancel(parent)
  local c = child(parent_arg("with_cancel", parent, 1))
  return c, function() cancel(c, "canceled") end
end

function M.with_deadline(t, parent)
  if type(t) ~= "number" or t ~= t then
    error("orrery.context.with_deadline: bad argument #1 (deadline as orrery.now() seconds expected)", 2)
  end
  local c = child(parent_arg("with_deadline", parent, 2), t)
  return c, function() cancel(c, "canceled") end
end

function M.with_timeout(s, parent)
  if type(s) ~= "number" or s ~= s then
    error("orrery.context.with_timeout: bad argument #1 (timeout in seconds expected)", 2)
  end
  local c = child(parent_arg("with_timeout", parent, 2), C.orrery_ffi_now() + s)
  return c, function() cancel(c, "canceled") end
end

-- without_cancel(parent): a context with parent's values that is not
-- cancelled when parent is and has no deadline (Go's WithoutCancel). Work
-- that must outlive a cancellation, such as a server draining its
-- requests after SIGTERM cancels the root, runs under one of these.
function M.without_cancel(parent)
  local p = parent_arg("without_cancel", parent, 1)
  return setmetatable({ e = false, parked = {}, children = setmetatable({}, weak),
    values = p.values }, Ctx)
end

function M.with_value(key, value, parent)
  if key == nil then error("orrery.context.with_value: bad argument #1 (key must not be nil)", 2) end
  local p = parent_arg("with_value", parent, 3)
  local c = child(p)
  c.values = { key = key, value = value, up = p.values }
  return c
end

function Ctx:err()
  check.self(self, Ctx, "ctx:err", "context")
  return self.e or (self == root and root.shutdown or nil)
end

function Ctx:deadline()
  check.self(self, Ctx, "ctx:deadline", "context")
  return self.dl
end

function Ctx:cancel()
  check.self(self, Ctx, "ctx:cancel", "context")
  cancel(self, "canceled")
end

function Ctx:value(key)
  check.self(self, Ctx, "ctx:value", "context")
  local v = self.values
  while v do
    if v.key == key then return v.value end
    v = v.up
  end
end

-- A channel that is closed when the context is cancelled; use it in select.
function Ctx:done()
  check.self(self, Ctx, "ctx:done", "context")
  local d = self.done_ch
  if not d then
    chan = chan or require "orrery.chan"
    d = chan.internal(0, "ctx.done")
    self.done_ch = d
    -- Waiting for the root to end is waiting for SIGINT/SIGTERM, which
    -- is not a deadlock.
    if self == root then require("orrery.core").watch_signals() end
    if self.e or (self == root and root.shutdown) then d:close() end
  end
  return d
end

function Ctx:__tostring()
  return ("context%s%s"):format(self == root and " (root)" or "",
    self.e and (" [" .. self.e .. "]") or "")
end

return M
