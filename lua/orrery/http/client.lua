-- SPDX-License-Identifier: MIT
-- orrery.http.client -- the HTTP/1.1 client: requests and responses, a
-- keep-alive pool per origin, timeouts and contexts, the retry rule
-- (docs/http-client.md).
--
-- host/http_client.c parses responses (llhttp in response mode, strict);
-- this module owns the policy: options, requests on the wire, the retry
-- rule and redirects. Responses are orrery.http.response, the pool
-- orrery.http.pool; connections run over a transport
-- (orrery.http.transport: plain TCP today, TLS later under the same
-- methods).
local sched = require "orrery.sched"
local context = require "orrery.context"
local check = require "orrery.check"
local pool = require "orrery.http.pool"
local transport = require "orrery.http.transport"
local response = require "orrery.http.response"
local C = require "orrery.ffi"

local type, pairs, ipairs, tostring, tonumber, setmetatable, error, pcall =
  type, pairs, ipairs, tostring, tonumber, setmetatable, error, pcall
local concat = table.concat
local wait_err, limit = transport.wait_err, transport.limit
local pool_of, acquire, discard = pool.pool_of, pool.acquire, pool.discard
local Res, next_event, parse_err, head_res = response.Res, response.next_event, response.parse_err, response.head_res
local read_all, under, guard = response.read_all, response.under, response.guard
local now, co_slot = C.orrery_ffi_now, C.orrery_ffi_co_slot
local hstart = C.orrery_ffi_hresp_start
local EV_HEAD, EV_ERROR, EV_CONTINUE = C.ORRERY_HRESP_HEAD, C.ORRERY_HRESP_ERROR, C.ORRERY_HRESP_CONTINUE

local M = {}

-- orrery.trace's hooks, set by trace.configure(): false without tracing.
M.tracer = false

-- Every wait of a request is bounded by default: the whole exchange by
-- `timeout`, and each phase by its own limit inside it.
M.defaults = {
  timeout = 60,           -- the whole request, body included (false: none)
  connect_timeout = 10,   -- DNS, TCP connect and the TLS handshake
  head_timeout = 30,      -- request written to response head complete (TTFB)
  read_timeout = 30,      -- longest wait for the next bytes of a body
  write_timeout = 30,     -- longest wait for a write to drain
  continue_timeout = 1,   -- wait for 100 Continue, then send the body anyway
  max_conns_per_host = 64,
  max_idle_per_host = 16,
  max_idle = 256,
  idle_timeout = 60,      -- an idle connection is closed after this
  max_head_bytes = 65536, -- status line and fields of a response head
  max_fields = 100,
  max_body_size = 8388608, -- res:body(), res:json() and buffered responses
  follow = 0,             -- redirects followed when > 0
  headers = false,        -- default request fields (a table)
  user_agent = "orrery/0.1",
  tls = false,            -- https: net.connect's tls options (docs/tls.md)
}

local CLIENT_OPTS, REQUEST_OPTS = {}, {
  method = true, url = true, headers = true, body = true, ctx = true, stream = true,
  expect_continue = true,
}
-- metrics: nil records into orrery.metrics' default registry when that
-- module is loaded, false never, a registry there (see observe_of).
CLIENT_OPTS.metrics = true
for k in pairs(M.defaults) do
  CLIENT_OPTS[k] = true
  -- The pool's options, and the parser's limits (set when a connection is
  -- dialled), belong to the client only.
  if k ~= "max_conns_per_host" and k ~= "max_idle_per_host" and k ~= "max_idle"
      and k ~= "idle_timeout" and k ~= "max_head_bytes" and k ~= "max_fields"
      and k ~= "tls" then
    REQUEST_OPTS[k] = true
  end
end

local DEFAULTS_MT = { __index = M.defaults }

local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true, PUT = true, DELETE = true, TRACE = true }

-- -- Options --

local SECONDS = { timeout = true, connect_timeout = true, head_timeout = true,
  read_timeout = true, write_timeout = true, continue_timeout = true, idle_timeout = true }
local COUNTS = { max_conns_per_host = true, max_idle_per_host = true, max_idle = true,
  max_head_bytes = true, max_fields = true, max_body_size = true, follow = true }

