-- SPDX-License-Identifier: MIT
-- http_helpers.lua -- raw-socket HTTP client helpers for the server tests
-- (loaded with dofile by tests/lua/http_*_test.lua).
local orrery = require "orrery"
local http = require "orrery.http"
local net = require "orrery.net"

local H = {}

-- start(handler, opts) -> server on 127.0.0.1 with an ephemeral port.
-- Errors logged by the server are collected in srv.logged.
function H.start(handler, opts)
  opts = opts or {}
  local logged = {}
  local o = { host = "127.0.0.1", port = 0, log = function(m) logged[#logged + 1] = m end }
  for k, v in pairs(opts) do o[k] = v end
  local srv = assert(http.listen(handler, o))
  srv.logged = logged
  return srv
end

function H.connect(srv)
  if srv.unix then return assert(net.connect { unix = srv.unix, timeout = 2 }) end
  return assert(net.connect(srv.host, srv.port, { timeout = 2 }))
end

local function parse_head(head)
  local status_line, rest = head:match("^([^\r\n]*)\r\n(.*)$")
  local version, status = status_line:match("^HTTP/(%d%.%d) (%d%d%d)")
  local res = { version = version, status = tonumber(status), head = head, headers = {}, list = {} }
  for name, value in rest:gmatch("([^:\r\n]+): ([^\r\n]*)\r\n") do
    local k = name:lower()
    res.list[#res.list + 1] = { name, value }
    res.headers[k] = res.headers[k] and (res.headers[k] .. ", " .. value) or value
  end
  return res
end

-- read_response(c [, opts]) -> res | nil, err. opts.head: the request was
-- HEAD (no body follows); opts.timeout (default 2 s). Chunked bodies are
-- decoded into res.body and their raw form kept in res.raw_body.
function H.read_response(c, opts)
  opts = opts or {}
  local timeout = opts.timeout or 2
  local head, err = c:read_until("\r\n\r\n", 1048576, timeout)
  if not head then return nil, err end
  local res = parse_head(head)
  local h = res.headers
  if opts.head or res.status == 204 or res.status == 304 or (res.status >= 100 and res.status < 200) then
    res.body = ""
  elseif h["transfer-encoding"] == "chunked" then
    local parts, raw = {}, {}
    while true do
      local line = assert(c:read_until("\r\n", 1024, timeout))
      raw[#raw + 1] = line
      local n = tonumber(line:match("^(%x+)"), 16)
      if n == 0 then
        raw[#raw + 1] = assert(c:read_until("\r\n", 1024, timeout))
        break
      end
      local data = assert(c:readn(n + 2, timeout))
      parts[#parts + 1] = data:sub(1, n)
      raw[#raw + 1] = data
    end
    res.body, res.raw_body = table.concat(parts), table.concat(raw)
  elseif h["content-length"] then
    local n = tonumber(h["content-length"])
    res.body = n > 0 and assert(c:readn(n, timeout)) or ""
  else
    res.body = c:read_all(timeout) -- delimited by the close
  end
  return res
end

-- request(c, raw [, opts]) -> res: writes raw bytes, reads one response.
function H.request(c, raw, opts)
  assert(c:write(raw))
  return H.read_response(c, opts)
end

-- get(srv, path [, headers]) -> res on a fresh connection, closed after.
function H.get(srv, path, extra)
  local c = H.connect(srv)
  local res = assert(H.request(c, "GET " .. path .. " HTTP/1.1\r\nHost: t\r\n" .. (extra or "") .. "\r\n"))
  c:close()
  return res
end

-- closed(c) -> true when the server closes the connection (EOF or a
-- reset) without sending anything more; false, data when bytes arrive.
-- Only for a connection expected to close: the timeout (default 5 s) is a
-- bound for a failing test, never what a passing test waits out.
function H.closed(c, timeout)
  local d, err = c:read(65536, timeout or 5)
  if d then return false, d end
  return err == "eof" or err == "reset", err
end

-- open(c [, path]) -> true, res when the connection still serves requests:
-- it sends GET path (default "/") and reads the answer. false, err when
-- the server closes it instead (EOF or a reset), so that either outcome is
-- an event; a server that does neither fails the test.
function H.open(c, path)
  local ok, err = c:write("GET " .. (path or "/") .. " HTTP/1.1\r\nHost: t\r\n\r\n")
  if not ok then return false, err end
  local res
  res, err = H.read_response(c, { timeout = 5 })
  if res then return true, res end
  if err == "eof" or err == "reset" then return false, err end
  error("the connection neither answered nor closed: " .. tostring(err), 2)
end

-- A signal: s:fire(v), s:wait([timeout]) -> v.
function H.signal()
  local ch = orrery.chan(100)
  return {
    fire = function(_, v) ch:send(v == nil and true or v) end,
    wait = function(_, t)
      local v, ok, err = ch:recv(t or 3)
      if not ok then error("signal not received: " .. tostring(err), 2) end
      return v
    end,
    ch = ch,
  }
end

return H
