-- SPDX-License-Identifier: MIT
-- orrery.http.server -- the HTTP/1.1 server: listeners, one coroutine per
-- connection, request objects, response encoding, graceful shutdown.
--
-- host/http_server.c parses requests (llhttp, strict) and frames responses;
-- this module owns the policy: handler calls, errors, timeouts, limits on
-- connections, logging and shutdown (docs/http.md).
local hcore = require "orrery.http.core"
local common = require "orrery.http.common"
local net = require "orrery.net"
local sched = require "orrery.sched"
local context = require "orrery.context"
local chan = require "orrery.chan"
local check = require "orrery.check"
local C = require "orrery.ffi"
local ffi = require "ffi"

local park, await_code, bind = sched.park, sched.await_code, sched.bind
local hrespond, hheader, hbody, hread = hcore.respond, hcore.header, hcore.body, hcore.read
local hstart, hchunk, hfinish, hwstatus = hcore.start, hcore.chunk, hcore.finish, hcore.write_status
local http_next, http_respond = C.orrery_ffi_http_next, C.orrery_ffi_http_respond
local ffi_string, ffi_cast = ffi.string, ffi.cast
-- The parking protocol (host/ffi_cdef.h): respond() is done, declined
-- (a status it cannot send, nothing written) or parked; next() is parked
-- or done with a head, an error already answered, or the end.
local CODE_SHUTDOWN = C.ORRERY_HTTP_SHUTDOWN
local PARKED, NEXT_HEAD, NEXT_ERROR = C.ORRERY_PARKED, C.ORRERY_HTTP_HEAD, C.ORRERY_HTTP_ERROR
local W_DONE, W_PARKED, W_BAD_STATUS = C.ORRERY_DONE, C.ORRERY_PARKED, C.ORRERY_DECLINED
local METHODS = hcore.methods()
local type, pcall, xpcall, tostring, setmetatable, getmetatable, error =
  type, pcall, xpcall, tostring, setmetatable, getmetatable, error
local traceback = debug.traceback
local co_slot, now = C.orrery_ffi_co_slot, C.orrery_ffi_now

local M = {}

-- orrery.trace's hooks, set by trace.configure(): false without tracing.
M.tracer = false

local TEXT = "text/plain; charset=utf-8"
local JSON = "application/json"

M.defaults = {
  host = "0.0.0.0",
  port = 8080,
  backlog = 511,
  max_header_bytes = 16384,
  max_uri_length = 8192,
  max_headers = 100,
  max_body_size = 1048576,
  max_connections = 4096,
  read_header_timeout = 10,
  read_body_timeout = 30,
  write_timeout = 30,
  idle_timeout = 60,
  handler_timeout = false,
  shutdown_timeout = 4,
  linger = 2,
  -- On: one orrery.log info line per request (docs/http.md, Logging).
  access_log = true,
}

-- Errors with a status and status lines live in orrery.http.common,
-- which the router shares.
local HttpError = common.HttpError
M.HttpError = HttpError
M.error = common.error
M.status_text = common.status_text

local json
local function json_mod()
  if json == nil then
    local ok, m = pcall(require, "orrery.json")
    json = ok and m or false
  end
  return json
end

-- -- Requests --

local Req = {}
M.Req = Req
local EMPTY = setmetatable({}, { __newindex = function() error("req.params is read-only here", 2) end })

local unescape = common.unescape
M.unescape = unescape

