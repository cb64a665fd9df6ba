-- SPDX-License-Identifier: MIT
-- orrery.net -- TCP and unix-socket streams: connect, listen, accept, read,
-- write and close, each blocking only the calling coroutine.
--
-- host/stream.c, listen.c and dns.c do the I/O (glue in net_lua.c); each
-- call that cannot complete at once parks the coroutine in C and answers
-- ORRERY_PARKED, slot (the parking protocol, docs/architecture.md); this
-- module waits with sched.park / sched.await and calls again.
-- Every blocking method takes an optional last argument: a timeout in
-- seconds or a context. Expected failures return
-- nil, err with err one of "eof", "timeout", "canceled", "closed",
-- "refused", "reset", "unreachable", "no_such_host", "too_long", ...
local core = require "orrery.net.core"
local sched = require "orrery.sched"
local check = require "orrery.check"
local C = require "orrery.ffi"

local park, await, wait_opt, left = sched.park, sched.await, sched.wait_opt, sched.left
local wake_err, PARKED = sched.wake_err, sched.PARKED
local now = function() return C.orrery_ffi_now() end
local type, setmetatable, error = type, setmetatable, error
local concat = table.concat

local M = {}
M.wake_err = wake_err

local Conn = {}
Conn.__index = Conn
M.Conn = Conn

local function wrap(c)
  return setmetatable({ c = c }, Conn)
end
M.wrap = wrap

-- Runs the retried primitive fn(c, timeout, a, b) with the wait option
-- opt (argument argn of fname: a timeout or a context).
local function run(fname, argn, fn, self, a, b, opt)
  local timeout, xctx = -1, nil
  if opt ~= nil then timeout, xctx = wait_opt(fname, argn, opt) end
  return await(fn, self.c, timeout, xctx, a, b)
end

--- conn:read([max [, timeout|ctx]]) -> data (1..max bytes) | nil, err
function Conn:read(max, opt)
  return run("orrery.net:read", 2, core.read, self, max or 65536, nil, opt)
end

--- conn:read_until(delim [, max [, timeout|ctx]]) -> data ending in delim
function Conn:read_until(delim, max, opt)
  return run("orrery.net:read_until", 3, core.read_until, self, delim, max or 65536, opt)
end

