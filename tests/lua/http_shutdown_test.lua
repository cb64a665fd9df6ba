-- SPDX-License-Identifier: MIT
-- http_shutdown_test.lua -- graceful shutdown, close, and the example
-- service run as a child process and stopped with SIGTERM.
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"
local net = require "orrery.net"
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local H = dofile(dir .. "http_helpers.lua")

local function gated()
  local gate, started = orrery.chan(), H.signal()
  local srv = H.start(function(req)
    if req.path == "/wait" then
      started:fire()
      local v, ok, err = gate:recv()
      return 200, "released " .. tostring(v or err)
    end
    return 200, "quick"
  end)
  return srv, gate, started
end

T.test("shutdown finishes a request in flight, closes idle connections, refuses new ones", function()
  local srv, gate, started = gated()
  local idle = H.connect(srv)
  T.eq(H.request(idle, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").body, "quick")
  local busy = H.connect(srv)
  assert(busy:write("GET /wait HTTP/1.1\r\nHost: t\r\n\r\n"))
  started:wait()
  local result = orrery.chan(1)
  orrery.go(function() result:send({ srv:shutdown(5) }) end)
  T.ok(H.closed(idle), "the idle connection is closed")
  idle:close()
  T.eq(select(2, net.connect(srv.host, srv.port, { timeout = 1 })), "refused")
  T.eq(result:try_recv(), nil, "shutdown still waits")
  gate:send("ok")
  local res = H.read_response(busy)
  T.eq(res.status, 200)
  T.eq(res.body, "released ok")
  T.eq(res.headers["connection"], "close")
  T.ok(H.closed(busy))
  busy:close()
  T.eq(result:recv(2), { true })
  T.ok(srv:wait(0))
end)

T.test("shutdown gives up after the grace period and cancels what is left", function()
  local srv, gate, started = gated()
  local busy = H.connect(srv)
  assert(busy:write("GET /wait HTTP/1.1\r\nHost: t\r\n\r\n"))
  started:wait()
  local t0 = orrery.now()
  T.eq({ srv:shutdown(0.1) }, { nil, "timeout" })
  T.ok(orrery.now() - t0 < 2)
  -- The handler's wait was cancelled; its answer may or may not get out,
  -- but the connection ends.
  local res = H.read_response(busy)
  if res then T.eq(res.body, "released canceled") end
  T.ok(H.closed(busy))
  busy:close()
end)

T.test("close stops at once", function()
  local srv, gate, started = gated()
  local busy = H.connect(srv)
  assert(busy:write("GET /wait HTTP/1.1\r\nHost: t\r\n\r\n"))
  started:wait()
  srv:close()
  T.ok(srv:wait(0))
  local res = H.read_response(busy)
  if res then T.eq(res.body, "released canceled") end
  busy:close()
  T.eq(select(2, net.connect(srv.host, srv.port, { timeout = 1 })), "refused")
end)

T.test("a server started inside a context shuts down when it is cancelled", function()
  local ctx, cancel = orrery.context.with_cancel()
  local srv = H.start(function() return 200, "x" end, { ctx = ctx })
  T.eq(H.get(srv, "/").body, "x")
  cancel()
  T.ok(srv:wait(2))
end)

T.test("examples/http_hello.lua serves and stops gracefully on SIGTERM", function()
  local example = dir .. "../../examples/http_hello.lua"
  local p = io.popen("PORT=0 exec " .. T.shquote(T.exe) .. " " .. T.shquote(example) .. " 2>&1")
  local line = p:read("*l") or ""
  local host, port, pid = line:match("listening on http://([%d.]+):(%d+) pid (%d+)")
  T.ok(port, "startup line: " .. line)
  local srv = { host = host, port = tonumber(port) }
  T.eq(H.get(srv, "/").body, "hello world")
  T.eq(require("orrery.json").decode(H.get(srv, "/json").body), { id = 123, status = "ok", items = { 1, 2, 3 } })
  T.eq(H.get(srv, "/hello/ada").body, '{"hello":"ada"}')
  local c = H.connect(srv)
  local res = H.request(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x\r\nContent-Length: 3\r\n\r\nabc")
  T.eq(res.body, "abc")
  T.eq(res.headers["content-type"], "text/x")
  T.ok(res.headers["x-handler-time"])
  -- A request in flight when SIGTERM arrives still gets its answer.
  assert(c:write("GET /sleep/200 HTTP/1.1\r\nHost: t\r\n\r\n"))
  -- Once a later request on another connection is answered, the server
  -- has read the first one (it runs coroutines in FIFO order).
  T.eq(H.get(srv, "/").body, "hello world")
  os.execute("kill -TERM " .. pid)
  res = H.read_response(c)
  T.eq(res and res.status, 200)
  T.eq(res.headers["connection"], "close")
  c:close()
  local rest = p:read("*a")
  p:close()
  T.match(rest, "stopped")
  T.eq(rest:find("Sanitizer", 1, true), nil, "no sanitizer report from the child: " .. rest)
end)
