-- SPDX-License-Identifier: MIT
-- http_client_test.lua -- the HTTP client against the project's own server:
-- methods and bodies, JSON, streaming, HEAD, 204, 100-continue, headers,
-- redirects, the pool and its stats, contexts, misuse.
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"
local json = require "orrery.json"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

local function app()
  local r = http.router()
  r:get("/", function() return 200, "hello" end)
  r:get("/json", function() return 200, { id = 7, items = { 1, 2 } } end)
  r:post("/echo", function(req)
    local b, err = req:body()
    if not b then return 400, "body: " .. err end
    return 200, b, { ["X-Content-Type"] = req.headers["content-type"] or "none",
      ["X-Framing"] = req.headers["transfer-encoding"] or ("length " .. tostring(req.headers["content-length"])) }
  end)
  r:put("/echo", function(req) return 200, req:body() end)
  r:get("/stream", function()
    return 200, function(write) for i = 1, 5 do write(("piece %d;"):format(i)) end end
  end)
  r:get("/empty", function() return 204 end)
  r:get("/multi", function() return 200, "x", { ["Set-Cookie"] = { "a=1", "b=2" }, ["X-One"] = "1" } end)
  r:get("/port", function(req) return 200, tostring(req.remote_port) end)
  r:get("/headers", function(req)
    return 200, { ua = req.headers["user-agent"], x = req.headers["x-test"], host = req.headers.host,
      auth = req.headers.authorization or false }
  end)
  r:get("/redirect/:n", function(req)
    local n = tonumber(req.params.n)
    if n == 0 then return 200, "arrived" end
    return 302, "", { Location = "/redirect/" .. (n - 1) }
  end)
  r:get("/relative", function() return 301, "", { Location = "redirect/0" } end)
  r:post("/see-other", function() return 303, "", { Location = "/" } end)
  r:post("/temporary", function() return 307, "", { Location = "/echo" } end)
  r:get("/big", function() return 200, ("x"):rep(100000) end)
  r:get("/n/:n", function(req) return 200, req.params.n, { ["X-N"] = req.params.n } end)
  return r
end

local function start(opts)
  local srv = H.start(app(), opts)
  return srv, "http://127.0.0.1:" .. srv.port
end

T.test("GET: status, body, case-insensitive headers, reuse of one connection", function()
  local srv, base = start()
  local c = http.client()
  for _ = 1, 3 do
    local res = assert(c:get(base .. "/"))
    T.eq(res.status, 200)
    T.eq(res:body(), "hello")
    T.eq(res.headers["Content-Type"], "text/plain; charset=utf-8")
    T.eq(res.headers["content-length"], "5")
    T.eq(res.version, "1.1")
  end
  local st = c:stats()["http://127.0.0.1:" .. srv.port]
  T.eq({ st.active, st.idle, st.created, st.reused, st.evicted }, { 0, 1, 1, 2, 0 })
  srv:close()
end)

-- Fields are made into res.headers when first looked at, from the
-- response's own copy: the connection's parser has moved on by then.
T.test("a response's fields stay its own after its connection carried the next exchanges", function()
  local srv, base = start()
  local c = http.client { max_conns_per_host = 1 }
  local res = {}
  for i = 1, 3 do res[i] = assert(c:get(base .. "/n/" .. i)) end
  T.eq(c:stats()[base].reused, 2)
  for i = 3, 1, -1 do
    T.eq(res[i]:header_values("X-N"), { tostring(i) })
    T.eq(res[i].headers["X-N"], tostring(i))
    T.eq(res[i]:body(), tostring(i))
  end
  srv:close()
end)

T.test("JSON responses and table bodies sent as JSON", function()
  local srv, base = start()
  local res = assert(http.get(base .. "/json"))
  T.eq(res:json(), { id = 7, items = { 1, 2 } })
  res = assert(http.post(base .. "/echo", { n = 42 }))
  T.eq(json.decode(res:body()), { n = 42 })
  T.eq(res.headers["x-content-type"], "application/json")
  T.eq(res.headers["x-framing"], "length 8")
  res = assert(http.post(base .. "/echo", "plain", { headers = { ["Content-Type"] = "text/x" } }))
  T.eq(res:body(), "plain")
  T.eq(res.headers["x-content-type"], "text/x")
  srv:close()
end)

