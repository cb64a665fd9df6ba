-- SPDX-License-Identifier: MIT
-- orrery.net -- TCP and unix-socket streams: connect, listen, accept, read,
-- write and close, each blocking only the calling coroutine.
--
-- host/stream.c, listen.c and dns.c do the I/O (glue in net_lua.c); each
-- call that cannot complete at once parks the coroutine in C and returns
-- false, slot, and this module waits on the scheduler and calls again.
-- Every blocking method takes an optional last argument: a timeout in
-- seconds or a context. Expected failures return
-- nil, err with err one of "eof", "timeout", "canceled", "closed",
-- "refused", "reset", "unreachable", "no_such_host", "too_long", ...
local core = require "orrery.net.core"
local sched = require "orrery.sched"
local C = require "orrery.ffi"

local wait, wait_opt = sched.wait, sched.wait_opt
local now = function() return C.orrery_ffi_now() end
local type, setmetatable, error = type, setmetatable, error
local concat = table.concat

local M = {}

local function wake_err(code)
  if code == -1 or code == -3 then return "timeout" end
  return "canceled"
end
M.wake_err = wake_err

-- Turns (timeout, ctx) into the timeout C should arm now.
local function left(deadline)
  if not deadline then return -1 end
  local l = deadline - now()
  return l > 0 and l or 0
end

local Conn = {}
Conn.__index = Conn
M.Conn = Conn

local function wrap(c)
  return setmetatable({ c = c }, Conn)
end
M.wrap = wrap

-- Calls core function fn(c, a, b, timeout) until it stops parking.
local function run(fname, fn, self, a, b, opt)
  local c = self.c
  local timeout, xctx = -1, nil
  if opt ~= nil then timeout, xctx = wait_opt(fname, 3, opt) end
  local deadline = timeout >= 0 and now() + timeout or nil
  local r, e
  if b == nil then
    if a == nil then r, e = fn(c, timeout) else r, e = fn(c, a, timeout) end
  else
    r, e = fn(c, a, b, timeout)
  end
  while r == false do
    local code = wait(e, xctx)
    if code < 0 then return nil, wake_err(code) end
    if b == nil then
      if a == nil then r, e = fn(c, left(deadline)) else r, e = fn(c, a, left(deadline)) end
    else
      r, e = fn(c, a, b, left(deadline))
    end
  end
  return r, e
end

--- conn:read([max [, timeout|ctx]]) -> data (1..max bytes) | nil, err
function Conn:read(max, opt)
  return run("orrery.net:read", core.read, self, max or 65536, nil, opt)
end

--- conn:read_until(delim [, max [, timeout|ctx]]) -> data ending in delim
function Conn:read_until(delim, max, opt)
  return run("orrery.net:read_until", core.read_until, self, delim, max or 65536, opt)
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
  if r == false then
    local code = wait(e, xctx)
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
  local code = wait(slot)
  if code < 0 then return nil, wake_err(code) end
  return core.resolve_result(d)
end

--- net.connect(host, port [, opts]) or net.connect{ host=, port= | unix=,
-- timeout= } -> conn | nil, err. Names are resolved and each address is
-- tried in turn.
function M.connect(host, port, opts)
  if type(host) == "table" then
    opts = host
    host, port = opts.host, opts.port
  end
  opts = opts or {}
  local timeout = opts.timeout or -1
  local deadline = timeout >= 0 and now() + timeout or nil
  if opts.unix then
    local c, err = core.connect_unix(opts.unix)
    if not c then return nil, err end
    local conn = wrap(c)
    local ok, cerr = run("orrery.net.connect", core.await_connect, conn, nil, nil, deadline and left(deadline))
    if not ok then core.close(c); return nil, cerr end
    return conn
  end
  if type(host) ~= "string" then
    error("orrery.net.connect: bad argument #1 (host expected)", 2)
  end
  if type(port) ~= "number" then
    error("orrery.net.connect: bad argument #2 (port expected)", 2)
  end
  local addrs, err = M.resolve(host, deadline and left(deadline))
  if not addrs then return nil, err end
  for _, ip in ipairs(addrs) do
    local c
    c, err = core.connect_tcp(ip, port)
    if c then
      local conn = wrap(c)
      local ok
      ok, err = run("orrery.net.connect", core.await_connect, conn, nil, nil, deadline and left(deadline))
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

--- net.listen{ host=, port= | unix=, backlog= } -> listener | nil, err.
-- host defaults to "127.0.0.1"; port 0 picks a free port (listener.port).
function M.listen(opts)
  if type(opts) ~= "table" then
    error("orrery.net.listen: bad argument #1 (options table expected)", 2)
  end
  local l, err
  if opts.unix then
    l, err = core.listen_unix(opts.unix, opts.backlog)
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
  local l = self.l
  local xctx
  if opt ~= nil then xctx = select(2, wait_opt("orrery.net:accept", 1, opt)) end
  local r, e = core.accept(l)
  while r == false do
    local code = wait(e, xctx)
    if code < 0 then return nil, wake_err(code) end
    r, e = core.accept(l)
  end
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
