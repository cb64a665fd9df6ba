-- SPDX-License-Identifier: MIT
-- orrery.http.pool -- the HTTP client's keep-alive pool: per origin, most
-- recently used first, a FIFO queue for a free slot, idle limits and
-- timeouts, and its stats (docs/http-client.md). Internal.
--
-- Counting: p.active is the number of connections of the origin in use or
-- being dialled; a slot freed while requests wait goes straight to the
-- first of them (the count does not drop), and so does a connection that
-- ends an exchange cleanly (it never goes idle in between).
--
-- Records: cl.pools holds one record per origin, with its stats. A record
-- whose origin has no connection (active or idle) and no waiter, and
-- whose last use (p.used: a request that took a connection or ended) is
-- linger() seconds old, is dropped by the sweep, so that a client that
-- calls many origins does not keep one record for each of them forever.
-- Nothing holds a record across a wait while it is empty: a connection
-- counts in active or idle, a waiter in the queue.
local net = require "orrery.net"
local chan = require "orrery.chan"
local transport = require "orrery.http.transport"
local C = require "orrery.ffi"
local ffi = require "ffi"

local pairs, ipairs, tostring, setmetatable = pairs, ipairs, tostring, setmetatable
local remove = table.remove
local ffi_gc = ffi.gc
local now = C.orrery_ffi_now
local transports, net_err, wait_err, limit =
  transport.transports, transport.net_err, transport.wait_err, transport.limit

local M = {}

local Pool = {}
Pool.__index = Pool

local function new_pool(key, t)
  return setmetatable({ key = key, idle = {}, nidle = 0, active = 0,
    waiters = {}, whead = 1, wtail = 0, created = 0, reused = 0, evicted = 0,
    waits = 0, wait_time = 0, used = t }, Pool)
end

local sweep

local function conn_close(cl, conn)
  if conn.closed then return end
  conn.closed = true
  conn.t:close()
end

-- The first waiter still waiting, taken off the queue.
local function next_waiter(p)
  while p.whead <= p.wtail do
    local w = p.waiters[p.whead]
    p.waiters[p.whead] = nil
    p.whead = p.whead + 1
    if not w.gone then return w end
  end
end

-- A slot of the pool was freed (a connection closed while in use): the
-- first waiter gets it, to dial.
local function free_slot(p)
  local w = next_waiter(p)
  if w then
    w.gone = true
    w.ch:try_send(false)
  else
    p.active = p.active - 1
    p.used = now()
  end
end

local function evict_idle(cl, p, i)
  local conn = remove(p.idle, i)
  p.nidle = p.nidle - 1
  cl.nidle = cl.nidle - 1
  p.evicted = p.evicted + 1
  conn_close(cl, conn)
end