local function parse_query(qs)
  local q, all = {}, {}
  for pair in qs:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = unescape((k:gsub("+", " ")))
    v = unescape((v:gsub("+", " ")))
    if q[k] == nil then q[k] = v end
    local l = all[k]
    if l then l[#l + 1] = v else all[k] = { v } end
  end
  return q, all
end
M.parse_query = parse_query

-- A request table holds what changes per request; what is the same for
-- every request of a connection (remote, remote_port, _c) is read from the
-- connection's state (_st), so that the table stays small: it is built for
-- every request.
local conn_fields = { remote = "remote", remote_port = "rport", _c = "c" }
local tls_of = setmetatable({}, { __mode = "k" }) -- conn state -> req.tls

local req_mt = {
  __index = function(r, k)
    local m = Req[k]
    if m ~= nil then return m end
    local cf = conn_fields[k]
    if cf then return r._st[cf] end
    if k == "headers" then
      local h = hcore.headers(r._st.c, r._seq)
      r.headers = h
      return h
    elseif k == "query" then
      local q, all = parse_query(r.raw_query)
      r.query, r._qall = q, all
      return q
    elseif k == "params" then
      return EMPTY
    elseif k == "tls" then
      -- The connection's TLS (docs/tls.md), the same for all its
      -- requests: looked up once, kept outside the connection's state
      -- table (which stays at eight fields).
      local st = r._st
      local t = tls_of[st]
      if t == nil then
        t = net.wrap(st.c):tls_info() or false
        tls_of[st] = t
      end
      return t or nil
    end
  end,
  __tostring = function(r) return ("http request %s %s"):format(r.method, r.path) end,
}
M.req_mt = req_mt

--- req:header(name) -> value (repeated fields joined with ", ") | nil
function Req:header(name)
  return hheader(self._st.c, self._seq, name)
end

--- req:header_values(name) -> { value, ... }
function Req:header_values(name)
  return hcore.header_values(self._st.c, self._seq, name)
end

--- req:query_all(name) -> { value, ... }
function Req:query_all(name)
  local _ = self.query
  return self._qall[name] or {}
end

-- A body call: C answers its own timeout and cancellation (the
-- connection cannot be reused after either).
local function body_call(self, fn)
  return await_code(fn, self._st.c, self._seq)
end

--- req:body() -> the whole body (at most max_body_size bytes) | nil, err
-- err: "too_large", "timeout", "closed" or "bad_request".
function Req:body()
  local b = self._body
  if b then return b end
  local err
  b, err = body_call(self, hbody)
  if b then self._body = b end
  return b, err
end

--- req:set_body_limit(bytes): the most body this request may have, in
-- place of the server's max_body_size (routes set it with their
-- max_body_size option). A larger limit than the server allows for any
-- route is capped to that. Reading a body over the limit fails with
-- "too_large" and the connection is closed afterwards.
function Req:set_body_limit(bytes)
  if type(bytes) ~= "number" or bytes < 0 or bytes ~= bytes then
    error(("bad argument #1 to 'set_body_limit' (non-negative number expected, got %s)")
      :format(type(bytes) == "number" and tostring(bytes) or type(bytes)), 2)
  end
  hcore.body_limit(self._st.c, self._seq, bytes)
end

--- req:read() -> the next piece of the body | nil at its end | nil, err
function Req:read()
  return body_call(self, hread)
end

local body_status = { too_large = 413, timeout = 408, bad_request = 400, closed = 400 }

-- req:_with_timeout(secs, fn) -> ok, status, body, headers: fn(req) under
-- a deadline (call_with_timeout); how the router runs a route's timeout
-- without depending on this module.
function Req:_with_timeout(secs, fn)
  return M.call_with_timeout(self, secs, fn)
end

-- Whether the client's Accept header allows a JSON answer: it lists
-- application/json, a +json type, application/* or */* with a non-zero
-- q. Without an Accept header the answer stays text/plain.
local function accepts_json(req)
  local accept = req:header("Accept")
  if not accept then return false end
  for part in accept:lower():gmatch("[^,]+") do
    local mt = part:match("^%s*([^;%s]+)")
    local q = tonumber(part:match(";%s*q%s*=%s*([%d.]+)")) or 1
    if mt and q > 0 and (mt == "application/json" or mt == "application/*" or mt == "*/*"
      or mt:find("^application/[^/]*%+json$")) then
      return true
    end
  end
  return false
end
M.accepts_json = accepts_json