-- check_opts(fname, opts, allowed, mt, lv) -> opts copied into a table
-- whose metatable mt supplies the defaults; raises at level lv for an
-- unknown option or a bad value. Only the options given are looked at.
local function check_opts(fname, opts, allowed, mt, lv)
  local o = setmetatable({}, mt)
  if opts == nil then return o end
  if type(opts) ~= "table" then
    error(("%s: bad argument (options table expected, got %s)"):format(fname, type(opts)), lv)
  end
  for k, v in pairs(opts) do
    if not allowed[k] then
      error(("%s: unknown option '%s'"):format(fname, tostring(k)), lv)
    end
    if SECONDS[k] then
      if v ~= false and (type(v) ~= "number" or v ~= v or v < 0) then
        error(("%s: option %s must be seconds or false"):format(fname, k), lv)
      end
    elseif COUNTS[k] then
      if type(v) ~= "number" or v < 0 or v % 1 ~= 0 then
        error(("%s: option %s must be a non-negative integer"):format(fname, k), lv)
      end
    elseif k == "headers" then
      if v ~= false and type(v) ~= "table" then
        error(("%s: option headers must be a table"):format(fname), lv)
      end
    elseif k == "tls" then
      if v ~= false and type(v) ~= "table" then
        error(("%s: option tls must be a table of TLS options (docs/tls.md)"):format(fname), lv)
      end
    elseif k == "ctx" then
      if not context.is_ctx(v) then
        error(("%s: option ctx must be a context"):format(fname), lv)
      end
    elseif k == "metrics" then
      local mm = package.loaded["orrery.metrics"]
      if type(v) ~= "boolean" and not (mm and mm.is_registry(v)) then
        error(("%s: option metrics must be a boolean or a registry"):format(fname), lv)
      end
    end
    o[k] = v
  end
  return o
end

-- -- URLs --

-- parse_url(url) -> scheme, host, port, target | nil, why
local function parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, "absolute http:// or https:// URL expected" end
  scheme = scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then return nil, "unsupported scheme " .. scheme end
  local auth, target = rest:match("^([^/?#]*)(.*)$")
  if auth:find("@", 1, true) then return nil, "user information in URLs is not supported" end
  local host, port = auth:match("^%[([%x:.]+)%]:?(%d*)$")
  if not host then host, port = auth:match("^([^:]+):?(%d*)$") end
  if not host or host == "" then return nil, "no host" end
  if not host:match("^[%w.:_~%%-]+$") then return nil, "bad host" end
  port = port ~= "" and tonumber(port) or (scheme == "https" and 443 or 80)
  if port < 1 or port > 65535 then return nil, "bad port" end
  target = target:gsub("#.*$", "")
  if target == "" then target = "/" end
  if target:sub(1, 1) == "?" then target = "/" .. target end
  if target:find("[%s%c]") then return nil, "whitespace or control character in URL" end
  return scheme, host:lower(), port, target
end
M.parse_url = parse_url

-- A client remembers the URLs it was given, parsed, with their pool's key
-- and the request heads made for them (see build_head), so that a
-- request to a URL seen before parses nothing and builds no string. At
-- most URL_CACHE of them: the cache starts again when it is full.
local URL_CACHE = 256
local function url_entry(cl, url)
  local e = cl.urls[url]
  if e then return e end
  local scheme, host, port, target = parse_url(url)
  if not scheme then return nil, host end
  if cl.nurls >= URL_CACHE then cl.urls, cl.nurls = {}, 0 end
  e = { scheme = scheme, host = host, port = port, target = target,
    key = scheme .. "://" .. host .. ":" .. port }
  cl.urls[url] = e
  cl.nurls = cl.nurls + 1
  return e
end

-- Resolves a Location against the URL it answered.
local function resolve_location(base, loc)
  if loc:match("^%a[%w+.-]*://") then return loc end
  local scheme, auth, path = base:match("^(%a[%w+.-]*)://([^/?#]*)([^?#]*)")
  if loc:sub(1, 2) == "//" then return scheme .. ":" .. loc end
  if loc:sub(1, 1) == "/" then return scheme .. "://" .. auth .. loc end
  local dir = path:match("^(.*/)") or "/"
  return scheme .. "://" .. auth .. dir .. loc
