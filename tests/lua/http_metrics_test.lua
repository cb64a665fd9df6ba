-- SPDX-License-Identifier: MIT
-- http_metrics_test.lua -- the HTTP server's and client's metrics: the
-- families and their labels (route patterns, "unmatched", statuses, error
-- codes), the opt-outs, a registry of one's own, the active-requests
-- gauge, promtool on the exposition, and the request path staying
-- JIT-compiled with metrics on.
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"
local metrics = require "orrery.metrics"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

local function app()
  local r = http.router()
  r:get("/", function() return 200, "hello" end)
  r:get("/orders/:id", function(req) return 200, { id = req.params.id } end)
  r:post("/orders", function() return 201, "made" end)
  r:get("/boom", function() error("exploded") end)
  r:get("/teapot", function() return 418, "short and stout" end)
  return r
end

-- Every test records into a registry of its own: the default one holds
-- what the other tests did.
local function fresh()
  local reg = metrics.registry()
  return reg, metrics.http_server(reg), metrics.http_client(reg)
end

T.test("the server counts requests by method, route pattern and status", function()
  local reg, sm = fresh()
  local srv = H.start(app(), { metrics = reg })
  for i = 1, 3 do T.eq(H.get(srv, "/orders/" .. i).status, 200) end
  T.eq(H.get(srv, "/").status, 200)
  T.eq(H.get(srv, "/nowhere").status, 404)
  T.eq(H.get(srv, "/nowhere/else").status, 404)
  T.eq(H.get(srv, "/boom").status, 500)
  T.eq(H.get(srv, "/teapot").status, 418)
  local c = H.connect(srv)
  T.eq(assert(H.request(c, "DELETE /orders HTTP/1.1\r\nHost: t\r\n\r\n")).status, 405)
  T.eq(assert(H.request(c, "POST /orders HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")).status, 201)
  T.eq(assert(H.request(c, "GET /a//b HTTP/1.1\r\nHost: t\r\n\r\n")).status, 301)
  c:close()
  srv:close()
  local req = sm.requests
  T.eq(req:value("GET", "/orders/:id", 200), 3, "the pattern, not the path")
  T.eq(req:value("GET", "/", 200), 1)
  T.eq(req:value("GET", "unmatched", 404), 2, "unknown paths share one series")
  T.eq(req:value("GET", "/boom", 500), 1)
  T.eq(req:value("GET", "/teapot", 418), 1)
  T.eq(req:value("DELETE", "/orders", 405), 1, "a known path with another method keeps its route")
  T.eq(req:value("POST", "/orders", 201), 1)
  T.eq(req:value("GET", "unmatched", 301), 1, "a redirect matched no route")
  T.eq(req:value("GET", "/orders/1", 200), nil)
  local n, sum = sm.duration:value("GET", "/orders/:id")
  T.eq(n, 3)
  T.ok(sum >= 0 and sum < 10, "durations in seconds")
  T.eq((sm.duration:value("GET", "unmatched")), 3)
  T.eq(sm.active:value(), 0)
  local text = reg:expose()
  T.match(text, '\nhttp_server_requests_total{method="GET",route="/orders/:id",status="200"} 3\n')
  T.match(text, '\nhttp_server_request_duration_seconds_bucket{method="GET",route="/orders/:id",le="%+Inf"} 3\n')
  T.match(text, "\nhttp_server_active_requests 0\n")
end)

T.test("a plain handler's requests are unmatched unless it sets req.route", function()
  local reg, sm = fresh()
  local srv = H.start(function(req)
    if req.path == "/named" then req.route = "/named" end
    return 200, "x"
  end, { metrics = reg })
  H.get(srv, "/a")
  H.get(srv, "/b")
  H.get(srv, "/named")
  srv:close()
  T.eq(sm.requests:value("GET", "unmatched", 200), 2)
  T.eq(sm.requests:value("GET", "/named", 200), 1)
end)

T.test("active requests: the gauge counts handlers still running", function()
  local reg, sm = fresh()
  local entered, release = H.signal(), orrery.chan()
  local r = http.router()
  r:get("/slow", function()
    entered:fire()
    release:recv()
    return 200, "done"
  end)
  local srv = H.start(r, { metrics = reg })
  local done = orrery.chan(2)
  for _ = 1, 2 do orrery.go(function() done:send(H.get(srv, "/slow").status) end) end
  entered:wait()
  entered:wait()
  T.eq(sm.active:value(), 2)
  release:send(true)
  release:send(true)
  T.eq(done:recv(), 200)
  T.eq(done:recv(), 200)
  T.eq(sm.active:value(), 0)
  -- open connections: a keep-alive connection counts until it closes
  local c = H.connect(srv)
  assert(c:write("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"))
  entered:wait()
  T.eq(sm.connections:value(), 1)
  release:send(true)
  T.eq(assert(H.read_response(c)).status, 200)
  T.eq(sm.connections:value(), 1, "kept alive")
  c:close()
  srv:close()
  T.eq(sm.connections:value(), 0)
end)

T.test("metrics = false records nothing; without the option, the default registry", function()
  local reg, sm = fresh()
  local off = H.start(app(), { metrics = false })
  H.get(off, "/")
  off:close()
  T.eq(sm.requests:series_count(), 0)
  local dflt = metrics.http_server()
  local before = dflt.requests:value("GET", "/", 200) or 0
  local on = H.start(app()) -- orrery.metrics is loaded: recorded by default
  H.get(on, "/")
  on:close()
  T.eq(dflt.requests:value("GET", "/", 200), before + 1)
  T.match(T.raises(function() http.listen(app(), { port = 0, metrics = "yes" }) end),
    "http_metrics_test.lua:%d+: orrery.http.listen: bad option 'metrics' %(boolean or registry expected, got string%)")
  T.ok(reg)
end)