-- Raises the http error of req:json(): { "error": msg } as JSON when the
-- client accepts it, else msg as text.
local function json_error(req, status, msg)
  if accepts_json(req) and json_mod() then M.error(status, { error = msg }) end
  M.error(status, msg .. "\n")
end

--- req:json() -> the decoded body; raises an http error (400, 413, 408)
-- when the body cannot be read or is not JSON, answered as JSON
-- ({"error": "..."}) when the client's Accept allows it.
function Req:json()
  local b, err = self:body()
  if not b then json_error(self, body_status[err] or 400, "cannot read the request body: " .. err) end
  local j = json_mod()
  if not j then error("orrery.http: orrery.json is not available", 2) end
  local v, jerr = j.decode(b)
  if v == nil and jerr then json_error(self, 400, "invalid JSON: " .. jerr) end
  return v
end

-- -- Logging --

-- Without a log option a server's messages (handler errors, accept
-- failures) are orrery.log error lines, rate-limited there; with one, the
-- user's function gets them as strings.
local logmod = require "orrery.log"
local default_log = logmod.http_log

-- The log function of a server: the user's (a function, checked with the
-- options), falling back to orrery.log if it raises (a log call must
-- never take a connection or the server down).
local function safe_log(fn)
  if fn == nil then return default_log end
  return function(msg)
    local ok, err = pcall(fn, msg)
    if not ok then
      default_log(msg)
      default_log("http: the log function failed: " .. tostring(err))
    end
  end
end

-- A handler's error: through orrery.log, with the request's method,
-- path, route and the traceback as fields, rate-limited on the error's
-- location; or the user's log function, as one string.
local function log_handler_error(srv, what, req, msg)
  if srv.user_log then
    srv.log(("http: %s: %s %s: %s"):format(what, req.method, req.path, tostring(msg)))
  else
    logmod.handler_error(what, req, msg)
  end
end

local function json_str(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(ch)
    return ch == '"' and '\\"' or ch == "\\" and "\\\\" or ("\\u%04x"):format(ch:byte())
  end) .. '"'
end

local function access_line(req, status, bytes, dur)
  return ('{"ts":%.3f,"remote":%s,"method":%s,"path":%s,"status":%d,"bytes":%d,"duration_ms":%.3f}')
    :format(os.time() + (C.orrery_ffi_now() % 1), json_str(req.remote), json_str(req.method),
      json_str(req.path), status, bytes, dur * 1000)
end

-- -- Responses --

-- Waits for a response write that was queued; false on failure
-- (write_timeout or a cancellation: the caller closes).
local function await_write(c, r, e)
  if r == PARKED then
    if park(e) < 0 then return false end
    r = hwstatus(c)
  end
  return r ~= nil and r ~= false
end

local function stream(srv, st, c, req, status, fn, headers, flags)
  local ok, r, e = pcall(hstart, c, status, headers, TEXT, flags)
  if not ok then return false, r end
  if not await_write(c, r, e) then return false end
  local bytes = 0
  local function write(data)
    if type(data) ~= "string" then
      if data == nil then return true end
      data = tostring(data)
    end
    local wr, we = hchunk(c, data)
    if wr == PARKED then
      if not await_write(c, wr, we) then return nil, "closed" end
    elseif not wr then
      return nil, we
    end
    bytes = bytes + #data
    return true
  end
  local okf, ferr = xpcall(fn, traceback, write)
  if not okf then
    log_handler_error(srv, "streaming handler error", req, ferr)
    st.abort = true -- the body is cut short: the client must see the close
    return true, bytes
  end
  r, e = hfinish(c)
  if not await_write(c, r, e) then return false end
  return true, bytes
end

