-- SPDX-License-Identifier: MIT
-- orrery.chan -- Go channels and select over host/chan.c.
--
-- host/chan.c decides every outcome (ring indices, FIFO wait queues, who
-- is handed what); this module moves the Lua values accordingly. The fast
-- paths are FFI calls and table stores, so loops of sends and receives
-- that do not block are compiled by the JIT.
local ffi = require "ffi"
local bit = require "bit"
local C = require "orrery.ffi"
local sched = require "orrery.sched"

local band, rshift = bit.band, bit.rshift
local ibox, obox, park, wait_opt = sched.ibox, sched.obox, sched.park, sched.wait_opt
local type, error, setmetatable, tonumber = type, error, setmetatable, tonumber

-- The parking protocol's statuses and a channel's done variants
-- (host/ffi_cdef.h).
local OP_BLOCK, OP_PARKED = C.ORRERY_DECLINED, C.ORRERY_PARKED
local OP_BUF, OP_PEER, OP_BUFPEER, OP_CLOSED =
  C.ORRERY_CHAN_BUF, C.ORRERY_CHAN_PEER, C.ORRERY_CHAN_BUFPEER, C.ORRERY_CHAN_CLOSED

local iob = ffi.new("int32_t[4]")
local idbuf = ffi.new("uint64_t[1]")
local tnew = require "table.new"

local Chan = {}
Chan.__index = Chan

local M = { Chan = Chan }
local wake_err = sched.wake_err
M.wake_err = wake_err

-- The value a parked sender offers: a single send stores it directly, a
-- select stores its cases table (case index cas, 0-based).
local function peer_value(slot, cas)
  local v = obox[slot]
  if cas < 0 then return v end
  return v[cas + 1].v
end

local function check(self, fname)
  if type(self) ~= "table" or getmetatable(self) ~= Chan then
    error(("orrery.chan:%s: bad self (channel expected, got %s)"):format(fname, type(self)), 3)
  end
end

-- The live channels that have a name or a role, by id, for the coroutine
-- dump: C reports the id of the channel a coroutine waits on, and
-- orrery.dump finds here the name the user gave it, or the role of a
-- channel that implements something else (a mutex, a waitgroup, a timer).
-- Weak values: being listed does not keep a channel alive; a parked
-- operation's own reference does. Unnamed channels are left out, as the
-- dump has nothing to add to their id: listing every channel made
-- orrery.chan() cost 330 instead of 250 ns.
local by_id = setmetatable({}, { __mode = "v" })
M.by_id = by_id

--- orrery.chan(cap, name) -> channel
function M.new(cap, name)
  if cap == nil then cap = 0 end
  if type(cap) ~= "number" or cap < 0 or cap % 1 ~= 0 or cap > 0x7fffffff then
    error("orrery.chan: bad argument #1 (capacity must be a non-negative integer)", 2)
  end
  if name ~= nil and type(name) ~= "string" then
    error("orrery.chan: bad argument #2 (name must be a string)", 2)
  end
  local c = C.orrery_ffi_chan_new(cap, idbuf)
  ffi.gc(c, C.orrery_ffi_chan_free)
  local id = tonumber(idbuf[0])
  local ch = setmetatable({ c = c, buf = tnew(cap < 4096 and cap or 4096, 0), id = id, name = name }, Chan)
  if name then by_id[id] = ch end
  return ch
end

-- internal(cap, role): a channel that implements another primitive; role
-- ("mutex", "waitgroup", ...) tells the dump what a wait on it means. It
-- is kept apart from the user's name so that a channel the user calls
-- "mutex" is not taken for one.
function M.internal(cap, role)
  local ch = M.new(cap)
  ch.role = role
  by_id[ch.id] = ch
  return ch
end

local function send_closed(fname)
  error(fname .. ": send on closed channel", 3)
end

function Chan:send(v, opt)
  check(self, "send")
  local timeout, xctx = -1, nil
  if opt ~= nil then timeout, xctx = wait_opt("orrery.chan:send", 2, opt) end
  local r = C.orrery_ffi_chan_send(self.c, iob, 1, timeout)
  if r == OP_PEER then
    ibox[iob[1]] = v
    return true
  elseif r == OP_BUF then
    self.buf[iob[1]] = v
    return true
  elseif r == OP_PARKED then
    local slot = iob[1]
    obox[slot] = v
    local code = park(slot, xctx)
    obox[slot] = false
    if code >= 0 then
      if band(code, 3) ~= 0 then send_closed("orrery.chan:send") end
      return true
    end
    return nil, wake_err(code)
  elseif r == OP_CLOSED then
    send_closed("orrery.chan:send")
  end
  error("orrery.chan:send: would block outside a coroutine (or inside coroutine.wrap/resume)", 2)
end

function Chan:try_send(v)
  check(self, "try_send")
  local r = C.orrery_ffi_chan_send(self.c, iob, 0, -1)
  if r == OP_PEER then
    ibox[iob[1]] = v
    return true
  elseif r == OP_BUF then
    self.buf[iob[1]] = v
    return true
  elseif r == OP_CLOSED then
    send_closed("orrery.chan:try_send")
  end
  return false, "full"
end

-- Completes a receive that C resolved without parking.
local function took(self, r)
  if r == OP_BUF then
    local b, i = self.buf, iob[1]
    local v = b[i]
    b[i] = nil
    return v, true
  elseif r == OP_PEER then
    return peer_value(iob[1], iob[2]), true
  elseif r == OP_BUFPEER then
    local b, i = self.buf, iob[1]
    local v = b[i]
    b[i] = peer_value(iob[2], iob[3])
    return v, true
  end
  return nil, false, "closed"
