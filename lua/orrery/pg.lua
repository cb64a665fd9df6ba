-- SPDX-License-Identifier: MIT
-- orrery.pg -- PostgreSQL on the loop, with group commit (docs/pg.md).
-- host/pg.c drives libpq's asynchronous API in pipeline mode, queues the
-- operations and groups them into transactions; this module checks
-- arguments, resolves host names off the loop, and waits.
local core = require "orrery.pg.core"
local sched = require "orrery.sched"
local check = require "orrery.check"
local dbc = require "orrery.db"
local net = require "orrery.net"

local PARKED = sched.PARKED
local park, wake_err, pack = sched.park, sched.wake_err, sched.pack
local type, error, setmetatable, tostring = type, error, setmetatable, tostring

local M = {}

--- pg.blob(s) -> a parameter that binds s as bytea
M.blob = dbc.blob_fn("orrery.pg.blob")

-- Waits for an operation that core queued (orrery.db).
local wait = dbc.waiter(core)

-- The URL with its password masked, for db:url() and logs.
local function mask(url)
  local s = url:gsub("^(%a[%w+.-]*://)([^@/?]*)@", function(scheme, userinfo)
    local user = userinfo:match("^([^:]*):")
    if user then return scheme .. user .. ":***@" end
    return scheme .. userinfo .. "@"
  end)
  s = s:gsub("([?&]password=)[^&]*", "%1***")
  s = s:gsub("(password%s*=%s*)'[^']*'", "%1***")
  s = s:gsub("(password%s*=%s*)[^%s'*][^%s]*", "%1***")
  return s
end
M.mask = mask