local function send(srv, st, c, req, status, body, headers)
  local flags = srv.closing and 1 or 0
  local ctype
  local bt = type(body)
  if bt == "string" then
    ctype = TEXT
  elseif bt == "table" then
    local j = json_mod()
    if not j then return false, "orrery.http: table bodies need orrery.json" end
    local err
    body, err = j.try_encode(body)
    if not body then return false, err end
    ctype = JSON
  elseif bt == "function" then
    return stream(srv, st, c, req, status, body, headers, flags)
  elseif body ~= nil then
    body = tostring(body)
    ctype = TEXT
  end
  local n = body and #body or 0
  if headers == nil and type(status) == "number" then
    -- The common case goes through the FFI: no table to walk.
    local r = http_respond(st.h, status, body, n, ctype, flags)
    if r == W_DONE then return true, n end
    if r == W_PARKED then return await_write(c, PARKED, st.slot), n end
    if r ~= W_BAD_STATUS then return false, n end
  end
  local ok, r, e = pcall(hrespond, c, status, body, headers, ctype, flags)
  if not ok then return false, r end
  return await_write(c, r, e), n
end

local function internal_error(srv, req, msg)
  log_handler_error(srv, "handler error", req, msg)
end

local function show(v)
  if type(v) == "string" then return ("%q"):format(#v > 40 and v:sub(1, 40) .. "..." or v) end
  if type(v) == "number" then return tostring(v) end
  return type(v)
end

-- What is wrong with a handler's status, or nil: a status is an integer
-- from 100 to 599 (a string in first place is a body, but one that reads
-- like a status, followed by more values, is a status returned as a
-- string by mistake).
local function bad_status(status, body)
  local ts = type(status)
  if ts == "number" then
    if status >= 100 and status <= 599 and status % 1 == 0 then return nil end
    return ("returned status %s: an integer from 100 to 599 expected"):format(show(status))
  elseif ts == "string" and body ~= nil and status:find("^%s*%d%d%d%s*$") then
    return ("returned status %s as a string, then a %s: return the status as a number")
      :format(show(status), type(body))
  end
  return nil
end

-- The route label of a request that no router route matched (a plain
-- handler, a 404, a redirect): one series, whatever the path.
local UNMATCHED = "unmatched"

-- Records a finished request in the server's metrics (srv.mx: the
-- families of orrery.metrics.http_server). The label values are the
-- strings the request already holds (method, route pattern) and the
-- status number, which the families' label tables find without building
-- a key: nothing is allocated once a series exists.
local function record(mx, req, status, dur)
  local method, route = req.method, req.route or UNMATCHED
  mx.requests:inc(1, method, route, status)
  mx.duration:observe(dur, method, route)
  mx.active:dec()
end

-- Calls the handler and writes its response. Returns false when the
-- connection cannot be used again.
local function handle(srv, st, c, req)
  local mx = srv.mx
  local t0 = (mx or srv.access_log) and now()
  if mx then mx.active:inc() end
  local tr = M.tracer
  local span = tr and not srv.untraced and tr.server_start(srv, req)
  local ok, status, body, headers
  local tmo = srv.handler_timeout
  if tmo then
    ok, status, body, headers = M.call_with_timeout(req, tmo, srv.handler)
  else
    ok, status, body, headers = xpcall(srv.handler, traceback, req)
  end
  if not ok then
    local err = status
    if getmetatable(err) == HttpError then
      status, body, headers = err.status, err.body, err.headers
      if body == nil then body = (M.status_text(status) or "Error") .. "\n" end
    elseif req.ctx.e == "timeout" then
      status, body, headers = 503, "Service Unavailable: request timeout\n", nil
    else
      internal_error(srv, req, err)
      status, body, headers = 500, "Internal Server Error\n", nil
    end
  end
  local bad = bad_status(status, body)
  if bad then
    internal_error(srv, req, "handler " .. bad)
    status, body, headers = 500, "Internal Server Error\n", nil
  end
  local ts = type(status)
  if ts ~= "number" then
    if status == nil then
      status = 200
    elseif ts == "string" or ts == "table" or ts == "function" then
      status, body, headers = 200, status, body
    else
      internal_error(srv, req, "handler returned a " .. ts .. " status")
      status, body, headers = 500, "Internal Server Error\n", nil
    end
  end
  local sent, bytes = send(srv, st, c, req, status, body, headers)
  if sent == false and type(bytes) == "string" then
    -- Encoding failed before anything was written (bad header, status or
    -- JSON value): answer 500 instead, saying what the handler returned.
    internal_error(srv, req, ("handler returned an unusable response (status %s, body %s, headers %s): %s")
      :format(show(status), show(body), show(headers), bytes))
    sent, bytes = send(srv, st, c, req, 500, "Internal Server Error\n", nil)
    status = 500
  end
  if span then tr.server_finish(span, req, status) end
  if t0 then
    local dur = now() - t0
    if mx then record(mx, req, status, dur) end
    local al = srv.access_log
    if al == true then
      logmod.access(req, status, bytes or 0, dur)
    elseif al then
      local line = access_line(req, status, bytes or 0, dur)
      local aok, aerr = pcall(al, line, req, status, bytes or 0)
      if not aok then srv.log("http: access_log: " .. tostring(aerr)) end
    end
  end
  return sent
