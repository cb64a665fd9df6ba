-- SPDX-License-Identifier: MIT
-- orrery.leaks -- coroutines parked forever: waiting on channels that no
-- live code can reach any more (Go's goroutine leak profile, 1.26).
--
-- A coroutine parked on a channel, without a timeout, can only be woken
-- by a send, a receive or a close on that channel, or by the cancellation
-- of its context. If neither the channel nor the context can be reached
-- from anything that runs or will run, it is parked for good. Lua's GC
-- cannot answer this (the parked coroutine's own stack references the
-- channel, and every coroutine is anchored), so find() walks the heap
-- itself, as a GC's mark phase would, with one difference: the stack of
-- a coroutine parked on channels is not a root. It is walked only once one
-- of the things that can wake it has been reached, which may reach more
-- channels in turn (a fixpoint). What is left unreached is the leak.
local orrery = require "orrery"
local sched = require "orrery.sched"
local chan = require "orrery.chan"
local context = require "orrery.context"
local C = require "orrery.ffi"

local M = {}

local Chan, select_fn = chan.Chan, chan.select
local PARKS = { [Chan.send] = true, [Chan.recv] = true, [select_fn] = true }

-- The parked operation in a coroutine's stack: the frame of ch:send,
-- ch:recv or orrery.select, with its locals slot, self or cases, xctx.
local function parked_op(th)
  for level = 0, 200 do
    local info = debug.getinfo(th, level, "f")
    if not info then return nil end
    if PARKS[info.func] then
      local op = { chans = {} }
      for i = 1, 200 do
        local name, v = debug.getlocal(th, level, i)
        if not name then break end
        if name == "slot" then op.slot = v
        elseif name == "self" and getmetatable(v) == Chan then op.chans[1] = v
        elseif name == "xctx" then op.xctx = v
        elseif name == "cases" and type(v) == "table" then
          for _, cs in ipairs(v) do
            if type(cs) == "table" and getmetatable(cs.ch) == Chan then op.chans[#op.chans + 1] = cs.ch end
          end
        end
      end
      return op.slot and op
    end
  end
end

local collectable = { table = true, ["function"] = true, thread = true, userdata = true }

--- leaks.find() -> list, stats: the entries of orrery.coroutines() for the
-- coroutines parked for good on channels, by id; stats = { objects =
-- objects walked, seconds = time the walk took }. Called from a
-- coroutine, it first lets the coroutines that have not started yet run
-- to their first wait (the stack of one that has not started cannot be
-- read). The walk does not yield: the heap it looks at is one moment's.
function M.find()
  if C.orrery_ffi_co_slot() ~= 0 then
    for _ = 1, 100 do
      local unstarted = false
      for _, c in ipairs(orrery.coroutines()) do
        if c.state == "runnable" and not c.traceback then unstarted = true break end
      end
      if not unstarted then break end
      orrery.yield()
    end
  end
  local t0 = C.orrery_ffi_now()
  local entries = orrery.coroutines()
  -- The coroutines that may be parked for good, by slot: parked on
  -- channels (a wait that names one, or a select) with no timer armed.
  local maybe = {}
  for _, c in ipairs(entries) do
    if c.state == "waiting" and (c.chan or c.cases) and not c["until"] then maybe[c.slot] = c end
  end
  local ibox, obox, ctxs, root = sched.ibox, sched.obox, sched.ctxs, sched.root
  local Ctx = context.Ctx
  local running = coroutine.running()

  local seen, stack, n = {}, {}, 0
  local waiters = {}   -- a channel or context -> the parked ops it can wake
  local pending = {}   -- a key of a weak-keyed table -> values it keeps
  local parked = {}    -- slot -> its op, once its thread was reached
  local live = {}      -- slot -> true once its op can be woken
  local walked = 0
  for _, own in ipairs { seen, stack, waiters, pending, parked, live, maybe, entries } do seen[own] = true end

  local mark, wake
  function mark(v)
    if v == nil or not collectable[type(v)] or seen[v] then return end
    seen[v] = true
    n = n + 1
    stack[n] = v
    local w = waiters[v]
    if w then
      waiters[v] = nil
      for _, op in ipairs(w) do wake(op) end
    end
    local p = pending[v]
    if p then
      pending[v] = nil
      for _, x in ipairs(p) do mark(x) end
    end
  end

  local function frames(th, from)
    for level = from, 100000 do
      local info = debug.getinfo(th, level, "f")
      if not info then break end
      mark(info.func)
      for i = 1, 100000 do
        local name, v = debug.getlocal(th, level, i)
        if not name then break end
        mark(v)
      end
      for i = -1, -100000, -1 do
        local name, v = debug.getlocal(th, level, i)
        if not name then break end
        mark(v)
      end
    end
  end

  -- A parked op that can be woken: its stack and what the runtime keeps
  -- for it (the value it offers, its context) are live.
  function wake(op)
    if live[op.slot] then return end
    live[op.slot] = true
    frames(op.thread, 0)
    mark(ibox[op.slot])
    mark(obox[op.slot])
    mark(ctxs[op.slot])
  end

  local function wait_on(op, obj)
    if seen[obj] then return wake(op) end
    local w = waiters[obj]
    if not w then w = {}; waiters[obj] = w end
    w[#w + 1] = op
  end

  local function scan_thread(th)
    if th == running then
      -- The frames above find's own are the caller's: live. Find's and
      -- the walk's below it are not looked at.
      for level = 1, 100000 do
        local info = debug.getinfo(level, "f")
        if not info then return end
        if info.func == M.find then return frames(th, level + 1) end
      end
    end
    local op = parked_op(th)
    local c = op and maybe[op.slot]
    if not c then return frames(th, 0) end
    op.thread = th
    parked[op.slot] = op
    for _, ch in ipairs(op.chans) do wait_on(op, ch) end
    -- A context other than the root's can be cancelled by whoever holds it
    -- (or an ancestor of it); the root's only at shutdown, which does not
    -- count as a wake here.
    local ctx = ctxs[op.slot]
    if ctx and ctx ~= root then wait_on(op, ctx) end
    if op.xctx and op.xctx ~= root then wait_on(op, op.xctx) end
  end

  local function scan_table(t)
    local mt = debug.getmetatable(t)
    mark(mt)
    local mode = mt and rawget(mt, "__mode")
    local wk = type(mode) == "string" and mode:find("k") ~= nil
    local wv = type(mode) == "string" and mode:find("v") ~= nil
    -- A coroutine's own entries in the runtime's per-slot tables belong to
    -- it (wake marks them).
    local own = (t == ibox or t == obox or t == ctxs) and maybe
    for k, v in next, t do
      if not (own and own[k]) then
        if not wk then mark(k) end
        if not wv then
          if wk and collectable[type(k)] and not seen[k] then
            local p = pending[k]
            if not p then p = {}; pending[k] = p end
            p[#p + 1] = v
          else
            mark(v)
          end
        end
      end
    end
    -- A context's children (a weak-keyed set) are cancelled with it.
    if mt == Ctx and t ~= root and type(rawget(t, "children")) == "table" then
      for child in next, t.children do mark(child) end
    end
  end

  local function scan(v)
    walked = walked + 1
    local tv = type(v)
    if tv == "table" then
      scan_table(v)
    elseif tv == "function" then
      for i = 1, 100000 do
        local name, x = debug.getupvalue(v, i)
        if not name then break end
        mark(x)
      end
      mark(debug.getfenv(v))
    elseif tv == "thread" then
      mark(debug.getfenv(v))
      scan_thread(v)
    elseif tv == "userdata" then
      mark(debug.getmetatable(v))
      mark(debug.getfenv(v))
    end
  end

  -- The roots: the registry (modules, anchored coroutines and handles),
  -- the globals, the metatables of the basic types, the caller.
  mark(debug.getregistry())
  mark(_G)
  for _, v in ipairs { "", 0, true, print, running } do mark(debug.getmetatable(v)) end
  mark(debug.getmetatable(nil))
  mark(running)
  while n > 0 do
    local v = stack[n]
    stack[n] = nil
    n = n - 1
    scan(v)
  end

  local out = {}
  for slot, op in pairs(parked) do
    if not live[slot] then out[#out + 1] = maybe[slot] end
  end
  table.sort(out, function(a, b) return a.id < b.id end)
  return out, { objects = walked, seconds = C.orrery_ffi_now() - t0 }
end

return M