T.test("a function body is sent chunked, chunk by chunk", function()
  local srv, base = start()
  local parts = { "alpha,", "", "beta,", "gamma" }
  local i = 0
  local res = assert(http.request { method = "POST", url = base .. "/echo", body = function()
    i = i + 1
    return parts[i]
  end })
  T.eq(res:body(), "alpha,beta,gamma")
  T.eq(res.headers["x-framing"], "chunked")
  srv:close()
end)

T.test("res:read() streams a chunked reply piece by piece", function()
  local srv, base = start()
  local c = http.client()
  local res = assert(c:get(base .. "/stream", { stream = true }))
  T.eq(res.headers["transfer-encoding"], "chunked")
  local got = {}
  while true do
    local p, err = res:read()
    T.eq(err, nil)
    if not p then break end
    got[#got + 1] = p
  end
  T.eq(table.concat(got), "piece 1;piece 2;piece 3;piece 4;piece 5;")
  T.eq(res:read(), nil)
  -- The body was read to its end: the connection went back to the pool.
  local st = c:stats()["http://127.0.0.1:" .. srv.port]
  T.eq({ st.active, st.idle }, { 0, 1 })
  -- A buffered response reads the same way, in one piece.
  res = assert(c:get(base .. "/stream"))
  T.eq(res:read(), "piece 1;piece 2;piece 3;piece 4;piece 5;")
  T.eq(res:read(), nil)
  srv:close()
end)

T.test("res:close() on a stream that was not read closes its connection", function()
  local srv, base = start()
  local c = http.client()
  local res = assert(c:get(base .. "/big", { stream = true }))
  T.ok(#assert(res:read()) > 0)
  res:close()
  T.eq(select(2, res:read()), "closed: response closed")
  local st = c:stats()["http://127.0.0.1:" .. srv.port]
  T.eq({ st.active, st.idle }, { 0, 0 })
  T.eq(assert(c:get(base .. "/")):body(), "hello")
  srv:close()
end)

T.test("a stream dropped without close gives its connection back when collected", function()
  local srv, base = start()
  local c = http.client { max_conns_per_host = 1 }
  local key = "http://127.0.0.1:" .. srv.port
  do
    local res = assert(c:get(base .. "/big", { stream = true }))
    T.ok(#assert(res:read()) > 0)
  end
  T.eq(c:stats()[key].active, 1)
  collectgarbage()
  collectgarbage()
  T.eq(c:stats()[key].active, 0)
  T.eq(assert(c:get(base .. "/")):body(), "hello") -- the slot is free again
  srv:close()
end)

T.test("HEAD has no body and leaves the connection reusable; 204 too", function()
  local srv, base = start()
  local c = http.client()
  local res = assert(c:request { method = "HEAD", url = base .. "/big" })
  T.eq(res.status, 200)
  T.eq(res.headers["content-length"], "100000")
  T.eq(res:body(), "")
  res = assert(c:get(base .. "/empty"))
  T.eq(res.status, 204)
  T.eq(res:body(), "")
  T.eq(assert(c:get(base .. "/")):body(), "hello")
  local st = c:stats()["http://127.0.0.1:" .. srv.port]
  T.eq({ st.created, st.reused }, { 1, 2 })
  -- Streamed, a response without a body frees its connection at once.
  res = assert(c:request { method = "HEAD", url = base .. "/big", stream = true })
  T.eq(c:stats()["http://127.0.0.1:" .. srv.port].active, 0)
  T.eq({ res:read() }, {})
  T.eq(res:body(), "")
  srv:close()
end)

T.test("100-continue: the body waits for the server's 100", function()
  local srv, base = start()
  local res = assert(http.post(base .. "/echo", ("b"):rep(1000), { expect_continue = true }))
  T.eq(res.status, 200)
  T.eq(#res:body(), 1000)
  srv:close()
end)

T.test("repeated fields are kept: Set-Cookie and header_values", function()
  local srv, base = start()
  local res = assert(http.get(base .. "/multi"))
  T.eq(res.headers["set-cookie"], "a=1")
  T.eq(res:header_values("Set-Cookie"), { "a=1", "b=2" })
  T.eq(res:header_values("x-one"), { "1" })
  T.eq(res:header_values("x-none"), {})
  srv:close()
end)

T.test("request fields: defaults of the client, User-Agent, Host", function()
  local srv, base = start()
  local c = http.client { headers = { ["X-Test"] = "from client" }, user_agent = "probe/1" }
  local v = assert(c:get(base .. "/headers")):json()
  T.eq(v.ua, "probe/1")
  T.eq(v.x, "from client")
  T.eq(v.host, "127.0.0.1:" .. srv.port)
  v = assert(c:get(base .. "/headers", { headers = { ["x-test"] = "own" } })):json()
  T.eq(v.x, "own")
  srv:close()
end)

-- A client keeps the heads of plain requests per URL: a request with
-- fields or options of its own gets its own head, the next plain one the
-- plain head again; and it keeps at most 256 URLs.
T.test("request heads kept per URL: fields and options of one request do not stay", function()
  local srv, base = start()
  local c = http.client()
  local url = base .. "/headers"
  local function get(opts) return assert(c:get(url, opts)):json() end
  T.eq({ get().ua, get().x }, { "orrery/0.1", nil })
  T.eq(get { headers = { ["X-Test"] = "mine" } }.x, "mine")
  T.eq(get { user_agent = "other/2" }.ua, "other/2")
  local v = get()
  T.eq({ v.ua, v.x, v.host }, { "orrery/0.1", nil, "127.0.0.1:" .. srv.port })
  T.eq(assert(c:request { method = "HEAD", url = url }).status, 200)
  T.eq(get().ua, "orrery/0.1")
  for i = 1, 300 do T.eq(assert(c:get(base .. "/n/" .. i)):body(), tostring(i)) end
  T.ok(c.nurls <= 256, "the URL cache is bounded")
  srv:close()
end)

T.test("redirects are followed only when asked, relative ones resolved", function()
  local srv, base = start()
  local res = assert(http.get(base .. "/redirect/2"))
  T.eq(res.status, 302)
  T.eq(res.headers.location, "/redirect/1")
  res = assert(http.get(base .. "/redirect/2", { follow = 5 }))
  T.eq({ res.status, res:body(), res.redirects }, { 200, "arrived", 2 })
  T.eq(res.url, base .. "/redirect/0")
  res = assert(http.get(base .. "/redirect/3", { follow = 1 }))
  T.eq({ res.status, res.redirects }, { 302, 1 })
  res = assert(http.get(base .. "/relative", { follow = 1 }))
  T.eq(res:body(), "arrived")
  -- 303 turns a POST into a GET; 307 repeats the POST with its body.
  res = assert(http.post(base .. "/see-other", "data", { follow = 1 }))
  T.eq(res:body(), "hello")
  res = assert(http.post(base .. "/temporary", "data", { follow = 1 }))
  T.eq(res:body(), "data")
  srv:close()
end)

T.test("credentials stay with their origin across a redirect", function()
  local srv, base = start()
  local r2 = http.router()
  r2:get("/go", function() return 302, "", { Location = base .. "/headers" } end)
  r2:get("/headers", function(req) return 200, { auth = req.headers.authorization or false } end)
  local other = H.start(r2)
  local obase = "http://127.0.0.1:" .. other.port
  local hdr = { headers = { Authorization = "Bearer secret", ["X-Test"] = "kept" }, follow = 1 }
  local v = assert(http.get(obase .. "/go", hdr)):json()
  T.eq({ v.auth, v.x }, { false, "kept" })
  v = assert(http.get(obase .. "/headers", hdr)):json()
  T.eq(v.auth, "Bearer secret")
  other:close()
  srv:close()
end)

T.test("a redirect from https to http is refused (https over a stand-in transport)", function()
  -- The transport table is the seam TLS plugs into: here "https" runs
  -- over plain TCP, which is enough to check the redirect rule.
  local client = require "orrery.http.client"
  local saved = client.transports.https
  client.transports.https = client.transports.http
  local r = http.router()
  r:get("/down", function(req) return 302, "", { Location = "http://127.0.0.1:" .. req.headers.host:match(":(%d+)$") .. "/" } end)
  r:get("/", function() return 200, "plain" end)
  local srv = H.start(r)
  local res, err = http.get("https://127.0.0.1:" .. srv.port .. "/down", { follow = 3 })
  client.transports.https = saved
  T.eq(res, nil)
  T.eq(err, "bad_response: redirect from https to http refused")
  srv:close()
end)

T.test("https to a port nobody listens on is refused like http (TLS itself: tls_test.lua)", function()
  local res, err = http.get("https://127.0.0.1:1/")
  T.eq(res, nil)
  T.eq(http.err_code(err), "refused")
end)

T.test("body limits: res:body() and buffered responses answer too_large", function()
  local srv, base = start()
  local c = http.client { max_body_size = 1000 }
  local res, err = c:get(base .. "/big")
  T.eq(res, nil)
  T.eq(err, "too_large: body of 100000 bytes")
  res = assert(c:get(base .. "/big", { stream = true }))
  T.eq({ res:body() }, { nil, "too_large: body of 100000 bytes" })
  res = assert(c:get(base .. "/stream", { stream = true, max_body_size = 10 }))
  T.eq({ res:body() }, { nil, "too_large: body over 10 bytes" })
  local st = c:stats()["http://127.0.0.1:" .. srv.port]
  T.eq({ st.active, st.idle }, { 0, 0 })
  srv:close()
end)

T.test("the pool: MRU first, idle limit per host, FIFO wait for a slot", function()
  local srv, base = start()
  local key = "http://127.0.0.1:" .. srv.port
  local c = http.client { max_conns_per_host = 2, max_idle_per_host = 1 }
  -- Two streams in flight hold both connections.
  local a = assert(c:get(base .. "/port", { stream = true }))
  local b = assert(c:get(base .. "/port", { stream = true }))
  local st = c:stats()[key]
  T.eq({ st.active, st.idle, st.created }, { 2, 0, 2 })
  -- A third waits until one is handed back.
  local out, id = T.spawn(function() return assert(c:get(base .. "/port")):body() end)
  T.settle({ id })
  T.eq(c:stats()[key].waiting, 1)
  local pb = b:body() -- b's connection goes straight to the waiter
  local r = out:recv()
  T.ok(r[1], r[2])
  T.eq(r[2], pb)
  st = c:stats()[key]
  T.eq({ st.waiting, st.waits, st.reused }, { 0, 1, 1 })
  T.ok(st.wait_time >= 0)
  -- Back in the pool: a's connection stays idle, the other is evicted
  -- (one idle per host); the next request reuses the one kept.
  local pa = a:body()
  T.ne(pa, pb)
  st = c:stats()[key]
  T.eq({ st.active, st.idle, st.evicted }, { 0, 1, 1 })
  T.eq(assert(c:get(base .. "/port")):body(), pb)
  srv:close()
end)

T.test("requests waiting for a slot are served in the order they came", function()
  local srv, base = start()
  local key = "http://127.0.0.1:" .. srv.port
  local c = http.client { max_conns_per_host = 1 }
  local hold = assert(c:get(base .. "/big", { stream = true }))
  local order, done = {}, orrery.chan(3)
  for i = 1, 3 do
    local id = orrery.go(function()
      assert(c:get(base .. "/"))
      order[#order + 1] = i
      done:send(true)
    end)
    T.settle({ id }) -- queued before the next one starts
  end
  T.eq(c:stats()[key].waiting, 3)
  T.ok(#assert(hold:body()) > 0)
  for _ = 1, 3 do done:recv() end
  T.eq(order, { 1, 2, 3 })
  local st = c:stats()[key]
  T.eq({ st.created, st.reused, st.waits, st.waiting }, { 1, 3, 3, 0 })
  srv:close()
end)

T.test("the pool hands out the most recently used connection first", function()
  local srv, base = start()
  local c = http.client()
  local a = assert(c:get(base .. "/port", { stream = true }))
  local b = assert(c:get(base .. "/port", { stream = true }))
  local pa, pb = a:body(), b:body() -- a goes back first, then b
  T.eq(assert(c:get(base .. "/port")):body(), pb)
  T.eq(assert(c:get(base .. "/port")):body(), pb)
  T.ne(pa, pb)
  local st = c:stats()["http://127.0.0.1:" .. srv.port]
  T.eq({ st.idle, st.created, st.reused }, { 2, 2, 2 })
  c:close_idle()
  st = c:stats()["http://127.0.0.1:" .. srv.port]
  T.eq({ st.idle, st.evicted }, { 0, 2 })
  srv:close()
end)

T.test("the pool wait is bounded by the caller's timeout and context", function()
  local srv, base = start()
  local key = "http://127.0.0.1:" .. srv.port
  local c = http.client { max_conns_per_host = 1 }
  local a = assert(c:get(base .. "/big", { stream = true }))
  T.eq({ c:get(base .. "/", { timeout = 0.05 }) }, { nil, "timeout" })
  local ctx, cancel = orrery.context.with_cancel()
  local out, id = T.spawn(function() return c:get(base .. "/", { ctx = ctx }) end)
  T.settle({ id })
  cancel()
  T.eq(out:recv(), { true, nil, "canceled" })
  T.eq(c:stats()[key].waiting, 0)
  a:close()
  -- The slot given up by a goes to nobody (both waiters left); it is free.
  T.eq(assert(c:get(base .. "/")):body(), "hello")
  T.eq(c:stats()[key].active, 0)
  srv:close()
end)

T.test("a context already cancelled or past its deadline fails at once", function()
  local srv, base = start()
  local ctx, cancel = orrery.context.with_cancel()
  cancel()
  T.eq({ http.get(base .. "/", { ctx = ctx }) }, { nil, "canceled" })
  local dctx = orrery.context.with_timeout(0)
  T.eq({ http.get(base .. "/", { ctx = dctx }) }, { nil, "timeout" })
  srv:close()
end)

T.test("names are resolved and every address is tried in turn", function()
  local ok, l = pcall(require("orrery.net").listen, { host = "::1", port = 0 })
  if not ok or not l then T.skip("no IPv6 loopback here") end
  local port = l.port
  l:close()
  -- Serve on ::1 only: localhost's 127.0.0.1 is refused, ::1 answers.
  local srv = H.start(app(), { host = "::1", port = port })
  local res = assert(http.get("http://localhost:" .. port .. "/"))
  T.eq(res:body(), "hello")
  res = assert(http.get("http://[::1]:" .. port .. "/"))
  T.eq(res:body(), "hello")
  srv:close()
end)

T.test("DNS failures answer dns, refused connections refused", function()
  local res, err = http.get("http://no-such-host.invalid/", { timeout = 5 })
  T.eq(res, nil)
  T.eq(http.err_code(err), "dns")
  local l = assert(require("orrery.net").listen { host = "127.0.0.1", port = 0 })
  local port = l.port
  l:close()
  T.eq({ http.get("http://127.0.0.1:" .. port .. "/") }, { nil, "refused" })
end)

T.test("misuse raises at the caller's line", function()
  T.raises(function() http.get(42) end, "orrery.http.get: bad argument #1")
  T.raises(function() http.get("ftp://x/") end, "unsupported scheme ftp")
  T.raises(function() http.get("http:///") end, "no host")
  T.raises(function() http.get("http://a\r\nb/") end, "bad host")
  T.raises(function() http.get("http://a b/") end, "bad host")
  T.raises(function() http.request { url = "http://x/", colour = 1 } end, "unknown option 'colour'")
  T.raises(function() http.request { url = "http://x/", timeout = -1 } end, "option timeout must be seconds")
  T.raises(function() http.request { url = "http://x/", body = 42 } end, "bad option 'body'")
  T.raises(function() http.request { url = "http://x/", headers = { ["Bad Name"] = "v" } } end, "bad header name")
  T.raises(function() http.request { url = "http://x/", headers = { X = "a\r\nb" } } end, "bad value for header X")
  T.raises(function() http.request { url = "http://x/", headers = { ["Content-Length"] = "1" } } end,
    "is set by the client")
  T.raises(function() http.client { max_idle = "x" } end, "orrery.http.client: option max_idle")
  T.raises(function() http.client { prot = 1 } end, "unknown option 'prot'")
  T.raises(function() http.request { url = "http://x/", max_fields = 3 } end, "unknown option 'max_fields'")
  local err = T.raises(function() http.get(42) end, "bad argument")
  T.match(err, "http_client_test%.lua:%d+:")
  local c = http.client()
  T.raises(function() c.get("http://x/") end, "bad self")
end)

-- The keep-alive request path compiles: no trace aborts in the client's
-- modules (the server's own path is checked by http_fastpath_test).
T.test("keep-alive GETs stay JIT-compiled in the client", function()
  if not jit.status() then T.skip("the JIT is off") end
  local srv, base = start()
  local c = http.client()
  for _ = 1, 300 do assert(c:get(base .. "/")) end
  collectgarbage()
  collectgarbage() -- pending finalizers would run during a recording
  local aborts = T.traced(function()
    for _ = 1, 2000 do assert(c:get(base .. "/")) end
  end, "orrery/http/")
  local mine = {}
  for _, a in ipairs(aborts) do
    if not a:find("server%.lua") and not a:find("router%.lua") then mine[#mine + 1] = a end
  end
  T.eq(mine, {})
  srv:close()
end)

-- A client that calls many origins keeps a record (pool and stats) only
-- for those it used lately: one unused, without connections, for its
-- idle_timeout (at least a second) is dropped by the next sweep.
T.test("pool records of origins left unused are dropped: no growth over many origins", function()
  local srvs = {}
  for i = 1, 20 do srvs[i] = H.start(function() return 200, "ok" end) end
  local function url(s) return ("http://127.0.0.1:%d"):format(s.port) end
  local function count(st)
    local n = 0
    for _ in pairs(st) do n = n + 1 end
    return n
  end
  local c = http.client { idle_timeout = 0.2 }
  for round = 1, 2 do
    for i = 1, 10 do
      local s = srvs[(round - 1) * 10 + i]
      T.eq(assert(c:get(url(s) .. "/")):body(), "ok")
      T.eq(assert(c:get(url(s) .. "/")):body(), "ok")
    end
    -- The first round's origins went with the second round's first new
    -- origin, all but the one with the open stream.
    T.eq(count(c:stats()), round == 1 and 10 or 11)
    -- A stream left open holds its origin's record through the sweeps.
    if round == 1 then
      c.held = assert(c:get(url(srvs[1]) .. "/", { stream = true }))
    end
    orrery.sleep(1.2) -- past the linger and the sweep's once-a-second
  end
  -- The second round's origins go with the next new one.
  local extra = H.start(function() return 200, "ok" end)
  T.eq(assert(c:get(url(extra) .. "/")):body(), "ok")
  local st = c:stats()
  T.eq(st[url(srvs[1])].active, 1)
  T.eq(count(st), 2)
  T.eq(c.nidle, 1) -- the counts stay whole: only extra's connection is idle
  c.held:close()
  c:close_idle()
  extra:close()
  for _, s in ipairs(srvs) do s:close() end
end)