end

--- call_with_timeout(req, secs, fn) -> ok, status, body, headers: runs
-- fn(req) with req.ctx replaced by a child context that expires after secs
-- (and the coroutine bound to it, so every wait inside honours it).
function M.call_with_timeout(req, secs, fn)
  local slot = co_slot()
  local octx = req.ctx
  local ctx, cancel = context.with_timeout(secs, octx)
  local old = bind(slot, ctx)
  req.ctx = ctx
  local ok, s, b, h = xpcall(fn, traceback, req)
  bind(slot, old)
  req.ctx = octx
  if not ok and ctx.e == "timeout" and getmetatable(s) ~= HttpError then
    cancel()
    return false, M.error_timeout()
  end
  cancel()
  return ok, s, b, h
end

function M.error_timeout()
  return setmetatable({ status = 503, body = "Service Unavailable: request timeout\n" }, HttpError)
end

-- -- Connections --

local live = {} -- conn id -> state, for disconnect notices from C
local next_id = 0

sched.handlers.http_gone = function(id)
  local st = live[id]
  if st and st.cancel then st.cancel() end
end

-- Serves the requests of one connection until it cannot be used again.
-- Raises only on an internal error: handler errors are caught in handle.
local function conn_loop(srv, st, c, h, ctx, slot)
  local code = 0
  while true do
    if srv.closing and code >= 0 then code = CODE_SHUTDOWN end
    local r = http_next(h, code)
    if r == PARKED then
      code = park(slot)
    elseif r == NEXT_HEAD then
      code = 0
      local buf, path, query = h.buf, "/", ""
      if h.path_len > 0 then path = ffi_string(buf + h.path_off, h.path_len) end
      if h.has_query ~= 0 then query = ffi_string(buf + h.query_off, h.query_len) end
      -- route: the router's pattern, set when one matches (false, not
      -- absent: a store in the table's own slot, and a hit when read).
      local req = setmetatable({ method = METHODS[h.method], path = path, raw_query = query,
        version = h.minor == 1 and "1.1" or "1.0", _seq = h.seq, _st = st, ctx = ctx,
        route = false }, req_mt)
      if not handle(srv, st, c, req) or st.abort or ctx.e then return end
    else
      if r == NEXT_ERROR and srv.on_bad_request then
        pcall(srv.on_bad_request, h.status, ffi_string(h.reason), st.remote)
      end
      return
    end
  end
end

