-- SPDX-License-Identifier: MIT
-- orrery.saga_journal -- the saga journal's two backends behind one
-- interface (docs/saga.md): SQLite (one host; orrery.sqlite) and
-- PostgreSQL (several hosts sharing it; orrery.pg), the latter with
-- leases so that each running instance has one owner process at a time.
--
-- The engine (orrery.saga) hands the journal events and state changes as
-- tables and never writes SQL: j:write(inst, ops) is one atomic, durable
-- batch through the backend's group commit. On PostgreSQL every batch
-- starts with a fence that fails unless this process still owns the
-- instance, and renews its lease.
local orrery = require "orrery"
local check = require "orrery.check"
local json = require "orrery.json"
local sched = require "orrery.sched"

local M = {}

local FINAL = { completed = true, compensated = true, compensation_failed = true }
M.FINAL = FINAL

local now = require("orrery.ffi").orrery_ffi_wall_now

-- -- SQL shared by both backends, written with ? placeholders --

local EV = "INSERT INTO saga_events (instance, seq, kind, step, attempt, at, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
local SET_STATE = "UPDATE saga_instances SET state = ?, result = ?, error = ?, updated = ? WHERE id = ?"
local BY_ID_OR_KEY = "SELECT * FROM saga_instances WHERE id = ? OR key = ?"
local BY_ID = "SELECT * FROM saga_instances WHERE id = ?"
local BY_KEY = "SELECT * FROM saga_instances WHERE key = ?"
local EVENTS = "SELECT * FROM saga_events WHERE instance = ? ORDER BY seq"
local LIST_COLS = "id, key, name, version, state, error, created, updated"
-- The next event of an instance written from outside its run (the
-- command line's retry and skip).
local EV_NEXT = "INSERT INTO saga_events (instance, seq, kind, step, attempt, at, data) VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM saga_events WHERE instance = ?), ?, ?, NULL, ?, ?)"

-- ? -> $1, $2, ... (none of our SQL has a ? inside a literal).
local function dollars(sql)
  local n = 0
  return (sql:gsub("%?", function()
    n = n + 1
    return "$" .. n
  end))
end

local function ev_stmt(sql, inst, e)
  return { sql, inst.id, e.seq, e.kind, e.step, e.attempt, e.at, e.data, n = 8 }
end

-- The common methods; each backend sets self.sql (translated SQL) and
-- self.db, with exec/batch of the same shape (orrery.sqlite, orrery.pg).
local Common = {}

function Common:exec(sql, ...)
  return self.db:exec(self.sql(sql), ...)
end

function Common:batch(stmts)
  for _, s in ipairs(stmts) do s[1] = self.sql(s[1]) end
  return self.db:batch(stmts)
end

function Common:find(key_or_id)
  local rows, err = self:exec(BY_ID_OR_KEY, key_or_id, key_or_id)
  if not rows then return nil, err end
  return rows[1]
end

function Common:row(id)
  return assert(self:exec(BY_ID, id))[1]
end

function Common:by_key(key)
  return assert(self:exec(BY_KEY, key))[1]
end

function Common:events(id)
  return assert(self:exec(EVENTS, id))
end

-- get(key_or_id) -> the instance with its history, JSON decoded | nil, "not_found"
function Common:get(key_or_id)
  local r, err = self:find(key_or_id)
  if err then return nil, err end
  if not r then return nil, "not_found" end
  local evs = self:events(r.id)
  r.history = evs
  if r.input then r.input = json.decode(r.input) end
  if r.result then r.result = json.decode(r.result) end
  for _, e in ipairs(evs) do
    e.instance = nil
    if e.data then e.data = json.decode(e.data) end
  end
  return r
end

function Common:list(state)
  if state then
    return self:exec("SELECT " .. LIST_COLS .. " FROM saga_instances WHERE state = ? ORDER BY created", state)
  end
  return self:exec("SELECT " .. LIST_COLS .. " FROM saga_instances ORDER BY created")
end

-- The statements of ops: events ({ seq, kind, ... }) and state changes
-- ({ state = ..., result, error, at }).
function Common:stmts(inst, ops, out)
  out = out or {}
  for _, o in ipairs(ops) do
    if o.state then
      out[#out + 1] = self:state_stmt(inst, o)
    else
      out[#out + 1] = ev_stmt(self.ev_sql, inst, o)
    end
  end
  return out
end

function Common:state_stmt(inst, o)
  return { self.set_state_sql, o.state, o.result, o.error, o.at, inst.id, n = 6 }
end

-- hand_back(id, kind, step, data): records an event from outside the
-- instance's run and sets it to compensating, for its owner's (or, on
-- PostgreSQL, any process's) next recovery pass to take up.
function Common:hand_back(id, kind, step, data)
  local t = os.time()
  return self:batch {
    { EV_NEXT, id, id, kind, step, t, data, n = 7 },
    { self.hand_back_sql, t, id },
  }
end

-- Which live instances of `name` other processes may own or that were
-- recorded under a version not in `versions`: rows { id, version }.
function Common:other_versions(name, versions)
  local rows = assert(self:exec("SELECT id, version FROM saga_instances WHERE name = ? AND state IN ('running', 'compensating') ORDER BY created", name))
  local out = {}
  for _, r in ipairs(rows) do
    if not versions[r.version] then out[#out + 1] = r end
  end
  return out
end

-- -- SQLite: one process owns the journal --

local SQLITE_SCHEMA = {
  [[CREATE TABLE IF NOT EXISTS saga_instances (
      id TEXT PRIMARY KEY, key TEXT UNIQUE, name TEXT NOT NULL, version INTEGER NOT NULL,
      state TEXT NOT NULL, input TEXT, result TEXT, error TEXT,
      created REAL NOT NULL, updated REAL NOT NULL)]],
  [[CREATE INDEX IF NOT EXISTS saga_instances_state ON saga_instances (state)]],
  [[CREATE TABLE IF NOT EXISTS saga_events (
      instance TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, step TEXT,
      attempt INTEGER, at REAL NOT NULL, data TEXT,
      PRIMARY KEY (instance, seq)) WITHOUT ROWID]],
}

local Sqlite = setmetatable({}, { __index = Common })
Sqlite.__index = Sqlite
M.Sqlite = Sqlite

local function same_sql(s) return s end

local function open_sqlite(url, path, opts, schema)
  local sqlite = require "orrery.sqlite"
  local db, err = sqlite.open(path)
  if not db then return nil, err end
  if schema then
    for _, s in ipairs(SQLITE_SCHEMA) do
      local ok, e = db:exec(s)
      if not ok then return nil, e end
    end
  end
  return setmetatable({ db = db, url = url, kind = "sqlite", sql = same_sql, ev_sql = EV,
    set_state_sql = SET_STATE,
    hand_back_sql = "UPDATE saga_instances SET state = 'compensating', updated = ? WHERE id = ?" }, Sqlite)
end

-- insert(inst, row, evs) -> true | nil, "duplicate" | nil, err
function Sqlite:insert(inst, r, evs)
  local stmts = { { "INSERT INTO saga_instances (id, key, name, version, state, input, created, updated) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
    inst.id, inst.key, r.name, r.version, r.input, r.at, r.at, n = 8 } }
  self:stmts(inst, evs, stmts)
  local ok, err = self.db:batch(stmts)
  if ok then return true end
  if tostring(err):match("UNIQUE") then return nil, "duplicate" end
  return nil, err
end

-- write(inst, ops) -> true | nil, err: durable when it returns; the wait
-- is not cut short by a cancellation.
function Sqlite:write(inst, ops)
  return self.db:batch_uncancelled(self:stmts(inst, ops))
end

-- claim(name, versions) -> rows of the live instances recovery may take up
function Sqlite:claim(name, versions)
  local rows = assert(self:exec("SELECT * FROM saga_instances WHERE name = ? AND state IN ('running', 'compensating') ORDER BY created", name))
  local out = {}
  for _, r in ipairs(rows) do
    if versions[r.version] then out[#out + 1] = r end
  end
  return out
end

-- reopen(id) -> true when the compensation_failed instance is now
-- compensating and this process drives it.
function Sqlite:reopen(id)
  local _, info = assert(self:exec("UPDATE saga_instances SET state = 'compensating' WHERE id = ? AND state = 'compensation_failed'", id))
  return info.changes == 1
end

-- One process: no leases. track/untrack/release do nothing.
function Sqlite.track() end
function Sqlite.untrack() end
function Sqlite.release() end

-- -- PostgreSQL: several processes share it through leases --

local PG_SCHEMA = {
  [[CREATE TABLE IF NOT EXISTS saga_instances (
      id text PRIMARY KEY, key text UNIQUE, name text NOT NULL, version double precision NOT NULL,
      state text NOT NULL, input text, result text, error text,
      created double precision NOT NULL, updated double precision NOT NULL,
      owner text, lease_until timestamptz)]],
  [[CREATE INDEX IF NOT EXISTS saga_instances_state ON saga_instances (state)]],
  [[CREATE INDEX IF NOT EXISTS saga_instances_owner ON saga_instances (owner) WHERE owner IS NOT NULL]],
  [[CREATE TABLE IF NOT EXISTS saga_events (
      instance text NOT NULL, seq integer NOT NULL, kind text NOT NULL, step text,
      attempt integer, at double precision NOT NULL, data text,
      PRIMARY KEY (instance, seq))]],
}

local LEASE = "now() + $%d::float8 * interval '1 second'"

-- The fence (see Pg:write): takes the instance's row lock, renews its
-- lease, and fails (division by zero, SQLSTATE 22012) unless this process
-- owns it, which makes the whole batch fail.

local RENEW = "UPDATE saga_instances SET lease_until = " .. LEASE:format(2) ..
  " WHERE id IN (SELECT id FROM saga_instances WHERE owner = $1 FOR UPDATE SKIP LOCKED) RETURNING id"
local LOST = "SELECT id, owner FROM saga_instances WHERE id = ANY($1::text[]) AND owner IS DISTINCT FROM $2"
local RELEASE = "UPDATE saga_instances SET owner = NULL, lease_until = NULL WHERE owner = $1 AND id = ANY($2::text[])"
local CLAIM = "UPDATE saga_instances SET owner = $1, lease_until = " .. LEASE:format(2) ..
  " WHERE id IN (SELECT id FROM saga_instances WHERE name = $3 AND state IN ('running', 'compensating')" ..
  " AND version = ANY($4::float8[]) AND (owner IS NULL OR lease_until < now())" ..
  " ORDER BY created LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING *"

local Pg = setmetatable({}, { __index = Common })
Pg.__index = Pg
M.Pg = Pg

local cache = setmetatable({}, { __mode = "k" })
local function pg_sql(s)
  local t = cache[s]
  if not t then
    t = dollars(s)
    cache[s] = t
  end
  return t
end

local function host_name()
  local f = io.open("/proc/sys/kernel/hostname")
  local h = f and f:read("*l")
  if f then f:close() end
  return h or os.getenv("HOSTNAME") or "host"
end

local function pid() return require("orrery").pid() end

local function array(ids)
  return "{" .. table.concat(ids, ",") .. "}"
end

local function open_pg(url, opts, schema, new_id)
  local pg = require "orrery.pg"
  local db, err = pg.connect(url, { pool = opts.pool })
  if not db then return nil, err end
  if schema then
    -- Several processes may start at once: the schema is made under an
    -- advisory lock (CREATE ... IF NOT EXISTS races otherwise).
    local ok, e = db:transaction(function(tx)
      assert(tx:exec("SELECT pg_advisory_xact_lock(7305446165830627701)"))
      for _, s in ipairs(PG_SCHEMA) do
        local r, e2 = tx:exec(s)
        if not r then return nil, e2 end
      end
      return true
    end)
    if not ok then
      db:close()
      return nil, e
    end
  end
  local j = setmetatable({ db = db, url = url, kind = "pg", sql = pg_sql,
    hand_back_sql = "UPDATE saga_instances SET state = 'compensating', updated = ?, owner = NULL, lease_until = NULL WHERE id = ?",
    leased = true, lease = opts.lease or 30,
    owner = opts.owner or ("%s:%s:%s"):format(host_name(), pid(), new_id and new_id() or "cli"),
    tracked = {}, unowned = {}, suspect = {}, lease_ok = now() }, Pg)
  j.renew_every = j.lease / 3
  -- The engine's handle renews leases; the command line's does not.
  if schema then sched.spawn(sched.root, j.renewer, j) end
  return j
end

function Pg:insert(inst, r, evs)
  local stmts = { { "INSERT INTO saga_instances (id, key, name, version, state, input, created, updated, owner, lease_until) VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8, " .. LEASE:format(9) .. ")",
    inst.id, inst.key, r.name, r.version, r.input, r.at, r.at, self.owner, self.lease, n = 10 } }
  stmts[2] = self:events_stmt(inst, evs)
  local ok, err, code = self.db:batch(stmts)
  if ok then return true end
  if code == "23505" then return nil, "duplicate" end
  return nil, err
end

-- A write is two statements: the fence, which also applies the state
-- change when there is one, and the events in one multi-row INSERT. The
-- SQL is made once per shape.
local fence_sql = {}
local function pg_fence_sql(st)
  local k = st or ""
  local sql = fence_sql[k]
  if sql then return sql end
  local sets = "lease_until = " .. LEASE:format(3)
  if st then
    sets = (st == "final" and "owner = NULL, lease_until = NULL" or sets) ..
      ", state = $4, result = $5, error = $6, updated = $7::float8"
  end
  sql = "WITH f AS (UPDATE saga_instances SET " .. sets ..
    " WHERE id = $1 AND owner = $2 RETURNING 1) SELECT 1 / (SELECT count(*) FROM f) AS owned"
  fence_sql[k] = sql
  return sql
end

local events_sql = {}
local function pg_events_sql(n)
  local sql = events_sql[n]
  if sql then return sql end
  local rows = {}
  for i = 0, n - 1 do
    local b = i * 7
    rows[#rows + 1] = ("($%d, $%d, $%d, $%d, $%d, $%d, $%d)"):format(b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7)
  end
  sql = "INSERT INTO saga_events (instance, seq, kind, step, attempt, at, data) VALUES " .. table.concat(rows, ", ")
  events_sql[n] = sql
  return sql
end

-- The events of ops (state changes skipped) as one INSERT, or nil.
function Pg:events_stmt(inst, ops)
  local st, n = { false }, 1
  for _, o in ipairs(ops) do
    if not o.state then
      st[n + 1], st[n + 2], st[n + 3], st[n + 4], st[n + 5], st[n + 6], st[n + 7] =
        inst.id, o.seq, o.kind, o.step, o.attempt, o.at, o.data
      n = n + 7
    end
  end
  if n == 1 then return nil end
  st[1] = pg_events_sql((n - 1) / 7)
  st.n = n
  return st
end

function Pg:write(inst, ops)
  local state
  for _, o in ipairs(ops) do
    if o.state then state = o end
  end
  local fence
  if state then
    fence = { pg_fence_sql(FINAL[state.state] and "final" or "state"), inst.id, self.owner, self.lease,
      state.state, state.result, state.error, state.at, n = 8 }
  else
    fence = { pg_fence_sql(nil), inst.id, self.owner, self.lease }
  end
  local stmts = { fence, self:events_stmt(inst, ops) }
  local ok, err, code = self.db:batch_uncancelled(stmts)
  if ok then return true end
  if code == "22012" and tostring(err):match("^pg: #1:") then
    self:lose(inst.id, "another process owns the instance")
    return nil, "lease lost: another process owns the instance"
  end
  return nil, err
end

-- Takes up to 256 live instances of `name` recorded under one of
-- `versions` whose lease expired or that have no owner; two processes
-- never claim the same instance (the rows are locked, and skipped by the
-- other's claim, until the claim commits).
function Pg:claim(name, versions)
  local vs = {}
  for v in pairs(versions) do vs[#vs + 1] = ("%.17g"):format(v) end
  return assert(self.db:exec(CLAIM, self.owner, self.lease, name, array(vs), 256))
end

function Pg:other_versions(name, versions)
  local vs = {}
  for v in pairs(versions) do vs[#vs + 1] = ("%.17g"):format(v) end
  return assert(self.db:exec("SELECT id, version FROM saga_instances WHERE name = $1 AND state IN ('running', 'compensating') AND NOT (version = ANY($2::float8[])) ORDER BY created", name, array(vs)))
end

function Pg:reopen(id)
  local _, info = assert(self.db:exec("UPDATE saga_instances SET state = 'compensating', owner = $2, lease_until = " ..
    LEASE:format(3) .. " WHERE id = $1 AND state = 'compensation_failed'", id, self.owner, self.lease))
  return info.changes == 1
end

-- track(inst): this process drives inst; lose() calls inst.lose when its
-- lease is lost.
function Pg:track(inst)
  self.tracked[inst.id] = inst
end

function Pg:untrack(id)
  self.tracked[id] = nil
end

-- release(id): gives an instance this process stopped driving back, so
-- that recovery (here or elsewhere) takes it up without waiting for its
-- lease. Best effort: failing that, the lease runs out.
function Pg:release(id)
  self.tracked[id] = nil
  -- not cut short by the cancellation that may have stopped the instance
  self.db:batch_uncancelled { { RELEASE, self.owner, array { id } } }
end

function Pg:lose(id, why)
  local inst = self.tracked[id]
  self.tracked[id] = nil
  if inst and inst.lose then inst.lose(why) end
end

-- One renewal statement per interval for every instance this process
-- owns. An owned instance that the renewal did not reach is checked: if
-- another process owns it now, this one stops driving it. When renewals
-- fail for a whole lease, every instance is given up (another process
-- may have claimed them). Rows owned here that nobody drives (an instance
-- whose journal write failed) are released.
function Pg:renew()
  local t = now()
  local rows, err = self.db:exec(RENEW, self.owner, self.lease)
  if not rows then
    if now() - self.lease_ok > self.lease then
      io.stderr:write(("orrery.saga: journal %s: lease not renewed for %gs (%s); stopping its instances\n")
        :format(self.db:url(), self.lease, tostring(err)))
      local why = ("the lease was not renewed for %gs: %s"):format(self.lease, tostring(err))
      for id in pairs(self.tracked) do self:lose(id, why) end
    end
    return nil, err
  end
  self.lease_ok = t
  local seen, missing, stray = {}, {}, {}
  for _, r in ipairs(rows) do
    seen[r.id] = true
    if not self.tracked[r.id] then stray[#stray + 1] = r.id end
  end
  for id in pairs(self.tracked) do
    if not seen[id] then missing[#missing + 1] = id end
  end
  -- Owned by another process: lost. Without an owner: either finished
  -- by another process, or finished here a moment ago (its last write
  -- committed, the coroutine not yet told): lost only when it is still
  -- driven here at the next renewal.
  local suspect = {}
  if #missing > 0 then
    local lost = self.db:exec(LOST, array(missing), self.owner)
    for _, r in ipairs(lost or {}) do
      if r.owner or self.suspect[r.id] then
        local why = r.owner and "another process owns the instance" or "the instance has no owner any more"
        io.stderr:write(("orrery.saga: %s: lease lost (%s); stopping it\n"):format(r.id, why))
        self:lose(r.id, why)
      else
        suspect[r.id] = true
      end
    end
  end
  self.suspect = suspect
  -- Released only when seen untracked twice in a row: a claim or a
  -- create whose answer is still on its way is not released.
  local release, unowned = {}, {}
  for _, id in ipairs(stray) do
    if self.unowned[id] then release[#release + 1] = id end
    unowned[id] = true
  end
  self.unowned = unowned
  if #release > 0 then self.db:exec(RELEASE, self.owner, array(release)) end
  return true
end

-- Bound to the root context: it renews while the process runs, also
-- through a shutdown's grace period (the sleep that the shutdown wakes
-- early only makes one renewal come sooner).
function Pg:renewer()
  while true do
    orrery.sleep(self.renew_every)
    if self.closed then return end
    local ok, e = pcall(self.renew, self)
    if not ok then io.stderr:write("orrery.saga: lease renewal: ", tostring(e), "\n") end
  end
end

-- -- Opening --

local OPEN_OPTS = { lease = true, owner = true, pool = true }

-- open(url, opts, engine, new_id) -> journal | nil, err. engine: the
-- handle of orrery.saga (creates the tables when missing and, on
-- PostgreSQL, renews leases); else the command line's.
function M.open(url, opts, schema, new_id)
  local F = "orrery.saga.journal"
  opts = check.opts(F, opts, OPEN_OPTS, 4, 2)
  check.number_opt(F, opts, "lease", { min = 0, strict = true, what = "positive number of seconds" }, 4)
  if opts.owner ~= nil and (type(opts.owner) ~= "string" or opts.owner == "") then
    check.bad_opt(F, "owner", "non-empty string", opts.owner, 4)
  end
  check.number_opt(F, opts, "pool", { min = 1, max = 1000, int = true, what = "integer from 1 to 1000" }, 4)
  if url:match("^postgres://") or url:match("^postgresql://") then
    return open_pg(url, opts, schema, new_id)
  end
  local path = url:match("^sqlite:(.+)$")
  if not path then
    if url:match("^%a[%w+.-]*://") then return nil, "saga: unsupported journal URL " .. url end
    path = url
  end
  return open_sqlite(url, path, opts, schema)
end

return M