local function split(s)
  local out = {}
  for part in (s .. ","):gmatch("([^,]*),") do out[#out + 1] = part end
  return out
end

-- libpq resolves host names with a blocking getaddrinfo inside
-- PQconnectPoll: names are resolved here instead, on the thread pool
-- (orrery.net), and handed to libpq as hostaddr, one entry per address,
-- keeping host for TLS and the password file. Unix socket directories
-- (a leading '/' or '@') need nothing.
local function resolve(params)
  if params.hostaddr then return true end
  local host = params.host or core.defaults().host
  if not host or host == "" then return true end
  local hosts, ports = split(host), params.port and split(params.port) or nil
  local h_out, a_out, p_out, any = {}, {}, {}, false
  for i, h in ipairs(hosts) do
    local port = ports and (ports[i] or ports[1]) or nil
    if h == "" or h:sub(1, 1) == "/" or h:sub(1, 1) == "@" then
      h_out[#h_out + 1], a_out[#a_out + 1], p_out[#p_out + 1] = h, "", port
    else
      local addrs, err = net.resolve(h)
      if not addrs then return nil, ("pg: cannot resolve %s: %s"):format(h, tostring(err)) end
      for _, a in ipairs(addrs) do
        h_out[#h_out + 1], a_out[#a_out + 1], p_out[#p_out + 1] = h, a, port
        any = true
      end
    end
  end
  if not any then return true end
  params.host = table.concat(h_out, ",")
  params.hostaddr = table.concat(a_out, ",")
  if ports and #ports > 1 then params.port = table.concat(p_out, ",") end
  return true
end

local DB = {}
DB.__index = DB
M.DB = DB

local CONNECT_OPTS = { pool = true, connect_timeout = true, max_batch = true }

--- pg.connect(url [, opts]) -> db | nil, err
function M.connect(url, opts)
  if type(url) ~= "string" then
    error("orrery.pg.connect: bad argument #1 (connection URL or conninfo string expected, got " ..
      check.show(url) .. ")", 2)
  end
  opts = check.opts("orrery.pg.connect", opts, CONNECT_OPTS, 3, 2)
  local npool = check.number_opt("orrery.pg.connect", opts, "pool",
    { min = 1, max = 1000, int = true, what = "integer from 1 to 1000" }, 3) or 4
  local ct = check.number_opt("orrery.pg.connect", opts, "connect_timeout",
    { min = 0, strict = true, what = "positive number" }, 3)
  local mb = check.number_opt("orrery.pg.connect", opts, "max_batch",
    { min = 1, int = true, what = "positive integer" }, 3) or 1024
  local params, err = core.parse(url)
  if not params then return nil, err end
  if not ct then ct = tonumber(params.connect_timeout) end
  if not ct or ct <= 0 then ct = 10 end
  params.fallback_application_name = params.fallback_application_name or "orrery"
  params.client_encoding = params.client_encoding or "UTF8"
  -- GSSAPI negotiation calls into Kerberos, which may block: only when
  -- asked for.
  params.gssencmode = params.gssencmode or "disable"
  local ok, rerr = resolve(params)
  if not ok then return nil, rerr end
  local p = core.new(params, npool, mb, ct)
  local r, slot, u = core.open(p)
  local up, oerr = wait(r, slot, u)
  if not up then
    core.close_now(p)
    return nil, oerr
  end
  return setmetatable({ p = p, masked = mask(url) }, DB)
end

local function check_db(self, fname)
  if getmetatable(self) ~= DB then
    error(fname .. ": bad self (pg handle expected; call it as db:" ..
      fname:match("[%w_]+$") .. "(...))", 3)
  end
end

local function check_sql(fname, sql)
  if type(sql) ~= "string" then
    error(("%s: bad argument #1 (SQL string expected, got %s)"):format(fname, type(sql)), 3)
  end
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

--- db:exec(sql, ...) -> rows, info | nil, err [, sqlstate]
function DB:exec(sql, ...)
  check_db(self, "orrery.pg.exec")
  check_sql("orrery.pg.exec", sql)
  local r, s, u = core.exec(self.p, false, "orrery.pg.exec", sql, ...)
  if r == false then error(s, 2) end
  return wait(r, s, u)
end

--- db:batch{ {sql, ...}, ... } -> results | nil, err [, sqlstate]
function DB:batch(stmts)
  check_db(self, "orrery.pg.batch")
  check_stmts("orrery.pg.batch", stmts)
  local r, s, u = core.batch(self.p, false, "orrery.pg.batch", stmts)
  if r == false then error(s, 2) end
  return wait(r, s, u)
end

-- A context that is never cancelled and is not the root: a coroutine
-- bound to it is woken neither by a cancellation nor by the shutdown's
-- wake of the root's coroutines (see batch_uncancelled).
local hard_ctx

-- db:batch_uncancelled(stmts): db:batch whose wait neither a cancelled
-- context, a deadline nor the shutdown ends: for writes whose caller must
-- know the outcome (internal: orrery.saga's journal). It still returns
-- when the server answers or the connection is lost.
function DB:batch_uncancelled(stmts)
  check_db(self, "orrery.pg.batch")
  check_stmts("orrery.pg.batch", stmts)
  if not hard_ctx then hard_ctx = require("orrery.context").without_cancel(sched.root) end
  return sched.with_ctx(hard_ctx, function()
    local r, s, u = core.batch(self.p, false, "orrery.pg.batch", stmts)
    if r == false then error(s, 0) end
    return wait(r, s, u)
  end)
end

local TX = {}
TX.__index = TX

function TX:exec(sql, ...)
  check_sql("orrery.pg tx:exec", sql)
  local r, s, u = core.exec(nil, self.t, "orrery.pg tx:exec", sql, ...)
  if r == false then error(s, 2) end
  return wait(r, s, u)
end

function TX:batch(stmts)
  check_stmts("orrery.pg tx:batch", stmts)
  local r, s, u = core.batch(nil, self.t, "orrery.pg tx:batch", stmts)
  if r == false then error(s, 2) end
  return wait(r, s, u)
end

--- db:transaction(fn, ...) -> fn's results | nil, err
function DB:transaction(fn, ...)
  check_db(self, "orrery.pg.transaction")
  if not check.callable(fn) then
    error("orrery.pg.transaction: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  local r, s, t = core.begin(self.p)
  if r ~= PARKED then return r, s end
  local code = park(s)
  if code < 0 then
    core.release(t)
    return nil, wake_err(code)
  end
  local ok, err = core.result(t)
  if not ok then
    core.release(t)
    return nil, err
  end
  local tx = setmetatable({ t = t }, TX)
  local res = pack(pcall(fn, tx, ...))
  -- A rollback is queued behind what the transaction still runs and
  -- gives the connection back when done; nobody waits for it.
  if not res[1] then
    core.finish(t, false)
    core.release(t)
    error(res[2], 0)
  end
  if res[2] == nil and res.n >= 3 then
    core.finish(t, false)
    core.release(t)
    return nil, res[3]
  end
  local cr, cs, cu = core.finish(t, true)
  local ok, err, sqlstate = wait(cr, cs, cu)
  core.release(t)
  if not ok then return nil, err, sqlstate end
  return unpack(res, 2, res.n)
end

--- db:close() -> true | nil, err
function DB:close()
  check_db(self, "orrery.pg.close")
  return wait(core.close(self.p))
end

--- db:url() -> the URL it was opened with, its password masked
function DB:url()
  check_db(self, "orrery.pg.url")
  return self.masked
end

--- db:stats() -> { batches, ops, queued, busy, in_tx, conns, connects, closed }
function DB:stats()
  check_db(self, "orrery.pg.stats")
  return core.stats(self.p)
end

M.version = core.version()

return M
