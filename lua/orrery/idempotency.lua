-- SPDX-License-Identifier: MIT
-- orrery.idempotency -- what saga participants need to survive at-least-
-- once calls (docs/idempotency.md): HTTP middleware that deduplicates
-- requests by their Idempotency-Key, and a barrier that records actions
-- and compensations per key in the participant's own transaction, so that
-- duplicates do nothing, a compensation that arrives before its action
-- undoes nothing, and an action that arrives after its compensation is
-- refused.
--
-- Both work on an orrery.sqlite handle, or anything with the same API
-- (orrery.pg): statements are written with ? placeholders and renumbered
-- to $1, $2, ... for a handle that says it speaks PostgreSQL.
local json = require "orrery.json"
local check = require "orrery.check"
local ffi = require "ffi"

local M = {}

ffi.cdef [[unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);]]
local digest = ffi.new("unsigned char[32]")
local function sha256(s)
  ffi.C.SHA256(s, #s, digest)
  local out = {}
  for i = 0, 31 do out[i + 1] = ("%02x"):format(digest[i]) end
  return table.concat(out)
end

local function is_pg(db)
  return type(db.url) == "function"
end

-- The handle's SQL: ? placeholders become $n for PostgreSQL.
local function dialect(db)
  if not is_pg(db) then return function(s) return s end end
  return function(s)
    local n = 0
    return (s:gsub("%?", function() n = n + 1; return "$" .. n end))
  end
end

local function check_db(fname, db)
  if type(db) ~= "table" or type(db.exec) ~= "function" or type(db.transaction) ~= "function" then
    error(fname .. ": bad argument #1 (orrery.sqlite or orrery.pg handle expected, got " .. type(db) .. ")", 3)
  end
end

local function must(ok, ...)
  if not ok then error("orrery.idempotency: " .. tostring((...)), 0) end
  return ok, ...
end

-- -- The HTTP middleware --

-- A JSON body in a canonical form (object keys sorted), so that the same
-- request encoded by another process (key order is not fixed) matches.
local function canon(v, out)
  local t = type(v)
  if t == "table" then
    if json.is_array(v) or (next(v) == nil and not json.is_object(v)) or v[1] ~= nil then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        canon(v[i], out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = json.encode(k) .. ":"
        canon(v[k], out)
      end
      out[#out + 1] = "}"
    end
  else
    out[#out + 1] = json.encode(v)
  end
end

local function canonical_body(req, body)
  local ct = req:header("content-type") or ""
  if not ct:find("json", 1, true) then return body end
  local ok, v = pcall(json.decode, body)
  if not ok then return body end
  local out = {}
  canon(v, out)
  return table.concat(out)
end

local TRANSIENT = { [408] = true, [409] = true, [425] = true, [429] = true }

local MW_OPTS = { store = true, header = true, ttl = true, lock_timeout = true, methods = true,
  table = true }

--- idempotency.middleware{ store = db, header, ttl, lock_timeout, methods } -> middleware
function M.middleware(opts)
  local F = "orrery.idempotency.middleware"
  opts = check.opts(F, opts, MW_OPTS, 3)
  local db = opts.store
  if type(db) ~= "table" or type(db.exec) ~= "function" then
    check.bad_opt(F, "store", "orrery.sqlite or orrery.pg handle", db, 3)
  end
  local header = opts.header or "Idempotency-Key"
  if type(header) ~= "string" then check.bad_opt(F, "header", "string", header, 3) end
  local ttl = check.number_opt(F, opts, "ttl", { strict = true, what = "positive number of seconds" }, 3) or 86400
  local lock = check.number_opt(F, opts, "lock_timeout", { strict = true, what = "positive number of seconds" }, 3) or 60
  local methods = { POST = true, PUT = true, PATCH = true, DELETE = true }
  if opts.methods ~= nil then
    if type(opts.methods) ~= "table" then check.bad_opt(F, "methods", "array of method names", opts.methods, 3) end
    methods = {}
    for _, m in ipairs(opts.methods) do methods[m] = true end
  end
  local tbl = opts.table or "idempotency_keys"
  if type(tbl) ~= "string" or not tbl:match("^[%a_][%w_]*$") then
    check.bad_opt(F, "table", "SQL identifier", tbl, 3)
  end
  local sql = dialect(db)
  local ready = false
  local function setup()
    if ready then return end
    must(db:exec(("CREATE TABLE IF NOT EXISTS %s (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
      .. "state TEXT NOT NULL, status INTEGER, body TEXT, headers TEXT, created REAL NOT NULL)"):format(tbl)))
    ready = true
  end
  local INS = sql(("INSERT INTO %s (key, fingerprint, state, created) VALUES (?, ?, 'in_flight', ?) "
    .. "ON CONFLICT (key) DO NOTHING"):format(tbl))
  local SEL = sql(("SELECT fingerprint, state, status, body, headers, created FROM %s WHERE key = ?"):format(tbl))
  local DEL = sql(("DELETE FROM %s WHERE key = ? AND created = ?"):format(tbl))
  local DONE = sql(("UPDATE %s SET state = 'done', status = ?, body = ?, headers = ? WHERE key = ?"):format(tbl))
  local now = require("orrery.ffi").orrery_ffi_wall_now
  -- The key's records are written whatever happens to the request (a
  -- client that hangs up cancels its handler's context): a record left
  -- in_flight would answer 409 to every retry until lock_timeout.
  local sched = require "orrery.sched"
  local keep = require("orrery.context").without_cancel(require("orrery.context").background())
  local function store(sql_, ...) return sched.with_ctx(keep, db.exec, db, sql_, ...) end

  local function replay(row)
    local hs = row.headers and json.decode(row.headers) or {}
    hs["Idempotent-Replayed"] = "true"
    local body = row.body
    if body then
      local b = json.decode(body)
      body = b.v
      if b.t == "json" then hs["Content-Type"] = hs["Content-Type"] or "application/json" end
    end
    return row.status, body, hs
  end

  return function(req, next)
    if not methods[req.method] then return next(req) end
    local key = req:header(header)
    if not key then return next(req) end
    if #key > 255 or key == "" then return 400, { error = header .. " must be 1 to 255 characters" } end
    setup()
    local body = req:body()
    if not body then return next(req) end -- the handler reports the body's error
    local fp = sha256(req.method .. " " .. req.path .. "?" .. (req.raw_query or "") .. "\n" ..
      canonical_body(req, body))
    for _ = 1, 3 do
      local t = now()
      local _, info = must(store(INS, key, fp, t))
      if info.changes == 1 then
        -- This request owns the key: run it, then store what it answered.
        local ok, status, rbody, headers = pcall(next, req)
        -- Kept: final answers. Not kept (a retry runs again): failures,
        -- transient statuses, and answers to a client that hung up (its
        -- handler ran with a cancelled context).
        local cur = require("orrery.context").current()
        if not ok or type(status) ~= "number" or status >= 500 or TRANSIENT[status] or cur.e then
          store(DEL, key, t) -- a failure is not kept: a retry runs again
          if not ok then error(status, 0) end
          return status, rbody, headers
        end
        local stored
        if type(rbody) == "table" then
          stored = json.encode { t = "json", v = rbody }
        elseif rbody ~= nil then
          stored = json.encode { t = "raw", v = tostring(rbody) }
        end
        local hs = headers and json.try_encode(headers) or nil
        store(DONE, status, stored, hs, key)
        return status, rbody, headers
      end
      local row = must(store(SEL, key))[1]
      if row then
        local expired = now() - row.created > (row.state == "done" and ttl or lock)
        if expired then
          store(DEL, key, row.created) -- stale: taken over on the next pass
        elseif row.fingerprint ~= fp then
          return 422, { error = "this " .. header .. " was used with a different request" }
        elseif row.state == "in_flight" then
          return 409, { error = "a request with this " .. header .. " is in progress" }, { ["Retry-After"] = "1" }
        else
          return replay(row)
        end
      end
    end
    return 409, { error = "a request with this " .. header .. " is in progress" }
  end
end

-- -- The barrier --

local Barrier = {}
Barrier.__index = Barrier

--- idempotency.barrier(db [, { table }]) -> barrier
function M.barrier(db, opts)
  check_db("orrery.idempotency.barrier", db)
  opts = check.opts("orrery.idempotency.barrier", opts, { table = true }, 3, 2)
  local tbl = opts.table or "saga_barrier"
  if type(tbl) ~= "string" or not tbl:match("^[%a_][%w_]*$") then
    check.bad_opt("orrery.idempotency.barrier", "table", "SQL identifier", tbl, 3)
  end
  local sql = dialect(db)
  must(db:exec(("CREATE TABLE IF NOT EXISTS %s (key TEXT NOT NULL, op TEXT NOT NULL, origin TEXT NOT NULL, "
    .. "PRIMARY KEY (key, op))"):format(tbl)))
  return setmetatable({ db = db,
    ins = sql(("INSERT INTO %s (key, op, origin) VALUES (?, ?, ?) ON CONFLICT (key, op) DO NOTHING"):format(tbl)),
    sel = sql(("SELECT origin FROM %s WHERE key = ? AND op = 'action'"):format(tbl)),
  }, Barrier)
end

local function check_call(fname, self, key, fn)
  if getmetatable(self) ~= Barrier then error(fname .. ": bad self (call it as barrier:" .. fname:match("%w+$") .. "(...))", 3) end
  if type(key) ~= "string" or key == "" then
    error(fname .. ": bad argument #1 (key string expected, got " .. check.show(key) .. ")", 3)
  end
  if not check.callable(fn) then error(fname .. ": bad argument #2 (function expected, got " .. type(fn) .. ")", 3) end
end

--- barrier:action(key, fn) -> fn's results | nil, "duplicate" | nil, "compensated"
--- Runs fn(tx) in one transaction with the record of the action: once per
--- key, and never after the key's compensation.
function Barrier:action(key, fn)
  check_call("orrery.idempotency.action", self, key, fn)
  return self.db:transaction(function(tx)
    local _, info = must(tx:exec(self.ins, key, "action", "action"))
    if info.changes == 0 then
      local row = must(tx:exec(self.sel, key))[1]
      return nil, row and row.origin == "compensation" and "compensated" or "duplicate"
    end
    return fn(tx)
  end)
end

--- barrier:compensate(key, fn) -> true, undone | nil, "duplicate"
--- Runs fn(tx) only if the key's action took effect; a compensation that
--- arrives first records that, so that the late action is refused.
function Barrier:compensate(key, fn)
  check_call("orrery.idempotency.compensate", self, key, fn)
  return self.db:transaction(function(tx)
    local _, info = must(tx:exec(self.ins, key, "compensate", "compensate"))
    if info.changes == 0 then return nil, "duplicate" end
    local _, a = must(tx:exec(self.ins, key, "action", "compensation"))
    if a.changes == 1 then return true, false end -- the action never ran: nothing to undo
    local r, err = fn(tx)
    if r == nil and err ~= nil then return nil, err end
    return true, true
  end)
end

M.sha256 = sha256
return M
