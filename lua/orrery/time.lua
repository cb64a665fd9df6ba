-- SPDX-License-Identifier: MIT
-- orrery.time -- sleep, after, timers and tickers on the host's timer heap.
local C = require "orrery.ffi"
local sched = require "orrery.sched"
local chan = require "orrery.chan"
local check = require "orrery.check"

local park = sched.park
local WAKE_TIMEOUT, PARKED = sched.WAKE_TIMEOUT, sched.PARKED

local M = {}

local function check_secs(fname, s, argn)
  if type(s) ~= "number" or s ~= s then
    error(("%s: bad argument #%d (seconds expected, got %s)"):format(fname, argn or 1,
      type(s) == "number" and "nan" or type(s)), 3)
  end
end

-- sleep(s) -> true, or nil, "canceled" | "timeout" when the coroutine's
-- context ends first. The deadline counts from the call.
function M.sleep(s)
  check_secs("orrery.sleep", s)
  if C.orrery_ffi_sleep(s) ~= PARKED then
    error("orrery.sleep: not inside a coroutine (or inside coroutine.wrap/resume)", 2)
  end
  local code = park(C.orrery_ffi_co_slot())
  if code == WAKE_TIMEOUT then return true end
  return nil, sched.wake_err(code)
end

local Timer = {}
Timer.__index = Timer

-- timer(s [, fn]): fires once after s seconds. Without fn it delivers
-- orrery.now() on t.c (capacity 1); with fn it runs fn in a new coroutine.
function M.timer(s, fn)
  check_secs("orrery.timer", s)
  if fn ~= nil and type(fn) ~= "function" then
    error("orrery.timer: bad argument #2 (function expected, got " .. type(fn) .. ")", 2)
  end
  local t = setmetatable({ fn = fn }, Timer)
  if not fn then t.c = chan.internal(1, "timer") end
  local ctx = sched.current_ctx()
  t.tm = sched.new_timer(function()
    if t.fn then
      sched.spawn(ctx, t.fn)
    else
      t.c:try_send(C.orrery_ffi_now())
    end
  end)
  sched.timer_start(t.tm, s)
  return t
end

-- Stops the timer; true if that prevented it from firing.
function Timer:stop()
  check.self(self, Timer, "orrery.timer:stop", "timer")
  return sched.timer_stop(self.tm)
end

-- Re-arms the timer for s seconds from now; true if it was still pending.
-- As in Go, a value already delivered stays in the channel.
function Timer:reset(s)
  check.self(self, Timer, "orrery.timer:reset", "timer")
  check_secs("orrery.timer:reset", s)
  local was = sched.timer_stop(self.tm)
  sched.timer_start(self.tm, s)
  return was
end

function M.after(s)
  check_secs("orrery.after", s)
  return M.timer(s).c
end

local Ticker = {}
Ticker.__index = Ticker

-- ticker(s): delivers orrery.now() on tk.c every s seconds; a tick that
-- finds the channel full is dropped, as in Go.
function M.ticker(s)
  check_secs("orrery.ticker", s)
  if s <= 0 then error("orrery.ticker: bad argument #1 (period must be positive)", 2) end
  local tk = setmetatable({ c = chan.internal(1, "ticker"), period = s }, Ticker)
  tk.tm = sched.new_timer(function(tm)
    tk.c:try_send(C.orrery_ffi_now())
    if not tk.stopped then sched.timer_start(tm, tk.period) end
  end)
  sched.timer_start(tk.tm, s)
  return tk
end

function Ticker:stop()
  check.self(self, Ticker, "orrery.ticker:stop", "ticker")
  self.stopped = true
  sched.timer_stop(self.tm)
end

function Ticker:reset(s)
  check.self(self, Ticker, "orrery.ticker:reset", "ticker")
  check_secs("orrery.ticker:reset", s)
  if s <= 0 then error("orrery.ticker:reset: bad argument #1 (period must be positive)", 2) end
  self.period = s
  self.stopped = false
  sched.timer_stop(self.tm)
  sched.timer_start(self.tm, s)
end

return M