T.test("without orrery.metrics loaded, the server and client record nothing and load nothing", function()
  local st, out, err = T.script([[
    local http = require "orrery.http"
    local r = http.router()
    r:get("/", function() return 200, "x" end)
    local srv = assert(http.listen(r, { host = "127.0.0.1", port = 0 }))
    local res = assert(http.get("http://127.0.0.1:" .. srv.port .. "/"))
    assert(res.status == 200)
    srv:close()
    print(package.loaded["orrery.metrics"] == nil)
  ]], { timeout = 20 })
  T.eq(st, 0, err)
  T.eq(out, "true\n")
end)

T.test("the client counts requests by method, host and status or error code", function()
  local reg, _, cm = fresh()
  local srv = H.start(app(), { metrics = false })
  local base = "http://127.0.0.1:" .. srv.port
  local host = "127.0.0.1:" .. srv.port
  local cl = http.client { metrics = reg }
  for _ = 1, 2 do T.eq(assert(cl:get(base .. "/")).status, 200) end
  T.eq(assert(cl:get(base .. "/nowhere")).status, 404)
  T.eq(assert(cl:post(base .. "/orders", "x")).status, 201)
  srv:close()
  local res, err = cl:get(base .. "/")
  T.eq(res, nil)
  local code = http.err_code(err)
  T.ok(code == "refused" or code == "closed" or code == "reset", err)
  T.eq(cm.requests:value("GET", host, 200), 2)
  T.eq(cm.requests:value("GET", host, 404), 1)
  T.eq(cm.requests:value("POST", host, 201), 1)
  T.eq(cm.requests:value("GET", host, code), 1, "a failed request is counted under its error code")
  T.eq((cm.duration:value("GET", host)), 4)
  local text = reg:expose()
  T.match(text, ('\nhttp_client_requests_total{method="GET",host="%s",status="200"} 2\n'):format(host))
  local quiet = http.client { metrics = false }
  local r2 = metrics.registry()
  local cm2 = metrics.http_client(r2)
  quiet:get(base .. "/")
  T.eq(cm2.requests:series_count(), 0)
  T.raises(function() http.client { metrics = 1 } end, "option metrics must be a boolean or a registry")
end)

-- promtool comes with Debian's prometheus package (scripts/test.sh
-- installs it); without it the check is skipped.
local function promtool()
  local p = io.popen("command -v promtool 2>/dev/null")
  local s = p:read("*l")
  p:close()
  return s
end

T.test("promtool check metrics accepts the HTTP families", function()
  local pt = promtool()
  if not pt then T.skip("promtool is not installed") end
  local reg = fresh()
  local srv = H.start(app(), { metrics = reg })
  local cl = http.client { metrics = reg }
  local base = "http://127.0.0.1:" .. srv.port
  assert(cl:get(base .. "/orders/7"))
  assert(cl:get(base .. "/nowhere"))
  srv:close()
  local f = os.tmpname()
  local h = io.open(f, "w")
  h:write((reg:expose()))
  h:close()
  local p = io.popen(T.shquote(pt) .. " check metrics < " .. f .. " 2>&1; echo \"status=$?\"")
  local out = p:read("*a")
  p:close()
  os.remove(f)
  T.eq(out, "status=0\n", "promtool's complaints")
end)

-- The request path with metrics on compiles as it does without: an abort
-- in the server, the router or the metrics module would put the
-- interpreter back on every request. (Exact routes: the router's lookup
-- of :param routes is not compiled, metrics or not.)
T.test("the request path stays JIT-compiled with metrics on", function()
  if not jit.status() then T.skip("the JIT is off") end
  local jutil = require "jit.util"
  local vmdef = require "jit.vmdef"
  local reg = fresh()
  local r = http.router()
  r:get("/", function() return 200, "ok" end)
  r:get("/orders", function() return 200, "list" end)
  local srv = H.start(r, { metrics = reg })
  local c = H.connect(srv)
  T.eq(assert(H.request(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")).status, 200)
  T.eq(assert(H.request(c, "GET /orders HTTP/1.1\r\nHost: t\r\n\r\n")).status, 200)
  collectgarbage()
  collectgarbage()
  jit.flush()
  local bad, repeats, started = {}, {}, {}
  local function where(func, pc)
    local info = jutil.funcinfo(func, pc)
    local src = info.source or ""
    if src:find("orrery/http/", 1, true) or src:find("orrery/metrics", 1, true) then
      return ("%s:%s"):format(src, tostring(info.currentline))
    end
  end
  local function on_trace(what, tr, func, pc, code)
    if what == "start" then
      started[tr] = where(func, pc) or false
    elseif what == "abort" and started[tr] then
      local why = tostring(vmdef.traceerr[code] or code)
      local key = started[tr] .. ": " .. why
      repeats[key] = (repeats[key] or 0) + 1
      if not T.BENIGN_ABORTS[why] or repeats[key] == 8 then bad[#bad + 1] = "abort: " .. key end
    elseif what == "stop" and started[tr] and jutil.traceinfo(tr).linktype == "interpreter" then
      bad[#bad + 1] = ("trace %d from %s falls back to the interpreter"):format(tr, started[tr])
    end
  end
  jit.attach(on_trace, "trace")
  for i = 1, 2000 do
    local path = i % 2 == 0 and "/" or "/orders"
    assert(c:write("GET " .. path .. " HTTP/1.1\r\nHost: t\r\n\r\n"))
    assert(H.read_response(c))
  end
  jit.attach(on_trace)
  T.eq(bad, {})
  c:close()
  srv:close()
end)
