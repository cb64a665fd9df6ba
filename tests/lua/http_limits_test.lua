-- SPDX-License-Identifier: MIT
-- http_limits_test.lua -- strict framing rejections, size limits, timeouts
-- and client disconnects.
local T = require "orrery.test"
local orrery = require "orrery"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

-- A server that counts the requests its handler saw.
local function counting(opts)
  local seen = { n = 0 }
  local srv = H.start(function(req)
    seen.n = seen.n + 1
    seen.last = req.path
    if req.method == "POST" then
      local b, err = req:body()
      if not b then return 499, err end
      return 200, b
    end
    return 200, "ok " .. req.path
  end, opts)
  return srv, seen
end

local SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"

local rejections = {
  { "Content-Length with Transfer-Encoding",
    "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
  { "duplicate Content-Length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx" },
  { "differing Content-Length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy" },
  { "malformed Content-Length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc" },
  { "Content-Length list", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc" },
  { "Transfer-Encoding not chunked", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n" },
  { "chunked not last", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n" },
  { "chunked twice", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
  { "Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
  { "invalid chunk size", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" },
  { "bad chunk terminator", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n" },
  { "chunk size overflow", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n" },
  { "obs-fold", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  folded\r\n\r\n" },
  { "whitespace before colon", "GET / HTTP/1.1\r\nHost : t\r\n\r\n" },
  { "missing Host", "GET / HTTP/1.1\r\n\r\n" },
  { "repeated Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" },
  { "control character in a value", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\1b\r\n\r\n" },
  { "DEL in a value", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\127b\r\n\r\n" },
  { "bare LF", "GET / HTTP/1.1\nHost: t\n\n" },
  { "bare CR", "GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n" },
  { "fragment in target", "GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n" },
  { "relative target", "GET a/b HTTP/1.1\r\nHost: t\r\n\r\n" },
  { "garbage", "\22\3\1\0\1\0\0\0" },
}

T.test("malformed framing is answered with 400 and nothing after it is routed", function()
  local srv, seen = counting()
  for _, case in ipairs(rejections) do
    local c = H.connect(srv)
    assert(c:write(case[2] .. SMUGGLED))
    local res, err = H.read_response(c)
    T.ok(res, case[1] .. ": " .. tostring(err))
    T.eq(res.status, 400, case[1])
    T.eq(res.headers["connection"], "close", case[1])
    T.ok(H.closed(c), case[1] .. ": connection closed")
    c:close()
  end
  T.eq(seen.n, 0, "no request reached the handler")
  -- The server is still healthy.
  T.eq(H.get(srv, "/after").body, "ok /after")
  srv:close()
end)

T.test("other rejections: 505, 501, 417", function()
  local srv, seen = counting()
  local cases = {
    { "GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505 },
    { "GET / HTTP/0.9\r\nHost: t\r\n\r\n", 505 },
    { "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501 },
    { "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501 },
    { "GET / HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\n\r\n", 417 },
  }
  for _, case in ipairs(cases) do
    local c = H.connect(srv)
    local res = H.request(c, case[1] .. SMUGGLED)
    T.eq(res.status, case[2], case[1])
    T.ok(H.closed(c))
    c:close()
  end
  T.eq(seen.n, 0)
  srv:close()
end)

T.test("size limits: 414, 431, 413", function()
  local srv, seen = counting { max_uri_length = 100, max_header_bytes = 1024, max_headers = 10,
    max_body_size = 64 }
  local function try(raw)
    local c = H.connect(srv)
    local res = assert(H.request(c, raw))
    T.ok(H.closed(c))
    c:close()
    return res.status
  end
  T.eq(try("GET /" .. ("a"):rep(100) .. " HTTP/1.1\r\nHost: t\r\n\r\n"), 414)
  T.eq(try("GET / HTTP/1.1\r\nHost: t\r\nX-Big: " .. ("b"):rep(1100) .. "\r\n\r\n"), 431)
  local many = {}
  for i = 1, 11 do many[#many + 1] = "X-" .. i .. ": v\r\n" end
  T.eq(try("GET / HTTP/1.1\r\nHost: t\r\n" .. table.concat(many) .. "\r\n"), 431)
  T.eq(try("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 65\r\n\r\n"), 413)
  T.eq(seen.n, 0)
  -- At the limits everything passes.
  local c = H.connect(srv)
  local res = H.request(c, "GET /" .. ("a"):rep(98) .. " HTTP/1.1\r\nHost: t\r\n\r\n")
  T.eq(res.status, 200)
  res = H.request(c, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 64\r\n\r\n" .. ("x"):rep(64))
  T.eq(res.status, 200)
  -- A chunked body over the limit sent with its head: 413 before routing.
  res = H.request(c, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" ..
    ("y"):rep(64) .. "\r\n1\r\nz\r\n0\r\n\r\n")
  T.eq(res.status, 413)
  T.ok(H.closed(c))
  c:close()
  -- Sent after the handler asked for it: the handler sees "too_large".
  c = H.connect(srv)
  T.eq(H.request(c, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n" ..
    "Expect: 100-continue\r\n\r\n").status, 100)
  res = H.request(c, "40\r\n" .. ("y"):rep(64) .. "\r\n1\r\nz\r\n0\r\n\r\n")
  T.eq(res.status, 499)
  T.eq(res.body, "too_large")
  T.eq(res.headers["connection"], "close")
  c:close()
  T.eq(seen.n, 3)
  srv:close()
end)

T.test("per-route body limits: larger and smaller than the server's", function()
  local http = require "orrery.http"
  local r = http.router()
  local function echo(req)
    local b, err = req:body()
    if not b then return 413, err end
    return 200, ("%d bytes"):format(#b)
  end
  r:post("/small", echo)                                 -- the server's 64
  r:post("/upload", echo, { max_body_size = 1000 })
  r:post("/tiny", echo, { max_body_size = 8 })
  r:post("/json", function(req) return 200, { got = req:json() } end, { max_body_size = 8 })
  local srv = H.start(r, { max_body_size = 64 })
  local function post(path, body, chunked)
    local c = H.connect(srv)
    local raw
    if chunked then
      raw = ("POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n")
        :format(path, #body, body)
    else
      raw = ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"):format(path, #body, body)
    end
    local res = assert(H.request(c, raw))
    local closed = not H.open(c)
    c:close()
    return res.status, res.body, closed
  end
  local x = function(n) return ("x"):rep(n) end
  T.eq({ post("/small", x(64)) }, { 200, "64 bytes", false })
  -- Routes allow up to 1000 bytes: the head passes, the handler's read
  -- fails at the server's limit.
  T.eq({ post("/small", x(65)) }, { 413, "too_large", true })
  T.eq({ post("/upload", x(1000)) }, { 200, "1000 bytes", false })
  T.eq({ post("/upload", x(1000), true) }, { 200, "1000 bytes", false })
  T.eq((post("/upload", x(1001))), 413)  -- over every route's limit: before routing
  T.eq({ post("/tiny", x(8)) }, { 200, "8 bytes", false })
  -- Over the route's limit: the handler's read fails, the connection closes.
  T.eq({ post("/tiny", x(9)) }, { 413, "too_large", true })
  T.eq({ post("/tiny", x(30), true) }, { 413, "too_large", true })
  T.eq({ post("/json", '{"a":1}') }, { 200, '{"got":{"a":1}}', false })
  T.eq((post("/json", '{"a":12345}')), 413)
  -- The server's limit still applies to routes without their own.
  T.eq({ post("/small", x(100), true) }, { 413, "too_large", true })
  T.raises(function() r:post("/bad", echo, { max_body_size = "1k" }) end, "bad max_body_size")
  srv:close()
end)

T.test("req:set_body_limit from middleware, and its argument check", function()
  local http = require "orrery.http"
  local r = http.router()
  r:use(function(req, nxt)
    if req:header("x-trusted") then req:set_body_limit(16) else req:set_body_limit(4) end
    return nxt(req)
  end)
  r:post("/", function(req)
    local b, err = req:body()
    return 200, b or err
  end)
  r:get("/check", function(req)
    local ok, err = pcall(req.set_body_limit, req, "big")
    return 200, tostring(ok) .. " " .. err
  end)
  local srv = H.start(r, { max_body_size = 64 })
  local c = H.connect(srv)
  local res = H.request(c, "POST / HTTP/1.1\r\nHost: t\r\nX-Trusted: 1\r\nContent-Length: 10\r\n\r\n0123456789")
  T.eq(res.body, "0123456789")
  res = H.request(c, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789")
  T.eq(res.body, "too_large")
  T.ok(H.closed(c))
  c:close()
  c = H.connect(srv)
  res = H.request(c, "GET /check HTTP/1.1\r\nHost: t\r\n\r\n")
  T.match(res.body, "^false .*bad argument #1 to 'set_body_limit' %(non%-negative number expected, got string%)")
  c:close()
  srv:close()
end)

T.test("413 is sent instead of 100 Continue for an oversized body", function()
  local srv = counting { max_body_size = 10 }
  local c = H.connect(srv)
  local res = H.request(c, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
  T.eq(res.status, 413)
  c:close()
  srv:close()
end)

T.test("max_connections: connections over the limit get 503", function()
  local srv, seen = counting { max_connections = 2 }
  local a, b = H.connect(srv), H.connect(srv)
  T.eq(H.request(a, "GET /a HTTP/1.1\r\nHost: t\r\n\r\n").status, 200)
  T.eq(H.request(b, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n").status, 200)
  local c = H.connect(srv)
  local res = H.request(c, "GET /c HTTP/1.1\r\nHost: t\r\n\r\n")
  T.eq(res.status, 503)
  T.ok(H.closed(c))
  c:close()
  a:close()
  -- Once a slot frees the server accepts again.
  local ok
  for _ = 1, 50 do
    local d = H.connect(srv)
    res = H.request(d, "GET /d HTTP/1.1\r\nHost: t\r\n\r\n")
    d:close()
    if res.status == 200 then ok = true; break end
    orrery.sleep(0.01)
  end
  T.ok(ok, "a freed slot is reused")
  b:close()
  srv:close()
end)

T.test("read_header_timeout: a slow head gets 408 and the close", function()
  local srv, seen = counting { read_header_timeout = 0.1 }
  local c = H.connect(srv)
  assert(c:write("GET / HTTP/1.1\r\nHost:"))
  local t0 = orrery.now()
  local res = H.read_response(c)
  T.eq(res.status, 408)
  T.ok(orrery.now() - t0 < 1)
  T.ok(H.closed(c))
  c:close()
  -- A connection that sends nothing at all is closed after the timeout.
  c = H.connect(srv)
  T.ok(H.closed(c))
  c:close()
  T.eq(seen.n, 0)
  srv:close()
end)

T.test("idle_timeout closes a kept-alive connection", function()
  local srv = counting { idle_timeout = 0.1 }
  local c = H.connect(srv)
  T.eq(H.request(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").status, 200)
  local t0 = orrery.now()
  T.ok(H.closed(c))
  T.ok(orrery.now() - t0 < 1)
  c:close()
  srv:close()
end)

T.test("read_body_timeout: a stalled body fails the read", function()
  local srv = counting { read_body_timeout = 0.1 }
  local c = H.connect(srv)
  local res = H.request(c, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
  T.eq(res.status, 499)
  T.eq(res.body, "timeout")
  T.eq(res.headers["connection"], "close")
  T.ok(H.closed(c))
  c:close()
  srv:close()
end)

T.test("write_timeout: a client that stops reading is disconnected", function()
  local done = H.signal()
  local big = ("z"):rep(32 * 1024 * 1024)
  local srv = H.start(function() return 200, big end, {
    write_timeout = 0.1,
    access_log = function(_, _, status) done:fire(status) end,
  })
  local c = H.connect(srv)
  assert(c:write("GET / HTTP/1.1\r\nHost: t\r\n\r\n"))
  done:wait(5)  -- the server gave up writing
  c:close()
  local t0 = orrery.now()
  while srv:connections() > 0 and orrery.now() - t0 < 2 do orrery.sleep(0.01) end
  T.eq(srv:connections(), 0)
  srv:close()
end)

T.test("a client that disconnects mid-request leaves the server healthy", function()
  local srv, seen = counting()
  local c = H.connect(srv)
  assert(c:write("GET / HTTP/1.1\r\nHo"))
  c:close()
  c = H.connect(srv)
  assert(c:write("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npartial"))
  c:close()
  T.eq(H.get(srv, "/x").body, "ok /x")
  srv:close()
end)

T.test("a client disconnect cancels the request context", function()
  local started, ended = H.signal(), H.signal()
  local srv = H.start(function(req)
    if req.path ~= "/wait" then return 200, "fine" end
    started:fire()
    local ok, err = orrery.sleep(5)
    ended:fire({ err = err, ctx = req.ctx:err() })
    return 200, "late"
  end)
  local c = H.connect(srv)
  assert(c:write("GET /wait HTTP/1.1\r\nHost: t\r\n\r\n"))
  started:wait()
  c:close()
  local r = ended:wait()
  T.eq(r.err, "canceled")
  T.eq(r.ctx, "canceled")
  T.eq(H.get(srv, "/").body, "fine")
  srv:close()
end)

T.test("handler_timeout: waits end at the deadline and the answer is 503", function()
  local srv = H.start(function(req)
    local _, err = orrery.sleep(5)
    error("sleep: " .. tostring(err))
  end, { handler_timeout = 0.05 })
  local t0 = orrery.now()
  local res = H.get(srv, "/")
  T.eq(res.status, 503)
  T.ok(orrery.now() - t0 < 1)
  srv:close()
end)
