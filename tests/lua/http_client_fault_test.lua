-- SPDX-License-Identifier: MIT
-- http_client_fault_test.lua -- the HTTP client against a raw TCP server
-- written here that answers exactly what each case needs: every framing
-- of RFC 9112 section 6.3, malformed and oversized responses, stalls at
-- each phase (every timeout), closes and resets, the retry rule (counted
-- by the requests the server saw) and the pool's recovery.
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"
local net = require "orrery.net"

-- fault(handler) -> server: handler(c, head, body, srv, n) answers the
-- n-th request of its connection; it returns true to keep the connection
-- for another request. srv.requests counts the requests seen, srv.conns
-- the connections; srv.closed fires each time a connection ends.
local function fault(handler)
  local l = assert(net.listen { host = "127.0.0.1", port = 0 })
  local srv = { port = l.port, requests = 0, conns = 0, closed = orrery.chan(100), live = {} }
  srv.url = "http://127.0.0.1:" .. l.port
  orrery.go(function()
    while true do
      local c = l:accept()
      if not c then break end
      srv.conns = srv.conns + 1
      srv.live[c] = true
      orrery.go(function()
        local n = 0
        while true do
          local head = c:read_until("\r\n\r\n", 65536)
          if not head then break end
          n = n + 1
          srv.requests = srv.requests + 1
          srv.last_head = head
          local body = ""
          local cl = tonumber(head:match("\r\n[Cc]ontent%-[Ll]ength: *(%d+)"))
          if head:find("\r\n[Ee]xpect: 100%-continue") then
            -- the handler decides whether to say 100
          elseif cl and cl > 1048576 then
            -- left unread: the handler answers on the head alone
          elseif cl and cl > 0 then
            body = c:readn(cl) or ""
          elseif head:find("\r\n[Tt]ransfer%-[Ee]ncoding: chunked") then
            local parts = {}
            while true do
              local line = c:read_until("\r\n")
              if not line then break end
              local size = tonumber(line:match("^(%x+)"), 16)
              if not size or size == 0 then c:read_until("\r\n"); break end
              parts[#parts + 1] = c:readn(size + 2):sub(1, size)
            end
            body = table.concat(parts)
          end
          srv.last_body = body
          if not handler(c, head, body, srv, n) then break end
        end
        srv.live[c] = nil
        c:close()
        srv.closed:send(true)
      end)
    end
  end)
  function srv.close()
    l:close()
    for c in pairs(srv.live) do c:close() end
  end
  return srv
end

-- A handler that writes a canned response and keeps the connection.
local function canned(text, keep)
  return function(c)
    c:write(text)
    return keep ~= false
  end
end

local OK = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

local function get(srv, opts, path)
  local c = http.client(opts and opts.client)
  local res, err = c:get(srv.url .. (path or "/"), opts and opts.req)
  return res, err, c
end

-- { res, err } of get, for comparing.
local function got(srv, opts, path)
  local res, err = get(srv, opts, path)
  return { res, err }
end

-- -- Framing --

T.test("Content-Length bodies, also split across many reads", function()
  local srv = fault(function(c)
    c:write("HTTP/1.1 200 OK\r\nCont")
    c:write("ent-Length: 10\r\nX-A: 1\r")
    c:write("\n\r\n01234")
    c:write("56789")
    return true
  end)
  local res = assert(get(srv))
  T.eq({ res.status, res:body(), res.headers["x-a"] }, { 200, "0123456789", "1" })
  srv.close()
end)

T.test("chunked bodies with trailers", function()
  local srv = fault(canned("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. "5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"))
  local res = assert(get(srv))
  T.eq(res:body(), "hello, world")
  T.eq(res.trailers["X-Checksum"], "abc")
  srv.close()
end)

T.test("a body delimited by the close; the connection is not reused", function()
  local srv = fault(canned("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", false))
  local c = http.client()
  T.eq(assert(c:get(srv.url .. "/")):body(), "until the end")
  T.eq(assert(c:get(srv.url .. "/")):body(), "until the end")
  local st = c:stats()[srv.url:gsub("^http://", "http://")]
  T.eq({ st.created, st.reused, st.idle }, { 2, 0, 0 })
  srv.close()
end)

T.test("HTTP/1.0 responses close unless kept alive", function()
  local srv = fault(canned("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
  local c = http.client()
  T.eq(assert(c:get(srv.url .. "/")):body(), "ok")
  T.eq(c:stats()[srv.url].idle, 0)
  srv.close()
end)

T.test("1xx responses are skipped; 204 and 304 have no body whatever they say", function()
  local srv = fault(function(c, head)
    if head:find("^GET /info") then
      c:write("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" .. OK)
    elseif head:find("^GET /nc") then
      c:write("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n")
    else
      c:write("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
    end
    return true
  end)
  local c = http.client()
  local res = assert(c:get(srv.url .. "/info"))
  T.eq({ res.status, res:body(), res.headers.link }, { 200, "ok", nil })
  res = assert(c:get(srv.url .. "/nc"))
  T.eq({ res.status, res:body() }, { 204, "" })
  res = assert(c:get(srv.url .. "/nm"))
  T.eq({ res.status, res:body() }, { 304, "" })
  -- All three on one connection: nothing was left over between them.
  T.eq(c:stats()[srv.url].created, 1)
  srv.close()
end)

T.test("HEAD: no body even with Content-Length; the connection is reused", function()
  local srv = fault(canned("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"))
  local c = http.client()
  for _ = 1, 2 do
    local res = assert(c:request { method = "HEAD", url = srv.url .. "/" })
    T.eq({ res.status, res:body(), res.headers["content-length"] }, { 200, "", "1000" })
  end
  T.eq({ c:stats()[srv.url].created, c:stats()[srv.url].reused }, { 1, 1 })
  srv.close()
end)

T.test("100-continue: a final answer before the body; the body never sent", function()
  local srv = fault(function(c, head)
    if head:find("^POST /continue") then
      c:write("HTTP/1.1 100 Continue\r\n\r\n")
      local body = c:readn(4)
      c:write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n" .. body)
    else
      c:write("HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
    end
    return true
  end)
  local c = http.client()
  local res = assert(c:post(srv.url .. "/continue", "data", { expect_continue = true }))
  T.eq({ res.status, res:body() }, { 200, "data" })
  res = assert(c:post(srv.url .. "/refuse", "data", { expect_continue = true }))
  T.eq(res.status, 413)
  -- The server never read the body: that connection cannot be reused.
  srv.closed:recv()
  T.eq(c:stats()[srv.url].idle, 0)
  srv.close()
end)

local BAD = {
  { "duplicate Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    "^bad_response: .*Content%-Length" },
  { "conflicting Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "^bad_response: .*Content%-Length" },
  { "Content-Length with Transfer-Encoding",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "^bad_response: " },
  { "a transfer coding other than chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
    "^bad_response: unsupported transfer coding" },
  { "a bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
    "^bad_response: .*chunk size" },
  { "an overflowing chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
    "^bad_response: .*overflow" },
  { "a negative Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "^bad_response: " },
  { "a status line that is not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", "^bad_response: " },
  { "HTTP/2 in a status line", "HTTP/2.0 200 OK\r\n\r\n", "^bad_response: unsupported HTTP version" },
  { "a status out of range", "HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n", "^bad_response: bad status code" },
  { "101 never asked for", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    "^bad_response: unexpected 101" },
  { "bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "^bad_response: " },
  { "whitespace before a colon", "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n", "^bad_response: " },
  { "a truncated body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "^bad_response: connection closed in the response body" },
  { "a truncated chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "^bad_response: connection closed in the response body" },
  { "a truncated head", "HTTP/1.1 200 OK\r\nContent-Le", "^bad_response: connection closed in the response head" },
  { "nothing at all", "", "^closed" },
}

for _, case in ipairs(BAD) do
  T.test("malformed responses fail cleanly: " .. case[1], function()
    local srv = fault(canned(case[2], false))
    local res, err, c = get(srv)
    T.eq(res, nil)
    T.match(err, case[3])
    local st = c:stats()[srv.url]
    T.eq({ st.active, st.idle }, { 0, 0 })
    srv.close()
  end)
end

T.test("oversized heads, too many fields and oversized bodies are too_large", function()
  local srv = fault(function(c, head)
    if head:find("^GET /head") then
      c:write("HTTP/1.1 200 OK\r\nX-Big: " .. ("a"):rep(5000) .. "\r\n\r\n")
    elseif head:find("^GET /fields") then
      local f = {}
      for i = 1, 20 do f[#f + 1] = "X-" .. i .. ": v\r\n" end
      c:write("HTTP/1.1 200 OK\r\n" .. table.concat(f) .. "Content-Length: 0\r\n\r\n")
    elseif head:find("^GET /chunked") then
      c:write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
      for _ = 1, 10 do c:write("100\r\n" .. ("z"):rep(256) .. "\r\n") end
      c:write("0\r\n\r\n")
    else
      c:write("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" .. ("b"):rep(5000))
    end
    return true
  end)
  local c = http.client { max_head_bytes = 1024, max_fields = 10, max_body_size = 1000 }
  T.eq({ c:get(srv.url .. "/head") }, { nil, "too_large: response head too large" })
  T.eq({ c:get(srv.url .. "/fields") }, { nil, "too_large: too many response fields" })
  T.eq({ c:get(srv.url .. "/body") }, { nil, "too_large: body of 5000 bytes" })
  T.eq({ c:get(srv.url .. "/chunked") }, { nil, "too_large: body over 1000 bytes" })
  -- A stream is not limited; res:body() is.
  local res = assert(c:get(srv.url .. "/chunked", { stream = true }))
  local n = 0
  while true do
    local p = res:read()
    if not p then break end
    n = n + #p
  end
  T.eq(n, 2560)
  local st = c:stats()[srv.url]
  T.eq({ st.active, st.idle }, { 0, 1 })
  srv.close()
end)

T.test("bytes after the response: the connection is not reused", function()
  local srv = fault(canned(OK .. "HTTP/1.1 200 OK\r\n"))
  local c = http.client()
  T.eq(assert(c:get(srv.url .. "/")):body(), "ok")
  T.eq(c:stats()[srv.url].idle, 0)
  srv.close()
end)

-- -- Timeouts and cancellation --

-- stall(what) -> handler that stops at a point and holds the connection
-- open until the test ends.
local function stall(what)
  return function(c)
    if what == "body" then
      c:write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    elseif what == "head" then
      c:write("HTTP/1.1 200 OK\r\nX-Partial: ")
    end
    c:read(65536) -- until the client closes
    return false
  end
end

T.test("response head timeout (time to first byte)", function()
  local srv = fault(stall("nothing"))
  local res, err, c = get(srv, { req = { head_timeout = 0.05 } })
  T.eq({ res, err }, { nil, "timeout: response head" })
  srv.closed:recv() -- the client closed it
  T.eq(c:stats()[srv.url].active, 0)
  srv.close()
end)

T.test("a head that stalls half-way times out too", function()
  local srv = fault(stall("head"))
  T.eq(got(srv, { req = { head_timeout = 0.05 } }), { nil, "timeout: response head" })
  srv.close()
end)

T.test("idle read timeout: a body that stalls", function()
  local srv = fault(stall("body"))
  local res, err = get(srv, { req = { read_timeout = 0.05 } })
  T.eq({ res, err }, { nil, "timeout: idle read" })
  srv.closed:recv()
  -- Streamed, the stall shows on the read that waits.
  res = assert(get(srv, { req = { read_timeout = 0.05, stream = true } }))
  T.eq(res:read(), "abc")
  T.eq({ res:read() }, { nil, "timeout: idle read" })
  T.eq({ res:read() }, { nil, "timeout: idle read" })
  srv.close()
end)

T.test("the total timeout bounds the whole request", function()
  local srv = fault(stall("body"))
  T.eq(got(srv, { req = { timeout = 0.05 } }), { nil, "timeout" })
  srv.close()
end)

T.test("a context deadline answers timeout", function()
  local srv = fault(stall("nothing"))
  local ctx = orrery.context.with_timeout(0.05)
  T.eq(got(srv, { req = { ctx = ctx } }), { nil, "timeout" })
  srv.close()
end)

for _, where in ipairs { "nothing", "head", "body" } do
  T.test("cancelling the context aborts at once, stalled at: " .. where, function()
    local srv = fault(stall(where))
    local c = http.client()
    local ctx, cancel = orrery.context.with_cancel()
    local out, id = T.spawn(function() return c:get(srv.url .. "/", { ctx = ctx }) end)
    T.settle({ id })
    cancel()
    T.eq(out:recv(), { true, nil, "canceled" })
    srv.closed:recv() -- the connection was closed, not pooled
    local st = c:stats()[srv.url]
    T.eq({ st.active, st.idle }, { 0, 0 })
    srv.close()
  end)
end

T.test("cancelling the coroutine's own context aborts a request too", function()
  local srv = fault(stall("nothing"))
  local c = http.client()
  local ctx, cancel = orrery.context.with_cancel()
  local out = orrery.chan(1)
  local id = orrery.go(function()
    orrery.with_context(ctx, function() out:send({ c:get(srv.url .. "/") }) end)
  end)
  T.settle({ id })
  cancel()
  T.eq(out:recv(), { nil, "canceled" })
  srv.close()
end)

T.test("cancelling a streamed body read closes the connection", function()
  local srv = fault(stall("body"))
  local c = http.client()
  local ctx, cancel = orrery.context.with_cancel()
  local res = assert(c:get(srv.url .. "/", { ctx = ctx, stream = true }))
  T.eq(res:read(), "abc")
  local out, id = T.spawn(function() return res:read() end)
  T.settle({ id })
  cancel()
  T.eq(out:recv(), { true, nil, "canceled" })
  srv.closed:recv()
  T.eq(c:stats()[srv.url].active, 0)
  srv.close()
end)

T.test("connect timeout: a listener whose queue is full", function()
  -- Nobody accepts and the backlog is tiny: once it is full the kernel
  -- drops further SYNs, so a connect hangs until its timeout.
  local l = assert(net.listen { host = "127.0.0.1", port = 0, backlog = 1 })
  local held = {}
  for _ = 1, 64 do
    local c = net.connect("127.0.0.1", l.port, { timeout = 0.1 })
    if not c then break end
    held[#held + 1] = c
  end
  local c = http.client()
  T.eq({ c:get("http://127.0.0.1:" .. l.port .. "/", { connect_timeout = 0.05 }) },
    { nil, "timeout: connect" })
  T.eq(c:stats()["http://127.0.0.1:" .. l.port].active, 0)
  -- Cancelled while connecting: at once, the slot freed.
  local ctx, cancel = orrery.context.with_cancel()
  local out, id = T.spawn(function() return c:get("http://127.0.0.1:" .. l.port .. "/", { ctx = ctx }) end)
  T.settle({ id })
  cancel()
  T.eq(out:recv(), { true, nil, "canceled" })
  T.eq(c:stats()["http://127.0.0.1:" .. l.port].active, 0)
  for _, h in ipairs(held) do h:close() end
  l:close()
end)

T.test("write timeout: a server that never reads a large body", function()
  local l = assert(net.listen { host = "127.0.0.1", port = 0 })
  local accepted = orrery.chan(1)
  orrery.go(function() accepted:send(l:accept()) end)
  local c = http.client()
  local out, id = T.spawn(function()
    return c:post("http://127.0.0.1:" .. l.port .. "/", ("x"):rep(32 * 1048576), { write_timeout = 0.05 })
  end)
  local s = accepted:recv() -- accepted, never read
  T.eq(out:recv(), { true, nil, "timeout: write" })
  s:close()
  l:close()
end)

T.test("an early answer while the body is still being sent is the result", function()
  local srv = fault(function(c)
    -- Answers on the head alone and closes with the body unread (which
    -- resets the connection): the client's write fails, the 413 stands.
    c:write("HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big!")
    return false
  end)
  local c = http.client()
  local res, err = c:post(srv.url .. "/", ("x"):rep(32 * 1048576))
  T.ok(res, err)
  T.eq({ res.status, res:body() }, { 413, "too big!" })
  T.eq(c:stats()[srv.url].idle, 0)
  srv.close()
end)

T.test("a server that closes on an unread body resets the connection", function()
  -- The body (1.5 MiB) is larger than what the server side reads ahead
  -- (1 MiB), so its close finds bytes unread and the kernel answers with
  -- a reset, which the client reads while it waits for the head
  -- ("reset"). Were the socket buffers too small to take the whole body,
  -- the client's write would fail instead, with a broken pipe ("closed").
  local srv = fault(function() return false end)
  local c = http.client()
  local res, err = c:post(srv.url .. "/", ("x"):rep(1536 * 1024))
  T.eq(res, nil)
  local code = http.err_code(err)
  T.ok(code == "reset" or code == "closed", err)
  T.eq({ srv.requests, c:stats()[srv.url].active }, { 1, 0 })
  srv.close()
end)

-- -- The retry rule --

-- The server answers the first request of each connection and, on the
-- second, reads it and closes without a word: a reused connection that
-- turns out dead after the request was written.
local function dies_on_second()
  return fault(function(c, _, _, _, n)
    if n == 1 then
      c:write(OK)
      return true
    end
    return false
  end)
end

T.test("retry rule: a GET on a dead reused connection is retried once", function()
  local srv = dies_on_second()
  local c = http.client()
  T.eq(assert(c:get(srv.url .. "/")):body(), "ok")
  T.eq(assert(c:get(srv.url .. "/")):body(), "ok")
  T.eq({ srv.requests, srv.conns }, { 3, 2 })
  local st = c:stats()[srv.url]
  T.eq({ st.created, st.reused }, { 2, 1 })
  srv.close()
end)

T.test("retry rule: a POST on a dead reused connection is never replayed", function()
  local srv = dies_on_second()
  local c = http.client()
  T.eq(assert(c:post(srv.url .. "/", "charge")):body(), "ok")
  local res, err = c:post(srv.url .. "/", "charge")
  T.eq(res, nil)
  T.match(err, "^closed")
  T.eq({ srv.requests, srv.conns }, { 2, 1 })
  -- The pool recovers: the next request dials afresh.
  T.eq(assert(c:post(srv.url .. "/", "charge")):body(), "ok")
  T.eq({ srv.requests, srv.conns }, { 3, 2 })
  srv.close()
end)

T.test("retry rule: a POST with an Idempotency-Key is retried; PUT and DELETE too", function()
  local srv = dies_on_second()
  local c = http.client()
  local key = { ["Idempotency-Key"] = "order-1" }
  T.eq(assert(c:post(srv.url .. "/", "charge", { headers = key })):body(), "ok")
  T.eq(assert(c:post(srv.url .. "/", "charge", { headers = key })):body(), "ok")
  T.eq({ srv.requests, srv.conns }, { 3, 2 })
  T.eq(assert(c:request { method = "PUT", url = srv.url .. "/", body = "x" }):body(), "ok")
  T.eq(assert(c:request { method = "DELETE", url = srv.url .. "/" }):body(), "ok")
  T.eq({ srv.requests, srv.conns }, { 7, 4 })
  srv.close()
end)

T.test("retry rule: no retry once a byte of the response arrived", function()
  local srv = fault(function(c, _, _, _, n)
    if n == 1 then
      c:write(OK)
      return true
    end
    c:write("HTTP/1.1 200 OK\r\nContent-Len")
    return false
  end)
  local c = http.client()
  T.eq(assert(c:get(srv.url .. "/")):body(), "ok")
  local res, err = c:get(srv.url .. "/")
  T.eq(res, nil)
  T.eq(err, "bad_response: connection closed in the response head")
  T.eq({ srv.requests, srv.conns }, { 2, 1 })
  srv.close()
end)

T.test("retry rule: a streamed (function) body is not sent twice", function()
  local srv = dies_on_second()
  local c = http.client()
  T.eq(assert(c:get(srv.url .. "/")):body(), "ok")
  local i = 0
  local res, err = c:request { method = "PUT", url = srv.url .. "/", body = function()
    i = i + 1
    if i == 1 then return "once" end
  end }
  T.eq(res, nil)
  T.match(err, "^closed")
  T.eq({ srv.requests, srv.conns, i }, { 2, 1, 2 })
  srv.close()
end)

T.test("a connection the server closed while idle is dropped before use", function()
  local srv = fault(function(c)
    c:write(OK)
    return false -- keep-alive promised, closed anyway
  end)
  local c = http.client()
  T.eq(assert(c:post(srv.url .. "/", "charge")):body(), "ok")
  srv.closed:recv()
  -- Wait until the client's side has read the end (an event, bounded).
  local pooled = c.pools[srv.url].idle[1]
  for _ = 1, 1000 do
    if not pooled.t:alive() then break end
    orrery.sleep(0)
  end
  T.eq(pooled.t:alive(), false)
  -- The POST goes out on a fresh connection instead of failing.
  T.eq(assert(c:post(srv.url .. "/", "charge")):body(), "ok")
  local st = c:stats()[srv.url]
  T.eq({ srv.requests, st.created, st.reused, st.evicted }, { 2, 2, 0, 1 })
  srv.close()
end)

T.test("a fresh connection that dies is not retried", function()
  local srv = fault(function() return false end)
  local res, err = get(srv)
  T.eq(res, nil)
  T.match(err, "^closed")
  T.eq(srv.requests, 1)
  srv.close()
end)

-- -- Keep-alive and the pool --

T.test("Keep-Alive: timeout= from the server shortens the idle time", function()
  local srv = fault(canned("HTTP/1.1 200 OK\r\nKeep-Alive: timeout=0\r\nContent-Length: 2\r\n\r\nok"))
  local c = http.client()
  T.eq(assert(c:get(srv.url .. "/")):body(), "ok")
  T.eq(assert(c:get(srv.url .. "/")):body(), "ok")
  local st = c:stats()[srv.url]
  T.eq({ st.created, st.reused, st.evicted, st.idle }, { 2, 0, 2, 0 })
  srv.close()
end)

T.test("a body function that raises: the error reaches the caller, the connection goes", function()
  local srv = fault(canned(OK))
  local c = http.client()
  T.raises(function()
    c:request { method = "POST", url = srv.url .. "/", body = function() error("source broke") end }
  end, "source broke")
  T.eq(c:stats()[srv.url].active, 0)
  local i = 0
  T.eq({ c:request { method = "POST", url = srv.url .. "/", body = function()
    i = i + 1
    if i == 1 then return "part" end
    return nil, "disk gone"
  end } }, { nil, "canceled: body source failed: disk gone" })
  T.eq(c:stats()[srv.url].active, 0)
  srv.close()
end)

T.test("Connection: close from the server ends the connection", function()
  local srv = fault(canned("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"))
  local c = http.client()
  T.eq(assert(c:get(srv.url .. "/")):body(), "ok")
  T.eq(c:stats()[srv.url].idle, 0)
  srv.close()
end)

T.test("idle_timeout 0 keeps nothing idle; max_idle bounds all pools", function()
  local a = fault(canned(OK))
  local b = fault(canned(OK))
  local c = http.client { idle_timeout = 0 }
  T.eq(assert(c:get(a.url .. "/")):body(), "ok")
  T.eq(assert(c:get(a.url .. "/")):body(), "ok")
  T.eq(c:stats()[a.url].created, 2)
  local c2 = http.client { max_idle = 1 }
  T.eq(assert(c2:get(a.url .. "/")):body(), "ok")
  T.eq(assert(c2:get(b.url .. "/")):body(), "ok")
  local s = c2:stats()
  T.eq({ s[a.url].idle, s[a.url].evicted, s[b.url].idle }, { 0, 1, 1 })
  a.close()
  b.close()
end)

T.test("a script with idle pooled connections ends when its work does", function()
  -- The server runs in the child too (this process's loop is blocked
  -- while the child runs); its own end of the connection stays open but
  -- is told not to keep the loop alive, so only the client's pooled
  -- connection could hold the child.
  local st, out, err = T.script([[
    local orrery = require "orrery"
    local http = require "orrery.http"
    local net = require "orrery.net"
    local l = assert(net.listen { host = "127.0.0.1", port = 0 })
    orrery.go(function()
      local c = assert(l:accept())
      l:close()
      require("orrery.http.client.core").idle(c.c, true)
      c:read_until("\r\n\r\n")
      c:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
      c:read()
    end)
    local res = assert(http.get("http://127.0.0.1:" .. l.port .. "/"))
    print(res:body(), http.default_client():stats()["http://127.0.0.1:" .. l.port].idle)
  ]], { timeout = 20 })
  T.eq({ st, out }, { 0, "ok\t1\n" }, err)
end)

-- -- Through the fault proxy (tests/lua/fault_proxy.lua) --
--
-- The project's own server behind the proxy, counting requests.

local FP = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "fault_proxy.lua")

local function upstream()
  local u = { n = 0 }
  u.srv = assert(http.listen(function(req)
    u.n = u.n + 1
    return 200, req.method .. " " .. u.n
  end, { host = "127.0.0.1", port = 0 }))
  u.px = FP.new { port = u.srv.port }
  function u.close() u.px:close(); u.srv:close() end
  return u
end

-- A pooled connection that the peer has reset while it sat idle, and that
-- the client has not looked at since: the proxy closes its end (a FIN),
-- one byte written on the client's end meets the closed socket and comes
-- back as a reset, and nothing yields in between (the loop does not poll,
-- so the client still takes the connection for alive). The request's
-- write then fails at once, with nothing on the wire.
local function reset_behind_idle(c, px)
  local conn = c.pools[px.url].idle[1]
  px:kill()
  conn.t.c:write("x") -- accepted by the socket; the answer is a reset
  local t = orrery.now() + 0.02 -- the reset crosses the loopback: no yield
  while orrery.now() < t do end
  T.eq(conn.t:alive(), true)
end

T.test("retry rule: a POST whose write put nothing on the wire is retried", function()
  local u = upstream()
  local c = http.client()
  T.eq(assert(c:post(u.px.url .. "/", "charge")):body(), "POST 1")
  reset_behind_idle(c, u.px)
  -- Not a byte of it went out: sending it on a fresh connection cannot
  -- charge twice.
  local res, err = c:post(u.px.url .. "/", "charge")
  T.eq(err, nil)
  T.eq(res:body(), "POST 2")
  local st = c:stats()[u.px.url]
  T.eq({ u.n, st.created, st.reused }, { 2, 2, 1 })
  u.close()
end)

T.test("fault proxy: a response cut short, a stalled response, a slow upstream", function()
  local u = upstream()
  local c = http.client()
  u.px:fault { dir = "down", after = 20, action = "close" }
  local res, err = c:get(u.px.url .. "/")
  T.eq(res, nil)
  T.eq(err, "bad_response: connection closed in the response head")
  u.px:fault { dir = "down", action = "stall" }
  res, err = c:get(u.px.url .. "/", { head_timeout = 0.1 })
  T.eq(res, nil)
  T.eq(err, "timeout: response head")
  u.px:fault { dir = "down", action = "delay", delay = 0.05 }
  res, err = c:get(u.px.url .. "/", { head_timeout = 2 })
  T.eq(err, nil)
  T.eq(res:body(), "GET 3")
  T.eq(u.n, 3) -- every request reached the upstream; none was retried
  T.ok(u.px.up > 0 and u.px.down > 0)
  u.close()
end)