local function serve_conn(srv, c, id, ctx, cancel)
  local slot = co_slot()
  local st = { c = c, ctx = ctx, cancel = cancel, slot = slot, h = false, abort = false,
    remote = false, rport = false }
  live[id] = st
  srv.conns[id] = st
  local ok, h = pcall(hcore.attach, c, srv.cfg, id)
  local err
  if ok then
    h = ffi_cast("orrery_http_head *", h)
    st.h = h
  else
    err = h
  end
  local remote, rport = net.wrap(c):peer()
  st.remote, st.rport = remote, rport
  if ok then
    -- One protected call per connection, not per request: a trace that
    -- starts inside a pcall cannot return through it, so a per-request
    -- pcall would leave the rest of every response to the interpreter.
    local lok, lerr = pcall(conn_loop, srv, st, c, h, ctx, slot)
    if not lok then
      st.abort = true
      -- A bug in the server's own code: handler errors are caught and
      -- logged with their request in handle(). (The state table keeps to
      -- eight fields, its hash part's size, for idle connections' sake.)
      srv.log("http: internal error: " .. tostring(lerr))
    end
  end
  if not ok then srv.log("http: " .. tostring(err)) end
  live[id] = nil
  srv.conns[id] = nil
  srv.nconns = srv.nconns - 1
  if srv.mx then srv.mx.connections:dec() end
  hcore.close(c, (st.abort or ctx.e) and 0 or srv.linger)
  cancel()
  if srv.closing and srv.nconns == 0 and not srv.drained_ch:closed() then
    srv.drained_ch:close()
  end
end

-- A context outside the root's subtree. SIGINT/SIGTERM cancel the root
-- context at once, while a server drains its in-flight requests during
-- the grace period: the server's own contexts therefore hang from here.
local function detached()
  return context.with_cancel(context.without_cancel(context.background()))
end
M.detached = detached

local function accept_loop(srv)
  local lis = srv.lis
  while not srv.closing do
    local conn, err = lis:accept()
    if srv.closing then
      if conn then conn:close() end
      return
    end
    if conn then
      local c = conn.c
      if srv.nconns >= srv.max_connections then
        hcore.reject(c, 503)
        conn:close(1)
      else
        srv.nconns = srv.nconns + 1
        if srv.mx then srv.mx.connections:inc() end
        next_id = next_id + 1
        if next_id > 0x7fffffff then next_id = 1 end
        local ctx, cancel = context.with_cancel(srv.base)
        sched.spawn(ctx, serve_conn, srv, c, next_id, ctx, cancel)
      end
    elseif srv.closing then
      return
    else
      srv.log("http: accept: " .. tostring(err))
      if err == "closed" then return end
      sched.with_ctx(srv.ctl, require("orrery.time").sleep, 0.1)
    end
  end
end

-- -- Servers --

local Server = {}
Server.__index = Server
M.Server = Server

-- Options beyond M.defaults.
local KNOWN = { unix = true, log = true, ctx = true, background = true, on_bad_request = true,
  tls = true, metrics = true, trace = true }
for k in pairs(M.defaults) do KNOWN[k] = true end
local COUNT = { min = 1, int = true, what = "positive integer" }
local SECONDS = { what = "seconds or false" }

-- The options merged over M.defaults, checked. Errors name the caller of
-- the public function (serve or listen) that called start(), which calls
-- this: level 5 for orrery.check's checks.
local function check_opts(F, opts)
  local L = 5
  check.opts(F, opts, KNOWN, L, 2)
  local o = {}
  for k, v in pairs(M.defaults) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  check.type_opt(F, o, "host", "string", L)
  check.port_opt(F, o, "port", L)
  check.type_opt(F, o, "unix", "string", L)
  check.number_opt(F, o, "backlog", COUNT, L)
  for _, k in ipairs { "max_header_bytes", "max_uri_length", "max_headers", "max_body_size",
    "max_connections" } do
    if o[k] == nil then check.bad_opt(F, k, COUNT.what, nil, L) end
    check.number_opt(F, o, k, COUNT, L)
  end
  for _, k in ipairs { "read_header_timeout", "read_body_timeout", "write_timeout",
    "idle_timeout", "handler_timeout", "shutdown_timeout", "linger" } do
    if o[k] ~= false then check.number_opt(F, o, k, SECONDS, L) end
  end
  if o.log ~= nil and type(o.log) ~= "function" then
    error(F .. ": option log must be a function", L - 1)
  end
  local al = o.access_log
  if type(al) ~= "boolean" and type(al) ~= "function" then
    error(("%s: bad option 'access_log' (boolean or function expected, got %s)"):format(F, type(al)), L - 1)
  end
  check.func_opt(F, o, "on_bad_request", L)
  if o.ctx ~= nil and not context.is_ctx(o.ctx) then
    error(("%s: bad option 'ctx' (context expected, got %s)"):format(F, type(o.ctx)), L - 1)
  end
  check.type_opt(F, o, "background", "boolean", L)
  check.type_opt(F, o, "trace", "boolean", L)
  local mo = o.metrics
  if mo ~= nil and type(mo) ~= "boolean" then
    local mm = package.loaded["orrery.metrics"]
    if not (mm and mm.is_registry(mo)) then
      error(("%s: bad option 'metrics' (boolean or registry expected, got %s)"):format(F, type(mo)), L - 1)
    end
  end
  if o.tls ~= nil then
    check.type_opt(F, o, "tls", "table", L)
    -- HTTP/1.1 is what this server speaks: say so in ALPN.
    local t = {}
    for k, v in pairs(o.tls) do t[k] = v end
    if t.alpn == nil then t.alpn = { "http/1.1" } end
    o.tls = t
  end
  return o