--- conn:readn(n [, timeout|ctx]) -> exactly n bytes | nil, err, partial
function Conn:readn(n, opt)
  local parts, got = {}, 0
  local timeout, xctx = -1, nil
  if opt ~= nil then timeout, xctx = wait_opt("orrery.net:readn", 2, opt) end
  local deadline = timeout >= 0 and now() + timeout or nil
  while got < n do
    local d, err = self:read(n - got, xctx or (deadline and left(deadline)))
    if not d then return nil, err, concat(parts) end
    parts[#parts + 1] = d
    got = got + #d
  end
  return concat(parts)
end

--- conn:read_all([timeout|ctx]) -> everything until the peer closes
function Conn:read_all(opt)
  local parts = {}
  local timeout, xctx = -1, nil
  if opt ~= nil then timeout, xctx = wait_opt("orrery.net:read_all", 1, opt) end
  local deadline = timeout >= 0 and now() + timeout or nil
  while true do
    local d, err = self:read(65536, xctx or (deadline and left(deadline)))
    if not d then
      if err == "eof" then return concat(parts) end
      return nil, err, concat(parts)
    end
    parts[#parts + 1] = d
  end
end

--- conn:write(data [, timeout|ctx]) -> true | nil, err, sent: sent is
-- false when none of data reached the socket (the write failed at once,
-- e.g. on a connection the peer had reset), true when part of it may have.
function Conn:write(data, opt)
  if type(data) ~= "string" then
    error("orrery.net:write: bad argument #1 (string expected, got " .. type(data) .. ")", 2)
  end
  local c = self.c
  local timeout, xctx = -1, nil
  if opt ~= nil then timeout, xctx = wait_opt("orrery.net:write", 2, opt) end
  local r, e, sent = core.write(c, data, timeout)
  if r == PARKED then
    local code = park(e, xctx)
    if code < 0 then return nil, wake_err(code), true end
    local ok, err = core.write_status(c)
    if ok then return ok end
    return nil, err, true
  end
  return r, e, sent
end

--- conn:shutdown(): ends the write side (the peer reads EOF).
function Conn:shutdown() return core.shutdown(self.c) end

--- conn:close([linger]): closes the connection; with linger (seconds) the
-- write side is shut down first and input drained until the peer closes.
function Conn:close(linger) core.close(self.c, linger) end

--- conn:peer() -> ip, port ("unix", 0 for unix sockets)
function Conn:peer() return core.peer(self.c) end
function Conn:local_addr() return core.sockname(self.c) end
function Conn:buffered() return core.buffered(self.c) end

--- conn:peer_cred() -> uid, pid, same_user: who is at the other end of a
-- unix socket, as the kernel says (SO_PEERCRED) | nil, err.
function Conn:peer_cred() return core.peer_cred(self.c) end

function Conn:__tostring()
  local ip, port = core.peer(self.c)
  return ("net.conn (%s:%s)"):format(tostring(ip), tostring(port))
end

local function is_ip(s)
  return s:match("^%d+%.%d+%.%d+%.%d+$") or s:find(":", 1, true)
end

--- net.resolve(host [, timeout]) -> { ip, ... } | nil, err
function M.resolve(host, timeout)
  if type(host) ~= "string" then
    error("orrery.net.resolve: bad argument #1 (string expected)", 2)
  end
  if is_ip(host) then return { host } end
  if host == "localhost" then return { "127.0.0.1", "::1" } end
  local r, slot, d = core.resolve(host, timeout or -1)
  if r == nil then return nil, slot end
  local code = park(slot)
  if code < 0 then return nil, wake_err(code) end
  return core.resolve_result(d)
end

-- -- TLS (host/tls.c; docs/tls.md) --

local CLIENT_TLS_OPTS = { verify = true, insecure = true, ca_file = true, cert = true,
  key = true, server_name = true, alpn = true }
local SERVER_TLS_OPTS = { cert = true, key = true, alpn = true, ca_file = true, verify = true }
-- A server's verify: how it treats client certificates.
local VERIFY_CLIENT = { require = true, optional = true }

local function check_alpn(F, o, level)
  local a = o.alpn
  if a == nil then return end
  local ok = type(a) == "table" and #a > 0
  if ok then
    for _, p in ipairs(a) do
      if type(p) ~= "string" or #p == 0 or #p > 255 then ok = false end
    end
  end
  if not ok then
    error(("%s: bad option 'tls.alpn' (list of protocol names expected)"):format(F), level)
  end
end

local function tls_opts(F, o, known, level)
  if type(o) ~= "table" then
    error(("%s: bad option 'tls' (table expected, got %s)"):format(F, check.show(o)), level)
  end
  for k in pairs(o) do
    if not known[k] then
      error(("%s: unknown option 'tls.%s'"):format(F, tostring(k)), level)
    end
  end
  for _, k in ipairs { "cert", "key", "ca_file", "server_name" } do
    if o[k] ~= nil and type(o[k]) ~= "string" then
      error(("%s: bad option 'tls.%s' (string expected, got %s)"):format(F, k, check.show(o[k])), level)
    end
  end
  for _, k in ipairs { "verify", "insecure" } do
    if o[k] ~= nil and type(o[k]) ~= "boolean" and known == CLIENT_TLS_OPTS then
      error(("%s: bad option 'tls.%s' (boolean expected, got %s)"):format(F, k, check.show(o[k])), level)
    end
  end
  check_alpn(F, o, level + 1)
end

-- A server's configuration from its (checked) options; the files are
-- read again on every reload. A CA file alone means verify = "require".
local function server_cfg(o)
  local vc = o.verify or (o.ca_file and "require") or nil
  return core.tls_new { server = true, cert = o.cert, key = o.key, alpn = o.alpn,
    ca_file = vc and o.ca_file or nil, verify_client = vc }
end

-- Server configurations are made once per listener (and again on
-- SIGHUP); a configuration that cannot be made raises, naming the
-- function and the option.
local function server_tls(F, o, level)
  tls_opts(F, o, SERVER_TLS_OPTS, level + 1)
  if o.cert == nil or o.key == nil then
    error(("%s: option 'tls.%s' is required"):format(F, o.cert == nil and "cert" or "key"), level)
  end
  if o.verify ~= nil then
    if not VERIFY_CLIENT[o.verify] then
      local v = o.verify
      error(("%s: bad option 'tls.verify' (\"require\" or \"optional\" expected, got %s)")
        :format(F, type(v) == "string" and ("%q"):format(v) or check.show(v)), level)
    end
    if o.ca_file == nil then
      error(("%s: option 'tls.verify' needs 'tls.ca_file' (the CAs of client certificates)"):format(F), level)
    end
  end
  local cfg, err = server_cfg(o)
  if not cfg then error(("%s: %s"):format(F, err), level) end
  return cfg
end

-- Client configurations are cached by their settings: loading the system
-- store costs milliseconds, and connections to many hosts share one.
local client_cfgs = {}
local warned_insecure = false

local function client_tls(F, o, level)
  if o == true then o = {} end
  tls_opts(F, o, CLIENT_TLS_OPTS, level + 1)
  local verify = o.verify ~= false and not o.insecure
  if not verify and not warned_insecure then
    warned_insecure = true
    io.stderr:write("orrery.net: warning: TLS certificate verification is off (tls.insecure)\n")
  end
  local key = table.concat({ tostring(verify), o.ca_file or "", o.cert or "", o.key or "",
    o.alpn and table.concat(o.alpn, ",") or "" }, "\0")
  local cfg = client_cfgs[key]
  if not cfg then
    local err
    cfg, err = core.tls_new { verify = verify, ca_file = o.ca_file, cert = o.cert, key = o.key,
      alpn = o.alpn }
    if not cfg then error(("%s: %s"):format(F, err), level) end
    client_cfgs[key] = cfg
  end
  return cfg, o.server_name
end

--- conn:tls_info() -> { protocol, cipher, alpn, server_name, verified,
-- resumed, peer_subject, peer_issuer, peer_serial } | nil, err ("not_tls", or
-- "handshake" while it goes on)
function Conn:tls_info() return core.tls_info(self.c) end

--- net.connect(host, port [, opts]) or net.connect{ host=, port= | unix=,
-- timeout=, tls= } -> conn | nil, err. Names are resolved and each
-- address is tried in turn; with tls the connection is returned once the
-- handshake is done (within the timeout), and TLS failures are
-- nil, "tls: <reason>".
local CONNECT_OPTS = { host = true, port = true, unix = true, timeout = true, tls = true }
local CONNECT_ARG_OPTS = { timeout = true, tls = true }
local SECONDS = { min = -math.huge, inf = true, what = "seconds" } -- < 0: none

function M.connect(host, port, opts)
  local F = "orrery.net.connect"
  if type(host) == "table" then
    opts = check.opts(F, host, CONNECT_OPTS, 3)
    host, port = opts.host, opts.port
    check.type_opt(F, opts, "unix", "string", 3)
    if not opts.unix then
      check.type_opt(F, opts, "host", "string", 3)
      check.port_opt(F, opts, "port", 3)
    end
  else
    opts = check.opts(F, opts, CONNECT_ARG_OPTS, 3, 3)
  end
  local timeout = check.number_opt(F, opts, "timeout", SECONDS, 3) or -1
  local deadline = timeout >= 0 and now() + timeout or nil
  local tls, server_name
  if opts.tls ~= nil and opts.tls ~= false then
    tls, server_name = client_tls(F, opts.tls, 3)
    server_name = server_name or (not opts.unix and host) or nil
  end
  if opts.unix then
    local c, err = core.connect_unix(opts.unix, tls, server_name)
    if not c then return nil, err end
    local conn = wrap(c)
    local ok, cerr = await(core.await_connect, c, left(deadline))
    if not ok then core.close(c); return nil, cerr end
    return conn
  end
  if type(host) ~= "string" then
    error("orrery.net.connect: bad argument #1 (host expected)", 2)
  end
  if not check.is_port(port) then
    error(("orrery.net.connect: bad argument #2 (%s expected, got %s)"):format(check.PORT, check.show(port)), 2)
  end
  local addrs, err = M.resolve(host, deadline and left(deadline))
  if not addrs then return nil, err end
  for _, ip in ipairs(addrs) do
    local c
    c, err = core.connect_tcp(ip, port, tls, server_name)
    if c then
      local conn = wrap(c)
      local ok
      ok, err = await(core.await_connect, c, left(deadline))
      if ok then return conn end
      core.close(c)
      -- A TLS failure is the server's answer, not the address's.
      if err == "timeout" or err == "canceled" or err:sub(1, 4) == "tls:" then break end
    end
  end
  return nil, err or "no_such_host"
end

local Listener = {}
Listener.__index = Listener
M.Listener = Listener

-- TLS listeners, reloaded on SIGHUP (weak: a listener that is collected
-- drops out).
local tls_listeners = setmetatable({}, { __mode = "k" })
local hup_watched = false

local function log_reload(msg)
  io.stderr:write(msg, "\n")
  io.stderr:flush()
end

--- listener:reload_tls() -> true | nil, err: reads the certificate and
-- key files again; connections accepted from now on use them, those
-- already open keep theirs. On failure the old ones stay in use.
function Listener:reload_tls()
  local o = self.tls
  if not o or not self.l then return nil, "not_tls" end
  -- The options were checked when the listener was made.
  local cfg, err = server_cfg(o)
  if not cfg then return nil, err end
  local r
  r, err = core.lset_tls(self.l, cfg)
  if not r then return nil, err end
  self.tls_reloads = (self.tls_reloads or 0) + 1
  return true
end

local function reload_all()
  for lis in pairs(tls_listeners) do
    local ok, err = lis:reload_tls()
    if not ok and err ~= "closed" then
      log_reload(("orrery.net: SIGHUP: keeping the old certificate of %s: %s")
        :format(lis.unix or ((lis.host or "?") .. ":" .. tostring(lis.port)), tostring(err)))
    end
  end
end

--- net.listen{ host=, port= | unix=, mode=, backlog=, tls= } -> listener |
-- nil, err. host defaults to "127.0.0.1"; port 0 picks a free port
-- (listener.port). mode (unix sockets): the socket file's permissions,
-- e.g. 384 (0600). tls = { cert=, key=, alpn=, ca_file=, verify= } makes
-- every accepted connection TLS (with ca_file, verifying client
-- certificates); the files are read again on SIGHUP.
local LISTEN_OPTS = { host = true, port = true, unix = true, backlog = true, tls = true, mode = true }

function M.listen(opts)
  local F = "orrery.net.listen"
  if type(opts) ~= "table" then
    error(("%s: bad argument #1 (options table expected, got %s)"):format(F, type(opts)), 2)
  end
  check.opts(F, opts, LISTEN_OPTS, 3)
  check.type_opt(F, opts, "unix", "string", 3)
  check.type_opt(F, opts, "host", "string", 3)
  check.port_opt(F, opts, "port", 3)
  check.number_opt(F, opts, "backlog", { int = true, strict = true, what = "positive integer" }, 3)
  local lis, err = M._listen(F, opts, 4) -- not a tail call: levels count it
  return lis, err
end

-- The body of net.listen for it and http.listen: F names the public
-- function, level is where its caller is for TLS errors.
function M._listen(F, opts, level)
  if opts.mode ~= nil and (type(opts.mode) ~= "number" or opts.mode % 1 ~= 0
      or opts.mode < 0 or opts.mode > 511 or not opts.unix) then
    error(F .. ": option mode must be file permissions (0 to 511) for a unix socket", level - 1)
  end
  local tls = opts.tls and server_tls(F, opts.tls, level)
  local function made(lis)
    if tls then
      lis.tls = opts.tls
      tls_listeners[lis] = true
      if not hup_watched then
        hup_watched = true
        sched.on_hup(reload_all)
      end
    end
    return lis
  end
  local l, err
  if opts.unix then
    l, err = core.listen_unix(opts.unix, opts.backlog, tls, opts.mode)
    if not l then return nil, err end
    return made(setmetatable({ l = l, unix = opts.unix }, Listener))
  end
  local host = opts.host or "127.0.0.1"
  if host == "localhost" then host = "127.0.0.1" end
  if host == "*" then host = "::" end
  if not is_ip(host) then
    local addrs
    addrs, err = M.resolve(host)
    if not addrs then return nil, err end
    host = addrs[1]
  end
  l, err = core.listen_tcp(host, opts.port or 0, opts.backlog, tls)
  if not l then return nil, err end
  local ip, port = core.laddr(l)
  return made(setmetatable({ l = l, host = ip, port = port }, Listener))
end

--- listener:accept([timeout|ctx]) -> conn | nil, err
function Listener:accept(opt)
  local timeout, xctx = -1, nil
  if opt ~= nil then timeout, xctx = wait_opt("orrery.net:accept", 1, opt) end
  local r, e = await(core.accept, self.l, timeout, xctx)
  if not r then return nil, e end
  return wrap(r)
end

--- listener:addr() -> host, port (or the socket path)
function Listener:addr()
  if self.unix then return self.unix end
  return self.host, self.port
end

function Listener:close()
  tls_listeners[self] = nil
  core.lclose(self.l)
end

return M
