-- SPDX-License-Identifier: MIT
-- orrery.http.transport -- what the HTTP client's connections run over,
-- and how their errors read (docs/http-client.md). Internal.
--
-- A transport is an object with read(max, timeout), write(data, timeout),
-- fill(timeout), avail(), data(), consume(n), close(), idle(on),
-- buffered(), alive() and take(); plain TCP goes
-- through orrery.net today, and TLS plugs in as transports.https under
-- the same methods, so nothing above this file knows which one a
-- connection talks to.
local net = require "orrery.net"
local ccore = require "orrery.http.client.core"
local ncore = require "orrery.net.core"
local sched = require "orrery.sched"
local C = require "orrery.ffi"

local setmetatable, tostring = setmetatable, tostring
local now = C.orrery_ffi_now
local park, wake_err, PARKED = sched.park, sched.wake_err, sched.PARKED
local core_read, core_write, write_status = ncore.read, ncore.write, ncore.write_status
local hconn_take, hconn_ready = C.orrery_ffi_hconn_take, C.orrery_ffi_hconn_ready
local hconn_avail, hconn_data, hconn_consume =
  C.orrery_ffi_hconn_avail, C.orrery_ffi_hconn_data, C.orrery_ffi_hconn_consume

local M = {}

-- -- Transports --
--
-- transports[scheme](host, ip, port, timeout) -> t | nil, err. read may
-- answer nil, "again" (read again: nothing was there after a wake). idle(on)
-- marks a pooled connection waiting for its next request, which must not
-- keep the process alive; buffered() is the number of bytes read and not
-- consumed; alive() is false once the peer ended the connection. Errors
-- are net's codes ("eof", "reset", "timeout", ...).
local transports = {}
M.transports = transports

local Plain = {}
Plain.__index = Plain
-- read and write are orrery.net's conn:read and conn:write with a
-- timeout (or nil), without the argument checks the client's own calls
-- need not, and two calls less a request.
-- read(max, timeout) -> data | nil, err | nil, "again": woken without a
-- byte to read (a TLS record not yet whole), the caller reads again with
-- its limits taken anew. (So the common read, parked once, reads no
-- clock: the primitive's own timer bounds the wait.)
function Plain:read(max, timeout)
  local c = self.c.c
  local r, e = core_read(c, timeout or -1, max)
  if r ~= PARKED then return r, e end
  local code = park(e)
  if code < 0 then return nil, wake_err(code) end
  if hconn_ready(c) == 0 then return nil, "again" end
  r, e = core_read(c, -1, max)
  return r, e
end
function Plain:write(data, timeout)
  local c = self.c.c
  local r, e, sent = core_write(c, data, timeout or -1)
  if r == PARKED then
    local code = park(e)
    if code < 0 then return nil, wake_err(code), true end
    local ok, err = write_status(c)
    if ok then return ok end
    return nil, err, true
  end
  return r, e, sent
end
-- fill(timeout) -> true when bytes are buffered | nil, err | nil, "again":
-- woken without a byte (a TLS record not yet whole), to be called again
-- with the caller's limits taken anew. avail(), data() and consume(n)
-- are the buffered bytes, which the caller reads in place (FFI calls: no
-- Lua string of them, no end of the JIT's trace).
function Plain:fill(timeout)
  local c = self.c.c
  if hconn_avail(c) > 0 then return true end
  local r, e = core_read(c, timeout or -1, 1) -- nothing buffered: parks or fails
  if r ~= PARKED then
    if r then error("orrery.http: a read without buffered bytes answered data") end
    return nil, e
  end
  local code = park(e)
  if code < 0 then return nil, wake_err(code) end
  if hconn_avail(c) > 0 then return true end
  if hconn_ready(c) == 0 then return nil, "again" end
  r, e = core_read(c, -1, 1) -- the connection ended: its error
  return nil, e
end
function Plain:avail() return hconn_avail(self.c.c) end
function Plain:data() return hconn_data(self.c.c) end
function Plain:consume(n) hconn_consume(self.c.c, n) end
function Plain:close() self.c:close() end
function Plain:idle(on) ccore.idle(self.c.c, on) end
function Plain:buffered() return self.c:buffered() end
function Plain:alive() return ccore.alive(self.c.c) end
-- take() -> true when an idle connection can carry a request: alive, no
-- byte buffered; it is then no longer idle (idle(false)). One FFI call:
-- this runs for every request on a pooled connection.
function Plain:take() return hconn_take(self.c.c) ~= 0 end

function transports.http(host, ip, port, timeout)
  local c, err = net.connect(ip, port, { timeout = timeout })
  if not c then return nil, err end
  return setmetatable({ c = c }, Plain)
end

-- TLS through orrery.net's TLS transport: the certificate is checked
-- against the URL's host (SNI too), with ALPN http/1.1; opts are the
-- client's tls option (ca_file, cert, key, insecure, ...).
function transports.https(host, ip, port, timeout, opts)
  local o = { server_name = host, alpn = { "http/1.1" } }
  if opts then
    for k, v in pairs(opts) do o[k] = v end
  end
  local c, err = net.connect { host = ip, port = port, timeout = timeout, tls = o }
  if not c then return nil, err end
  return setmetatable({ c = c }, Plain)
end

-- -- Errors --

local NET_CODES = { eof = "closed", closed = "closed", reset = "reset", aborted = "reset",
  refused = "refused", unreachable = "refused", timeout = "timeout", canceled = "canceled" }

local function net_err(err)
  if type(err) == "string" and err:sub(1, 3) == "tls" then return err end
  return NET_CODES[err] or ("closed: " .. tostring(err))
end

-- The error of a wait that ended by a timeout: the request's own total
-- or its context's deadline ("timeout"), or one phase's limit.
local function timeout_err(st, phase)
  local ctx = st.ctx
  if (ctx and ctx.e) or (st.deadline and now() >= st.deadline - 1e-3) then return "timeout" end
  return "timeout: " .. phase
end

local function wait_err(st, err, phase)
  if err == "timeout" then return timeout_err(st, phase) end
  if err == "canceled" then
    local ctx = st.ctx
    if ctx and ctx.e == "timeout" then return "timeout" end
    return "canceled"
  end
  return net_err(err)
end

-- The limit of a phase inside the request's deadline: nil for none.
local function limit(t, deadline)
  if deadline then
    local l = deadline - now()
    if l < 0 then l = 0 end
    if not t or l < t then return l end
  end
  return t or nil
end

M.net_err, M.timeout_err, M.wait_err, M.limit = net_err, timeout_err, wait_err, limit

return M
