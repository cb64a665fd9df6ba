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

--- conn:write(data [, timeout|ctx]) -> true | nil, err
function Conn:write(data, opt)
  if type(data) ~= "string" then
    error("orrery.net:write: bad argument #1 (string expected, got " .. type(data) .. ")", 2)
  end
  local c = self.c
  local timeout, xctx = -1, nil
  if opt ~= nil then timeout, xctx = wait_opt("orrery.net:write", 2, opt) end
  local r, e = core.write(c, data, timeout)
  if r == PARKED then
    local code = park(e, xctx)
    if code < 0 then return nil, wake_err(code) end
    return core.write_status(c)
  end
  return r, e
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

--- net.connect(host, port [, opts]) or net.connect{ host=, port= | unix=,
-- timeout= } -> conn | nil, err. Names are resolved and each address is
-- tried in turn.
local CONNECT_OPTS = { host = true, port = true, unix = true, timeout = true }
local CONNECT_ARG_OPTS = { timeout = true }
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
  if opts.unix then
    local c, err = core.connect_unix(opts.unix)
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
    c, err = core.connect_tcp(ip, port)
    if c then
      local conn = wrap(c)
      local ok
      ok, err = await(core.await_connect, c, left(deadline))
      if ok then return conn end
      core.close(c)
      if err == "timeout" or err == "canceled" then break end
    end
  end
  return nil, err or "no_such_host"
end

local Listener = {}
Listener.__index = Listener
M.Listener = Listener

--- net.listen{ host=, port= | unix=, mode=, backlog= } -> listener | nil, err.
-- host defaults to "127.0.0.1"; port 0 picks a free port (listener.port).
-- mode (unix sockets): the socket file's permissions, e.g. 384 (0600).
local LISTEN_OPTS = { host = true, port = true, unix = true, backlog = true, mode = true }

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
  if opts.mode ~= nil and (type(opts.mode) ~= "number" or opts.mode % 1 ~= 0
      or opts.mode < 0 or opts.mode > 511 or not opts.unix) then
    error(F .. ": option mode must be file permissions (0 to 511) for a unix socket", 2)
  end
  local l, err
  if opts.unix then
    l, err = core.listen_unix(opts.unix, opts.backlog, opts.mode)
    if not l then return nil, err end
    return setmetatable({ l = l, unix = opts.unix }, Listener)
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
  l, err = core.listen_tcp(host, opts.port or 0, opts.backlog)
  if not l then return nil, err end
  local ip, port = core.laddr(l)
  return setmetatable({ l = l, host = ip, port = port }, Listener)
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

function Listener:close() core.lclose(self.l) end

return M