end

function Chan:recv(opt)
  check(self, "recv")
  local timeout, xctx = -1, nil
  if opt ~= nil then timeout, xctx = wait_opt("orrery.chan:recv", 1, opt) end
  local r = C.orrery_ffi_chan_recv(self.c, iob, 1, timeout)
  if r == OP_PARKED then
    local slot = iob[1]
    local code = park(slot, xctx)
    if code >= 0 then
      if band(code, 3) == 0 then
        local v = ibox[slot]
        ibox[slot] = false
        return v, true
      end
      return nil, false, "closed"
    end
    return nil, false, wake_err(code)
  elseif r == OP_BLOCK then
    error("orrery.chan:recv: would block outside a coroutine (or inside coroutine.wrap/resume)", 2)
  end
  return took(self, r)
end

function Chan:try_recv()
  check(self, "try_recv")
  local r = C.orrery_ffi_chan_recv(self.c, iob, 0, -1)
  if r == OP_BLOCK then return nil, false, "empty" end
  return took(self, r)
end

function Chan:close()
  check(self, "close")
  if C.orrery_ffi_chan_close(self.c) < 0 then
    error("orrery.chan:close: close of closed channel", 2)
  end
end

function Chan:len() return C.orrery_ffi_chan_len(self.c) end
function Chan:cap() return C.orrery_ffi_chan_cap(self.c) end
function Chan:closed() return C.orrery_ffi_chan_closed(self.c) ~= 0 end

-- for v in ch:iter() do ... end: ends once the channel is closed and
-- drained (or the coroutine's context is cancelled). A nil value also ends
-- a generic for, so loop on recv for channels that carry nil.
function Chan:iter()
  check(self, "iter")
  return function()
    local v, ok = self:recv()
    if ok then return v end
  end
end

function Chan:__tostring()
  return ("chan #%d%s (cap %d, len %d%s)"):format(self.id,
    (self.name or self.role) and (" " .. (self.name or self.role)) or "", self:cap(), self:len(),
    self:closed() and ", closed" or "")
end

-- Select cases. A receive case is immutable and cached per channel.
function Chan:recv_case()
  check(self, "recv_case")
  local rc = self.rc
  if not rc then
    rc = { ch = self, kind = 1 }
    self.rc = rc
  end
  return rc
end

function Chan:send_case(v)
  check(self, "send_case")
  return { ch = self, kind = 2, v = v }
end

local sel_cap = 64
local sel_chans = ffi.new("orrery_chan *[?]", sel_cap)
local sel_kinds = ffi.new("int8_t[?]", sel_cap)

-- select { case1, case2, ..., timeout = s, default = true }
--   -> i, v, ok        for a receive case (ok false once closed)
--   -> i, true         for a send case
--   -> nil, "default" | "timeout" | "canceled"
-- A case may be false to disable it, like a nil channel in Go.
function M.select(cases)
  if type(cases) ~= "table" then
    error("orrery.select: bad argument #1 (table of cases expected, got " .. type(cases) .. ")", 2)
  end
  local n = #cases
  if n > sel_cap then
    sel_cap = n
    sel_chans = ffi.new("orrery_chan *[?]", n)
    sel_kinds = ffi.new("int8_t[?]", n)
  end
  for i = 1, n do
    local cs = cases[i]
    if cs then
      if type(cs) ~= "table" or not cs.kind or getmetatable(cs.ch) ~= Chan then
        error(("orrery.select: bad case #%d (use ch:recv_case() or ch:send_case(v))"):format(i), 2)
      end
      sel_chans[i - 1] = cs.ch.c
      sel_kinds[i - 1] = cs.kind
    else
      sel_chans[i - 1] = nil
      sel_kinds[i - 1] = 0
    end
  end
  local timeout, xctx = -1, nil
  if cases.timeout ~= nil then timeout, xctx = wait_opt("orrery.select", 1, cases.timeout) end
  local cx = cases.ctx
  if cx ~= nil then
    if type(cx) ~= "table" or cx.parked == nil then
      error("orrery.select: bad option ctx (context expected, got " .. type(cx) .. ")", 2)
    end
    xctx = cx
  end
  local r = C.orrery_ffi_select(n, sel_chans, sel_kinds, iob, cases.default and 0 or 1, timeout)
  if r == OP_BLOCK then
    if cases.default then return nil, "default" end
    error("orrery.select: would block outside a coroutine (or inside coroutine.wrap/resume)", 2)
  elseif r == OP_PARKED then
    local slot = iob[1]
    obox[slot] = cases
    local code = park(slot, xctx)
    obox[slot] = false
    if code < 0 then return nil, wake_err(code) end
    local i, st = rshift(code, 2), band(code, 3)
    if cases[i].kind == 1 then
      if st ~= 0 then return i, nil, false, "closed" end
      local v = ibox[slot]
      ibox[slot] = false
      return i, v, true
    end
    if st ~= 0 then send_closed("orrery.select") end
    return i, true
  elseif r < 0 then
    error("orrery.select: out of memory", 2)
  end
  local i = iob[0] + 1
  local cs = cases[i]
  if cs.kind == 1 then return i, took(cs.ch, r) end
  if r == OP_PEER then
    ibox[iob[1]] = cs.v
  elseif r == OP_BUF then
    cs.ch.buf[iob[1]] = cs.v
  else
    send_closed("orrery.select")
  end
  return i, true
end

return M