end

-- -- Requests on the wire --

-- Raises at the caller's line (level lv) for a field the client cannot
-- send: a bad name, a value with a line break, or framing fields, which
-- the client sets itself.
local function check_headers(fname, headers, lv)
  if not headers then return end
  for k, v in pairs(headers) do
    if type(k) ~= "string" or k == "" or k:find("[^%w!#$%%&'*+.^_`|~-]") then
      error(("%s: bad header name %s"):format(fname, tostring(k)), lv)
    end
    local l = k:lower()
    if l == "content-length" or l == "transfer-encoding" then
      error(("%s: %s is set by the client"):format(fname, k), lv)
    end
    local vals = type(v) == "table" and v or { v }
    for _, x in ipairs(vals) do
      local tx = type(x)
      if (tx ~= "string" and tx ~= "number") or tostring(x):find("[\r\n%z]") then
        error(("%s: bad value for header %s"):format(fname, k), lv)
      end
    end
  end
end

local function header_lines(out, headers)
  for k, v in pairs(headers) do
    if type(v) == "table" then
      for _, x in ipairs(v) do out[#out + 1] = k .. ": " .. x .. "\r\n" end
    else
      out[#out + 1] = k .. ": " .. v .. "\r\n"
    end
  end
end

-- Methods whose heads are kept per URL (a bounded set: any token is a
-- method).
local HEAD_CACHED = { GET = true, HEAD = true, OPTIONS = true, DELETE = true, POST = true,
  PUT = true, PATCH = true }

-- The request head and how its body goes: "none", "string" (bytes in
-- st.body) or "chunked" (st.source is called for each chunk). A head that
-- depends on the method and URL only (no fields of the request's or the
-- client's, no body, the client's User-Agent) is made once per URL entry.
local function build_head(cl, st)
  local o, method = st.o, st.method
  local ue = st.uent
  local cache = ue and not st.headers and not cl.o.headers and st.body_kind == "none"
    and rawget(o, "user_agent") == nil and HEAD_CACHED[method]
  if cache then
    local h = ue[method]
    if h then return h end
  end
  local out = { method, " ", st.target, " HTTP/1.1\r\n" }
  -- No closure here: creating one is not compiled (NYI FNEW), and this
  -- runs for every request.
  local have = {}
  local defaults, hdrs = cl.o.headers, st.headers -- the client's, the request's
  if hdrs then
    for k in pairs(hdrs) do have[k:lower()] = true end
  end
  if defaults then
    local d = {}
    for k, v in pairs(defaults) do
      local l = k:lower()
      if not have[l] then d[k] = v; have[l] = true end
    end
    header_lines(out, d)
  end
  if hdrs then header_lines(out, hdrs) end
  if not have.host then
    local h = st.host:find(":", 1, true) and ("[" .. st.host .. "]") or st.host
    local dflt = (st.scheme == "https" and 443 or 80)
    out[#out + 1] = "Host: " .. h .. (st.port ~= dflt and (":" .. st.port) or "") .. "\r\n"
  end
  if not have["user-agent"] and o.user_agent then
    out[#out + 1] = "User-Agent: " .. o.user_agent .. "\r\n"
  end
  local kind = st.body_kind
  if kind == "string" then
    out[#out + 1] = "Content-Length: " .. #st.body .. "\r\n"
    if st.json and not have["content-type"] then
      out[#out + 1] = "Content-Type: application/json\r\n"
    end
  elseif kind == "chunked" then
    out[#out + 1] = "Transfer-Encoding: chunked\r\n"
  elseif method == "POST" or method == "PUT" or method == "PATCH" then
    out[#out + 1] = "Content-Length: 0\r\n"
  end
  if st.expect and kind ~= "none" and not have.expect then
    out[#out + 1] = "Expect: 100-continue\r\n"
  end
  out[#out + 1] = "\r\n"
  local head = concat(out)
  if cache then ue[method] = head end
  return head
end

-- st.wrote: some of the request may be on the wire. A write that failed
-- at once put nothing there (sent == false: the socket took none of it),
-- which leaves a request that can be retried whatever its method.
local function write(st, conn, data)
  local ok, err, sent = conn.t:write(data, limit(st.o.write_timeout, st.deadline))
  if not ok then
    if sent ~= false then st.wrote = true end
    return nil, wait_err(st, err, "write")
  end
  st.wrote = true
  return true
end

local function send_body(st, conn)
  if st.body_kind == "string" then
    if #st.body > 0 then return write(st, conn, st.body) end
    return true
  end
  local src = st.source
  while true do
    local chunk, serr = src()
    if chunk == nil then
      if serr ~= nil then return nil, "canceled: body source failed: " .. tostring(serr) end
      return write(st, conn, "0\r\n\r\n")
    end
    if type(chunk) ~= "string" then
      return nil, "canceled: body source returned a " .. type(chunk)
    end
    if #chunk > 0 then
      local ok, err = write(st, conn, ("%x\r\n"):format(#chunk) .. chunk .. "\r\n")
      if not ok then return nil, err end
    end
  end
end

-- -- One exchange --

-- A write that failed because the server stopped reading: it may have
-- answered first (a 413 for a body too large, a 401); that answer is then
-- the result, on a connection that is not reused. Returns the event of
-- the final head, or nil to report the write error.
local function early_answer(st, conn, werr)
  local code = werr:match("^(%a+)")
  if code ~= "closed" and code ~= "reset" then return nil end
  for _ = 1, 2 do -- a 100 Continue may come first
    local ev = next_event(st, conn, "response head", 0)
    if ev == EV_HEAD then
      st.no_reuse = true
      return ev
    end
    if ev ~= EV_CONTINUE then return nil end
  end
end

-- Sends the body once the wait for 100 Continue is over: nothing when it
-- went out, else the early answer the server sent (ev) or the error.
local function body_after_continue(st, conn)
  local ok, err = send_body(st, conn)
  if ok then return nil, nil end
  local ev = early_answer(st, conn, err)
  if ev then return ev end
  return nil, err
end

-- exchange(st, conn) -> res | nil, err: writes the request on conn and
-- reads the head of its final response (and, unless streaming, its body).
local function exchange(st, conn)
  local o = st.o
  hstart(conn.r, st.method == "HEAD" and 1 or 0)
  st.finished, st.no_reuse, st.ended_err = false, false, false
  local head = build_head(st.cl, st)
  local ok, err
  local kind = st.body_kind
  local waiting_continue = st.expect and kind ~= "none"
  if kind == "string" and not waiting_continue and #st.body <= 65536 then
    ok, err = write(st, conn, head .. st.body)
  else
    ok, err = write(st, conn, head)
    if ok and kind ~= "none" and not waiting_continue then ok, err = send_body(st, conn) end
  end
  local ev
  if not ok then
    ev = early_answer(st, conn, err)
    if not ev then return nil, err end
    waiting_continue = false
  else
    local tmo = o.head_timeout
    while true do
      if waiting_continue then
        ev, err = next_event(st, conn, "response head", o.continue_timeout or tmo)
        if not ev and err:match("^timeout: ") then
          -- No 100 Continue in time: the body goes anyway (RFC 9110 10.1.1).
          waiting_continue = false
          ev, err = body_after_continue(st, conn)
          if ev then break end
          if err then return nil, err end
          ev, err = next_event(st, conn, "response head", tmo)
        end
      else
        ev, err = next_event(st, conn, "response head", tmo)
      end
      if ev ~= EV_CONTINUE then break end
      if waiting_continue then
        waiting_continue = false
        ev, err = body_after_continue(st, conn)
        if ev then break end
        if err then return nil, err end
      end
    end
  end
  if ev == EV_ERROR then return nil, parse_err(conn.r) end
  if ev ~= EV_HEAD then return nil, err end
  if waiting_continue then st.no_reuse = true end -- a final answer before the body
  local r = conn.r
  local res = head_res(st, conn)
  -- A stream without a body (HEAD, 204, 304, Content-Length: 0) is read
  -- to its end at once, so that its connection does not wait for a
  -- res:read() that nobody has a reason to call.
  if not st.stream or r.content_length == 0 then
    local b
    b, err = read_all(res, o.max_body_size)
    if not b then return nil, err end
    res._buffered, res._whole = b, b
  else
    -- A stream dropped unfinished would hold its connection (and its
    -- slot in the pool) for good: its collection closes it.
    res._guard = guard(st, conn)
  end
  return res
end

local function retryable(st, reused, err)
  if not reused or st.retried then return false end
  local code = err:match("^(%a+)")
  if code ~= "closed" and code ~= "reset" then return false end
  if not st.wrote then return true end
  return st.idempotent and not st.got and st.body_kind ~= "chunked"
end

-- attempt(cl, p, st, fresh) -> res | nil, err, reused: one exchange on a
-- connection of p (fresh: a new one).
local function attempt(cl, p, st, fresh)
  local conn, reused = acquire(cl, p, st, fresh)
  if not conn then return nil, reused, false end -- reused: the error
  st.wrote, st.got = false, false
  -- Only a body function can raise in an exchange: without one there is
  -- no pcall, whose frame ends the traces that return into it (NYI:
  -- return to lower frame).
  local ok, res, err
  if st.body_kind == "chunked" then
    ok, res, err = pcall(exchange, st, conn)
  else
    ok, res, err = true, exchange(st, conn)
  end
  if not ok then -- a body function raised: the connection goes too
    if not st.finished then
      st.finished = true
      discard(cl, conn)
    end
    error(res, 0)
  end
  if res then return res end
  if not st.finished then
    st.finished = true
    discard(cl, conn)
  end
  return nil, err, reused
end

-- send(cl, st) -> res | nil, err: the request to st's URL, with the retry
-- rule (once, on a new connection). Neither this nor do_request loops: a
-- loop that runs once per request is one the JIT aborts its traces on.
local function send(cl, st)
  local p = pool_of(cl, st.scheme, st.host, st.port, st.uent and st.uent.key)
  st.retried = false
  local res, err, reused = attempt(cl, p, st, false)
  if res then return res end
  if not retryable(st, reused, err) then return nil, err end
  st.retried = true
  res, err = attempt(cl, p, st, true)
  return res, err
end

-- do_request(cl, st) -> res | nil, err: one request with the retry rule
-- and redirects (each one a call of its own).
local function do_request(cl, st, redirects)
  redirects = redirects or 0
  local res, err = send(cl, st)
  if not res then return nil, err end
  local s = res.status
  -- (Fields are looked at only for a redirect that may be followed.)
  local loc = redirects < (st.o.follow or 0)
    and (s == 301 or s == 302 or s == 303 or s == 307 or s == 308)
    and rawget(res.headers, "location")
  if not loc then
    res.redirects = redirects
    return res
  end
  if st.stream then res:close() end
  local url = resolve_location(st.url, loc)
  local scheme, host, port, target = parse_url(url)
  if not scheme then return nil, "bad_response: bad Location: " .. host end
  if st.scheme == "https" and scheme == "http" then
    return nil, "bad_response: redirect from https to http refused"
  end
  if s == 303 or ((s == 301 or s == 302) and st.method == "POST") then
    if st.method ~= "HEAD" then st.method = "GET" end
    st.body_kind, st.body, st.source = "none", nil, nil
  elseif st.body_kind == "chunked" then
    res.redirects = redirects
    return res -- a streamed body cannot be sent again
  end
  if host ~= st.host or port ~= st.port or scheme ~= st.scheme then
    -- Credentials go to the origin they were meant for only.
    local h = {}
    for k, v in pairs(st.headers or {}) do
      local l = k:lower()
      if l ~= "authorization" and l ~= "cookie" and l ~= "host" then h[k] = v end
    end
    st.headers = h
  end
  st.url, st.scheme, st.host, st.port, st.target = url, scheme, host, port, target
  st.uent = false
  st.idempotent = IDEMPOTENT[st.method] or st.idempotent
  res, err = do_request(cl, st, redirects + 1)
  return res, err
end

-- -- Observability --
--
-- A client's observer, made at its first request: the metric families it
-- records into (orrery.metrics.http_client), or false when it records
-- nothing.

local function observer(cl)
  local m = rawget(cl.o, "metrics")
  local mod = package.loaded["orrery.metrics"]
  local mx = false
  if m ~= false and (m ~= nil or mod) then
    mod = mod or require "orrery.metrics"
    mx = mod.http_client(m ~= true and m or nil)
  end
  local obs = mx and { mx = mx, hosts = {} } or false
  cl.obs = obs
  return obs
end

-- The host label of a request: the URL's host, with its port unless it is
-- the scheme's default; kept per host and port so that a request builds
-- no string.
local function host_label(obs, st)
  local byport = obs.hosts[st.host]
  if not byport then
    byport = {}
    obs.hosts[st.host] = byport
  end
  local l = byport[st.port]
  if not l then
    local h = st.host:find(":", 1, true) and ("[" .. st.host .. "]") or st.host
    l = st.port == (st.scheme == "https" and 443 or 80) and h or (h .. ":" .. st.port)
    byport[st.port] = l
  end
  return l
end

local function err_code(err)
  return type(err) == "string" and err:match("^([%a_]+)") or "error"
end

-- do_request, recorded: the status label is the final response's status,
-- or the error's stable code ("timeout", "refused", ...) when there is
-- none. Method and host are the request's as made, before redirects.
local function observed(obs, cl, st)
  local method, host = st.method, host_label(obs, st)
  local t0 = now()
  local res, err = under(st, do_request, cl, st)
  local mx = obs.mx
  mx.requests:inc(1, method, host, res and res.status or err_code(err))
  mx.duration:observe(now() - t0, method, host)
  return res, err
end

-- -- Clients --

local Client = {}
Client.__index = Client
M.Client = Client

local function body_of(fname, body, lv)
  local t = type(body)
  if body == nil then return "none" end
  if t == "string" then return "string", body end
  if t == "table" then return "string", require("orrery.json").encode(body), true end
  if check.callable(body) then return "chunked", nil, false, body end
  error(("%s: bad option 'body' (string, table or function expected, got %s)"):format(fname, t), lv)
end

-- request(cl, fname, opts, lv): lv is the error level of the user's line
-- for an error raised here.
-- A shorthand without options passes its method, url (a string) and body
-- as smethod, surl, sbody, and opts nil: the request's options are then
-- the client's own (cl.ro, shared: options are never written).
local METHOD_OK, nmethods = {}, 0
local function request(cl, fname, opts, lv, smethod, surl, sbody)
  local o, url, method, body_opt
  if opts == nil and smethod then
    o, url, method, body_opt = cl.ro, surl, smethod, sbody
  else
    if type(opts) ~= "table" then
      error(("%s: bad argument #1 (options table expected, got %s)"):format(fname, type(opts)), lv)
    end
    o = check_opts(fname, opts, REQUEST_OPTS, cl.omt, lv + 1)
    url = rawget(o, "url")
    if type(url) ~= "string" then error(fname .. ": option url (a string) is required", lv) end
    method = rawget(o, "method") or "GET"
    body_opt = rawget(o, "body")
  end
  if not METHOD_OK[method] then
    if type(method) ~= "string" or not method:match("^[%u%d!#$%%&'*+.^_`|~-]+$") then
      error(fname .. ": bad option 'method'", lv)
    end
    if nmethods < 64 then METHOD_OK[method], nmethods = true, nmethods + 1 end
  end
  local ue, uerr = url_entry(cl, url)
  if not ue then error(("%s: bad url %q (%s)"):format(fname, url, uerr), lv) end
  local scheme, host, port, target = ue.scheme, ue.host, ue.port, ue.target
  if co_slot() == 0 then error(fname .. ": not inside a coroutine", lv) end
  local kind, body, is_json, source = body_of(fname, body_opt, lv + 1)
  local headers = rawget(o, "headers")
  check_headers(fname, headers, lv + 1)
  local idem = IDEMPOTENT[method] or false
  if headers then
    for k in pairs(headers) do
      if type(k) == "string" and k:lower() == "idempotency-key" then idem = true end
    end
  end
  local xctx = rawget(o, "ctx") or false
  local ctx = xctx or sched.current_ctx()
  local t = o.timeout
  local st = { cl = cl, o = o, method = method, url = url, scheme = scheme, host = host,
    port = port, target = target, headers = headers, body_kind = kind, body = body,
    json = is_json, source = source, idempotent = idem, stream = rawget(o, "stream") or false,
    expect = rawget(o, "expect_continue") or false, ctx = ctx, bind = xctx,
    deadline = t and (now() + t) or false, wrote = false, got = false, finished = false,
    uent = ue }
  local err = ctx.e
  if err then return nil, err == "timeout" and "timeout" or "canceled" end
  local obs = cl.obs
  if obs == nil then obs = observer(cl) end
  local tr = M.tracer
  if tr and not cl.untraced then
    local span = tr.client_start(st)
    local res, rerr
    if obs then res, rerr = observed(obs, cl, st) else res, rerr = under(st, do_request, cl, st) end
    tr.client_finish(span, res, rerr)
    return res, rerr
  end
  if obs then
    local res, rerr = observed(obs, cl, st)
    return res, rerr
  end
  return under(st, do_request, cl, st)
end

--- c:request{ method=, url=, headers=, body=, ... } -> res | nil, err
-- The public functions do not tail-call: a tail call would drop their
-- frame, and misuse errors would name a line above the caller's.
function Client:request(opts)
  check.self(self, Client, "client:request", "client")
  local res, err = request(self, "orrery.http.request", opts, 3)
  return res, err
end

local function shorthand(cl, fname, method, url, body, opts)
  if type(url) ~= "string" then
    error(("%s: bad argument #1 (url expected, got %s)"):format(fname, type(url)), 3)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: bad options (table expected, got %s)"):format(fname, type(opts)), 3)
  end
  if opts == nil then -- nothing to check: method and url are known options
    local res, err = request(cl, fname, nil, 4, method, url, body)
    return res, err
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.method, o.url = method, url
  if body ~= nil then o.body = body end
  local res, err = request(cl, fname, o, 4)
  return res, err
end

function Client:get(url, opts)
  check.self(self, Client, "client:get", "client")
  local res, err = shorthand(self, "orrery.http.get", "GET", url, nil, opts)
  return res, err
end

function Client:post(url, body, opts)
  check.self(self, Client, "client:post", "client")
  local res, err = shorthand(self, "orrery.http.post", "POST", url, body, opts)
  return res, err
end

--- c:stats() -> { [origin] = { active, idle, waiting, created, reused,
-- evicted, waits, wait_time } }
function Client:stats()
  check.self(self, Client, "client:stats", "client")
  return pool.stats(self)
end

--- c:close_idle(): closes every idle connection.
function Client:close_idle()
  check.self(self, Client, "client:close_idle", "client")
  pool.close_idle(self)
end

function Client:__tostring()
  return "http client"
end

--- http.client{ ... } -> client with its own pool and defaults
function M.client(opts)
  local o = check_opts("orrery.http.client", opts, CLIENT_OPTS, DEFAULTS_MT, 3)
  check_headers("orrery.http.client", rawget(o, "headers"), 3)
  local omt = { __index = o }
  local c = setmetatable({ o = o, omt = omt, ro = setmetatable({}, omt), pools = {}, nidle = 0,
    swept = 0, urls = {}, nurls = 0 }, Client)
  return c
end

local default
local function default_client()
  default = default or M.client()
  return default
end
M.default_client = default_client

function M.request(opts)
  local res, err = request(default_client(), "orrery.http.request", opts, 3)
  return res, err
end
function M.get(url, opts)
  local res, err = shorthand(default_client(), "orrery.http.get", "GET", url, nil, opts)
  return res, err
end
function M.post(url, body, opts)
  local res, err = shorthand(default_client(), "orrery.http.post", "POST", url, body, opts)
  return res, err
end

M.Res = Res
M.transports = transport.transports

--- http.err_code(err) -> the stable code of an error ("timeout", ...)
function M.err_code(err)
  return type(err) == "string" and err:match("^([%a_]+)") or nil
end

return M