-- How long a record outlives its origin's last connection and request:
-- the idle timeout, and at least a second (a client that keeps nothing
-- idle still shows its origins' stats right after their requests).
local function linger(cl)
  local keep = cl.o.idle_timeout or 0
  return keep > 1 and keep or 1
end

-- Closes idle connections past their time, in every pool, and drops the
-- records of origins unused for linger(); at most once a second, from
-- check-ins and from new origins (there is no timer: an idle pool must
-- not keep the process alive).
function sweep(cl, t)
  if t - cl.swept < 1 then return end
  cl.swept = t
  local keep = linger(cl)
  local pools = cl.pools
  for key, p in pairs(pools) do
    local idle = p.idle
    local i = 1
    while i <= #idle do
      if idle[i].expires <= t then evict_idle(cl, p, i) else i = i + 1 end
    end
    if p.active == 0 and p.nidle == 0 and p.whead > p.wtail and t - p.used >= keep then
      pools[key] = nil -- (clearing a field while traversing is allowed)
    end
  end
end

-- key: the origin's, when the caller has it already.
local function pool_of(cl, scheme, host, port, key)
  key = key or (scheme .. "://" .. host .. ":" .. port)
  local p = cl.pools[key]
  if not p then
    local t = now()
    sweep(cl, t)
    p = new_pool(key, t)
    p.scheme, p.host, p.port = scheme, host, port
    cl.pools[key] = p
  end
  return p
end

-- Takes a connection back after an exchange that ended cleanly.
local function checkin(cl, conn)
  local p = conn.pool
  local w = next_waiter(p)
  if w then -- handed over while still active: no idle round trip
    w.gone = true
    w.ch:try_send(conn)
    return
  end
  local t = now()
  sweep(cl, t) -- while p counts this connection: it is not dropped
  p.active = p.active - 1
  p.used = t
  if p.nidle >= cl.o.max_idle_per_host or cl.o.max_idle == 0 then
    p.evicted = p.evicted + 1
    conn_close(cl, conn)
    return
  end
  if cl.nidle >= cl.o.max_idle then -- the least recently used overall goes
    local op, oi, ot
    for _, q in pairs(cl.pools) do
      local c1 = q.idle[1]
      if c1 and (not ot or c1.since < ot) then op, oi, ot = q, 1, c1.since end
    end
    if op then evict_idle(cl, op, oi) end
  end
  -- Let go before the server does: a second before its Keep-Alive
  -- timeout (half of it when that is a second or less), so that a request
  -- does not race the server's close.
  local keep = cl.o.idle_timeout or 0
  local sk = conn.server_keep
  if sk then
    sk = sk > 1 and sk - 1 or sk / 2
    if sk < keep then keep = sk end
  end
  if keep <= 0 then
    p.evicted = p.evicted + 1
    conn_close(cl, conn)
    return
  end
  conn.since, conn.expires = t, t + keep
  -- A C API call, not an FFI one, on purpose: it ends the JIT's trace
  -- here (a stitch), between this response and the caller's next
  -- request, which together are too long a trace for LuaJIT's limits.
  conn.t:idle(true)
  p.nidle = p.nidle + 1
  cl.nidle = cl.nidle + 1
  p.idle[p.nidle] = conn -- the top is the most recently used
end

-- A connection that cannot be reused: closed, its slot freed.
local function discard(cl, conn)
  conn_close(cl, conn)
  free_slot(conn.pool)
end

local function dial(cl, p, st)
  local o = st.o
  local t0 = now()
  local tmo = limit(o.connect_timeout, st.deadline)
  local addrs, err = net.resolve(p.host, tmo)
  if not addrs then
    if err == "timeout" or err == "canceled" then return nil, wait_err(st, err, "connect") end
    return nil, "dns: " .. p.host .. ": " .. tostring(err)
  end
  local mk = transports[p.scheme]
  local t
  for _, ip in ipairs(addrs) do
    local left = tmo and (tmo - (now() - t0)) or nil
    if left and left < 0 then left = 0 end
    t, err = mk(p.host, ip, p.port, left, cl.o.tls)
    if t then break end
    if err == "timeout" or err == "canceled" then return nil, wait_err(st, err, "connect") end
    if err and err:match("^tls") then return nil, err end
  end
  if not t then return nil, net_err(err) end
  p.created = p.created + 1
  local r = C.orrery_ffi_hresp_new(cl.o.max_head_bytes, cl.o.max_fields)
  if r == nil then t:close(); return nil, "closed: out of memory" end
  ffi_gc(r, C.orrery_ffi_hresp_free)
  -- piece, more: the body piece the parser found last, and whether it
  -- may have another event without new bytes (response.lua).
  return { t = t, pool = p, r = r, piece = false, more = false, uses = 0,
    closed = false, since = 0, expires = 0, server_keep = false }
end

-- The most recently used idle connection of p, taken if it can carry a
-- request, else closed (nil).
local function take_idle(cl, p, t)
  local conn = p.idle[p.nidle]
  p.idle[p.nidle] = nil
  p.nidle = p.nidle - 1
  cl.nidle = cl.nidle - 1
  -- Past its time, closed by the server while idle, or with bytes nobody
  -- asked for: not reused.
  if conn.expires <= t or not conn.t:take() then
    p.evicted = p.evicted + 1
    conn_close(cl, conn)
    return nil
  end
  p.active = p.active + 1
  p.reused = p.reused + 1
  return conn
end

-- acquire(cl, p, st, fresh) -> conn, reused | nil, err. Idle connections
-- are taken most recently used first; past the limit per host, callers
-- wait in FIFO order within their deadline.
local function acquire(cl, p, st, fresh)
  local t = now()
  p.used = t
  if not fresh and p.nidle > 0 then
    -- The top one is taken without a loop (usually it is reusable): a
    -- loop that runs once per call is one the JIT aborts its traces on.
    local conn = take_idle(cl, p, t)
    while not conn and p.nidle > 0 do conn = take_idle(cl, p, t) end
    if conn then return conn, true end
  end
  if p.active >= cl.o.max_conns_per_host then
    local w = { ch = chan.internal(1, "http.client pool wait"), gone = false }
    p.wtail = p.wtail + 1
    p.waiters[p.wtail] = w
    local t0 = now()
    local tmo = limit(false, st.deadline)
    local v, ok, err = w.ch:recv(tmo)
    p.waits = p.waits + 1
    p.wait_time = p.wait_time + (now() - t0)
    if not ok then
      w.gone = true
      -- Handed over while the wake was on its way: passed on.
      local v2, ok2 = w.ch:try_recv()
      if ok2 then
        if v2 then checkin(cl, v2) else free_slot(p) end
      end
      return nil, wait_err(st, err or "canceled", "pool")
    end
    if v then -- a connection handed over, still counted active
      p.reused = p.reused + 1
      return v, true
    end
    -- else a slot to dial in: counted active by the one who freed it
  else
    p.active = p.active + 1
  end
  local conn, err = dial(cl, p, st)
  if not conn then
    free_slot(p)
    return nil, err
  end
  return conn, false
end

--- stats(cl) -> { [origin] = { active, idle, waiting, created, reused,
-- evicted, waits, wait_time } }
function M.stats(cl)
  local out = {}
  for key, p in pairs(cl.pools) do
    local waiting = 0
    for i = p.whead, p.wtail do
      if p.waiters[i] and not p.waiters[i].gone then waiting = waiting + 1 end
    end
    out[key] = { active = p.active, idle = p.nidle, waiting = waiting, created = p.created,
      reused = p.reused, evicted = p.evicted, waits = p.waits, wait_time = p.wait_time }
  end
  return out
end

function M.close_idle(cl)
  for _, p in pairs(cl.pools) do
    while p.nidle > 0 do evict_idle(cl, p, p.nidle) end
  end
end

M.pool_of, M.acquire, M.checkin, M.discard = pool_of, acquire, checkin, discard

return M
