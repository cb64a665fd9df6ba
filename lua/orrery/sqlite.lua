-- SPDX-License-Identifier: MIT
-- orrery.sqlite -- SQLite on the thread pool, with group commit
-- (docs/sqlite.md). host/sqlite.c queues the operations and runs them;
-- this module checks arguments and waits.
local core = require "orrery.sqlite.core"
local sched = require "orrery.sched"
local check = require "orrery.check"
local dbc = require "orrery.db"

local PARKED = sched.PARKED
local select, type = select, type

local M = {}

--- sqlite.blob(s) -> a parameter that binds s as a BLOB
M.blob = dbc.blob_fn("orrery.sqlite.blob")

-- Waits for an operation that core queued (orrery.db).
local wait = dbc.waiter(core)

-- A wait that neither a timeout nor a cancellation ends: for writes whose
-- caller must know the outcome (the saga journal). The coroutine resumes
-- only when the operation's job wakes it.
local yield = coroutine.yield
local function wait_hard(r, slot, op)
  if r ~= PARKED then return r, slot end
  yield()
  return core.result(op)
end

local DB = {}
DB.__index = DB

local SYNC = { off = 0, normal = 1, full = 2 }
local OPEN_OPTS = { synchronous = true, wal = true, busy_timeout = true, readonly = true,
  max_batch = true }

--- sqlite.open(path [, opts]) -> db | nil, err
function M.open(path, opts)
  if type(path) ~= "string" or path == "" then
    error("orrery.sqlite.open: bad argument #1 (file name expected, got " .. check.show(path) .. ")", 2)
  end
  opts = check.opts("orrery.sqlite.open", opts, OPEN_OPTS, 3, 2)
  local sync = 2
  if opts.synchronous ~= nil then
    sync = SYNC[opts.synchronous]
    if not sync then
      check.bad_opt("orrery.sqlite.open", "synchronous", '"full", "normal" or "off"',
        opts.synchronous, 3)
    end
  end
  local wal = opts.wal
  if wal == nil then wal = true end
  if type(wal) ~= "boolean" then check.bad_opt("orrery.sqlite.open", "wal", "boolean", wal, 3) end
  local busy = check.number_opt("orrery.sqlite.open", opts, "busy_timeout", {}, 3) or 5
  local ro = opts.readonly
  if ro ~= nil and type(ro) ~= "boolean" then
    check.bad_opt("orrery.sqlite.open", "readonly", "boolean", ro, 3)
  end
  local mb = check.number_opt("orrery.sqlite.open", opts, "max_batch",
    { min = 1, int = true, what = "positive integer" }, 3) or 1024
  local h = core.new(path, sync, wal, math.floor(busy * 1000), ro or false, mb)
  local ok, err = wait(core.ctl(h, "open", -1))
  if not ok then return nil, err end
  return setmetatable({ h = h, file = path }, DB)
end

local function check_db(self, fname)
  if getmetatable(self) ~= DB then
    error(fname .. ": bad self (sqlite handle expected; call it as db:" ..
      fname:match("[%w_]+$") .. "(...))", 3)
  end
end

local function check_sql(fname, sql)
  if type(sql) ~= "string" then
    error(("%s: bad argument #1 (SQL string expected, got %s)"):format(fname, type(sql)), 3)
  end
end

--- db:exec(sql, ...) -> rows, info | nil, err
function DB:exec(sql, ...)
  check_db(self, "orrery.sqlite.exec")
  check_sql("orrery.sqlite.exec", sql)
  return wait(core.exec(self.h, false, 0, -1, sql, ...))
end

local function check_stmts(fname, stmts)
  if type(stmts) ~= "table" or #stmts == 0 then
    error(("%s: bad argument #1 (non-empty array of { sql, ... } expected, got %s)")
      :format(fname, type(stmts)), 3)
  end
  for i = 1, #stmts do
    local s = stmts[i]
    if type(s) ~= "table" or type(s[1]) ~= "string" then
      error(("%s: bad statement #%d ({ sql, params... } expected)"):format(fname, i), 3)
    end
  end
end

--- db:batch{ {sql, ...}, ... } -> results | nil, err
function DB:batch(stmts)
  check_db(self, "orrery.sqlite.batch")
  check_stmts("orrery.sqlite.batch", stmts)
  return wait(core.batch(self.h, false, 0, -1, stmts))
end

-- db:batch_uncancelled(stmts): db:batch whose wait a cancelled context
-- does not end (internal: orrery.saga's journal).
function DB:batch_uncancelled(stmts)
  return wait_hard(core.batch(self.h, false, 0, -1, stmts))
end

local TX = {}
TX.__index = TX

function TX:exec(sql, ...)
  check_sql("orrery.sqlite tx:exec", sql)
  return wait(core.exec(self.h, true, self.id, -1, sql, ...))
end

function TX:batch(stmts)
  check_stmts("orrery.sqlite tx:batch", stmts)
  return wait(core.batch(self.h, true, self.id, -1, stmts))
end

-- The end of a transaction: when the wait is cut short (the context was
-- cancelled) the COMMIT or ROLLBACK still runs, in order.
local function finish(h, what)
  return wait(core.ctl(h, what, -1))
end

local pack = sched.pack

--- db:transaction(fn, ...) -> fn's results | nil, err
function DB:transaction(fn, ...)
  check_db(self, "orrery.sqlite.transaction")
  if not check.callable(fn) then
    error("orrery.sqlite.transaction: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  local ok, err = wait(core.ctl(self.h, "begin", -1))
  if not ok then return nil, err end
  local tx = setmetatable({ h = self.h, id = core.stats(self.h).tx_id }, TX)
  local r = pack(pcall(fn, tx, ...))
  if not r[1] then
    core.ctl(self.h, "rollback", -1, true) -- queued; nobody waits
    error(r[2], 0)
  end
  if r[2] == nil and r.n >= 3 then
    finish(self.h, "rollback")
    return nil, r[3]
  end
  local cok, cerr = finish(self.h, "commit")
  if not cok then return nil, cerr end
  return unpack(r, 2, r.n)
end

--- db:close() -> true | nil, err
function DB:close()
  check_db(self, "orrery.sqlite.close")
  return wait(core.ctl(self.h, "close", -1))
end

function DB:path() return self.file end

--- db:stats() -> { batches, ops, queued, busy, in_tx, closed }
function DB:stats() return core.stats(self.h) end

M.version = core.version()

return M
