-- SPDX-License-Identifier: MIT
-- orrery.db -- what orrery.sqlite and orrery.pg share: the wrapper that
-- binds a string as binary data, and the wait on an operation that their
-- C core queued (host/sqlite.c, host/pg.c follow the same protocol:
-- PARKED, slot, op; release(op) when the wait is cut short; result(op)).
local sched = require "orrery.sched"

local PARKED = sched.PARKED
local park, wake_err = sched.park, sched.wake_err
local type, error, setmetatable = type, error, setmetatable

local M = {}

local BLOB = {}
BLOB.__index = BLOB

-- blob_fn(fname) -> function(s): the module's blob(s), whose misuse
-- names fname. The core binds any table with a string field blob as
-- binary data.
function M.blob_fn(fname)
  return function(s)
    if type(s) ~= "string" then
      error(("%s: bad argument #1 (string expected, got %s)"):format(fname, type(s)), 2)
    end
    return setmetatable({ blob = s }, BLOB)
  end
end

-- waiter(core) -> wait(r, slot, op): waits for an operation core queued.
-- A wait that a timeout or a cancellation cuts short releases the
-- operation: it still runs (a BEGIN nobody waits for rolls back), and its
-- result goes nowhere.
function M.waiter(core)
  local release, result = core.release, core.result
  return function(r, slot, op)
    if r ~= PARKED then return r, slot end
    local code = park(slot)
    if code < 0 then
      release(op)
      return nil, wake_err(code)
    end
    return result(op)
  end
end

return M