end

local function to_handler(F, h)
  if type(h) == "function" then return h end
  if type(h) == "table" and type(h.handler) == "function" then return h:handler() end
  local mt = getmetatable(h)
  if mt and mt.__call then return function(req) return h(req) end end
  error(F .. ": bad argument #1 (handler function or router expected)", 4)
end

-- The metric families a server records into, or false: with metrics =
-- nil, when orrery.metrics is loaded (the service uses metrics, or the
-- admin listener), in its default registry; true loads it; a registry
-- records there; false turns them off.
local function metrics_of(o)
  local m = o.metrics
  if m == false then return false end
  local mod = package.loaded["orrery.metrics"]
  if m == nil and not mod then return false end
  mod = mod or require "orrery.metrics"
  return mod.http_server(m ~= true and m or nil)
end

-- Starts serving for http.listen and http.serve (F names which).
local function start(F, handler, opts)
  local fn = to_handler(F, handler)
  local o = check_opts(F, opts)
  -- A router's routes may allow bodies larger than max_body_size: the
  -- head of a request is checked against the largest limit.
  local route_max = type(handler) == "table" and rawget(handler, "max_route_body") or 0
  local cfg = {
    max_header_bytes = o.max_header_bytes, max_uri_length = o.max_uri_length,
    max_headers = o.max_headers, max_body_size = o.max_body_size,
    max_route_body_size = math.max(o.max_body_size, tonumber(route_max) or 0),
    read_header_timeout = o.read_header_timeout or 0, read_body_timeout = o.read_body_timeout or 0,
    idle_timeout = o.idle_timeout or 0, write_timeout = o.write_timeout or 0,
  }
  -- TLS errors (bad certificate or key) raise at the caller of
  -- http.listen / http.serve: level 5 counted from net's server_tls.
  local lis, err = net._listen(F, { host = o.host, port = o.port, unix = o.unix,
    backlog = o.backlog, tls = o.tls }, 5)
  if not lis then return nil, err end
  local base, cancel_base = detached()
  local ctl, cancel_ctl = detached()
  local srv = setmetatable({
    -- Fields read per request are false rather than absent: a hit, not a
    -- miss that goes on to the metatable.
    lis = lis, handler = fn, cfg = cfg, opts = o, conns = {}, nconns = 0, closing = false,
    max_connections = o.max_connections, handler_timeout = o.handler_timeout or false,
    linger = o.linger or 0, access_log = o.access_log or false, log = safe_log(o.log),
    user_log = o.log ~= nil,
    on_bad_request = o.on_bad_request, mx = metrics_of(o), untraced = o.trace == false,
    base = base, cancel_base = cancel_base, ctl = ctl, cancel_ctl = cancel_ctl,
    done_ch = chan.new(0, "http.server done"), drained_ch = chan.new(0, "http.server drained"),
    host = lis.host, port = lis.port, unix = o.unix,
  }, Server)
  sched.spawn(base, accept_loop, srv)
  -- Shut down gracefully when the given context (the caller's by default,
  -- so SIGTERM's root context) is cancelled.
  local watch = o.ctx or sched.current_ctx()
  sched.spawn(ctl, function()
    chan.select { watch:done():recv_case(), srv.done_ch:recv_case() }
    if not srv.closing then srv:shutdown(o.shutdown_timeout) end
  end)
  return srv
end

--- http.listen(handler_or_router, opts) -> server | nil, err: starts
-- serving in the background and returns at once.
function M.listen(handler, opts)
  local srv, err = start("orrery.http.listen", handler, opts)
  return srv, err
end

--- http.serve(handler_or_router, opts) -> server: serves until the server
-- is shut down (SIGTERM, server:shutdown() from another coroutine); with
-- opts.background it returns at once like http.listen.
function M.serve(handler, opts)
  local srv, err = start("orrery.http.serve", handler, opts)
  if not srv then error("orrery.http.serve: cannot listen: " .. tostring(err), 2) end
  if opts and opts.background then return srv end
  srv:wait()
  if M.tracer then M.tracer.server_stopped() end
  return srv
end

--- server:addr() -> host, port (or the unix socket path)
function Server:addr()
  if self.unix then return self.unix end
  return self.host, self.port
end

-- Blocks the calling coroutine on ch under the server's control context,
-- which SIGTERM does not cancel.
local function ctl_recv(self, ch, timeout)
  return sched.with_ctx(self.ctl, function()
    local deadline = timeout and C.orrery_ffi_now() + timeout
    while true do
      local left = deadline and deadline - C.orrery_ffi_now()
      if left and left <= 0 then return false end
      local _, ok, err = ch:recv(left)
      if err == "closed" or ok then return true end
      if err == "timeout" then return false end
    end
  end)
end

--- server:wait([timeout]) -> true once the server has stopped
function Server:wait(timeout)
  if self.stopped then return true end
  return ctl_recv(self, self.done_ch, timeout)
end

local function stop_listening(self)
  if not self.closing then
    self.closing = true
    self.lis:close()
  end
end

local function finish(self)
  if not self.stopped then
    self.stopped = true
    self.cancel_base()
    if not self.done_ch:closed() then self.done_ch:close() end
    self.cancel_ctl()
  end
end

--- server:shutdown([grace]) -> true | nil, "timeout": stops accepting,
-- closes idle connections, lets requests in flight finish (answered with
-- Connection: close) and waits for them up to grace seconds (default
-- opts.shutdown_timeout); after that, remaining connections are closed.
function Server:shutdown(grace)
  if self.stopped then return true end
  if self.closing then
    self:wait()
    return true
  end
  grace = grace or self.opts.shutdown_timeout or 5
  stop_listening(self)
  if self.nconns == 0 then self.drained_ch:close() end
  for _, st in pairs(self.conns) do
    if hcore.state(st.c) == "idle" then
      C.orrery_ffi_wake(st.slot, C.orrery_ffi_co_token(st.slot), CODE_SHUTDOWN)
    end
  end
  local ok = ctl_recv(self, self.drained_ch, grace)
  if not ok then
    self.cancel_base() -- wakes every handler still waiting
    ctl_recv(self, self.drained_ch, 1)
  end
  finish(self)
  if ok then return true end
  return nil, "timeout"
end

--- server:close(): stops at once: in-flight requests are cancelled and
-- every connection is closed.
function Server:close()
  if self.stopped then return end
  stop_listening(self)
  if self.nconns == 0 and not self.drained_ch:closed() then self.drained_ch:close() end
  self.cancel_base()
  ctl_recv(self, self.drained_ch, 1)
  finish(self)
end

function Server:connections() return self.nconns end

return M
