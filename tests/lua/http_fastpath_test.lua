-- SPDX-License-Identifier: MIT
-- http_fastpath_test.lua -- what the request path's shortcuts must not
-- change: common heads parsed without llhttp read the same as the others,
-- pooled read buffers, cached response heads and lazily moved read
-- deadlines (host/http_parse.c, host/http_server.c, host/tcp.c).
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"
local json = require "orrery.json"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

-- Echoes what the handler sees of its request, in a stable order.
local function echo_app()
  local r = http.router()
  r:route("*", "/*rest", function(req)
    local names = {}
    for k in pairs(req.headers) do names[#names + 1] = k end
    table.sort(names)
    local hs = {}
    for _, k in ipairs(names) do hs[#hs + 1] = k .. "=" .. req.headers[k] end
    local body = req.method == "POST" and assert(req:body()) or ""
    return 200, table.concat({ req.method, req.path, req.raw_query, req.version,
      table.concat(hs, ";"), body }, "|")
  end)
  return r
end

T.test("heads of the common shape and the others read the same", function()
  local srv = H.start(echo_app())
  local c = H.connect(srv)
  local cases = {
    -- Taken by the fast path.
    { "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: t\r\nX-One:  v1 \r\nx-two:\r\n\r\n",
      "GET|/a/b|x=1&y=2|1.1|host=t;x-one=v1;x-two=|" },
    { "HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n", nil },
    { "GET /ka HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: t\r\n\r\n",
      "GET|/ka||1.0|connection=Keep-Alive;host=t|" },
    -- Left to llhttp: a body, an absolute-form target, obs-text.
    { "POST /p?q HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
      "POST|/p|q|1.1|content-length=3;host=t|abc" },
    { "GET http://t/abs?z HTTP/1.1\r\nHost: t\r\n\r\n", "GET|/abs|z|1.1|host=t|" },
    { "GET /o HTTP/1.1\r\nHost: t\r\nX-Bin: caf\xc3\xa9\r\n\r\n", "GET|/o||1.1|host=t;x-bin=caf\xc3\xa9|" },
  }
  for _, case in ipairs(cases) do
    local head = case[1]:match("^HEAD")
    local res = assert(H.request(c, case[1], { head = head }))
    T.eq(res.status, 200)
    if case[2] then T.eq(res.body, case[2]) end
  end
  c:close()
  srv:close()
end)

T.test("pipelined requests of both kinds are answered in order", function()
  local srv = H.start(echo_app())
  local c = H.connect(srv)
  assert(c:write("GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
    .. "POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
    .. "GET /3 HTTP/1.1\r\nHost: t\r\n\r\n"
    .. "GET /4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    .. "GET /5 HTTP/1.1\r\nHost: t\r\n\r\n"))
  local want = { "GET|/1||1.1|host=t|", "POST|/2||1.1|content-length=2;host=t|hi",
    "GET|/3||1.1|host=t|", "GET|/4||1.1|connection=close;host=t|" }
  for _, w in ipairs(want) do
    local res = assert(H.read_response(c))
    T.eq(res.body, w)
  end
  T.ok(H.closed(c), "nothing after Connection: close")
  c:close()
  srv:close()
end)

T.test("a head with more fields than are kept inline", function()
  local srv = H.start(echo_app())
  local c = H.connect(srv)
  local fields, want = {}, {}
  for i = 1, 20 do
    fields[#fields + 1] = ("X-F%02d: v%d\r\n"):format(i, i)
    want[#want + 1] = ("x-f%02d=v%d"):format(i, i)
  end
  table.insert(want, 1, "host=t")
  for _ = 1, 2 do -- the second time on grown arrays
    local res = assert(H.request(c, "GET /many HTTP/1.1\r\n" .. table.concat(fields) .. "Host: t\r\n\r\n"))
    T.eq(res.body, "GET|/many||1.1|" .. table.concat(want, ";") .. "|")
  end
  c:close()
  srv:close()
end)

T.test("malformed heads get the same answers as before the fast path", function()
  local srv = H.start(echo_app())
  local cases = {
    { "GET / HTTP/1.1\r\n\r\n", 400 }, -- no Host
    { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\nHost: t\r\n X: fold\r\n\r\n", 400 },
    { "GET /#frag HTTP/1.1\r\nHost: t\r\n\r\n", 400 },
    { "GET / HTTP/1.2\r\nHost: t\r\n\r\n", 400 }, -- llhttp: bad version
  }
  for _, case in ipairs(cases) do
    local c = H.connect(srv)
    local res = assert(H.request(c, case[1]))
    T.eq(res.status, case[2], case[1])
    c:close()
  end
  srv:close()
end)

T.test("responses of different shapes in one second get their own heads", function()
  local r = http.router()
  r:get("/a", function() return 200, "aaaa" end)
  r:get("/b", function() return 201, "bb" end)
  r:get("/j", function() return 200, { k = 1 } end)
  r:get("/e", function() return 200, "" end)
  local srv = H.start(r)
  local c = H.connect(srv)
  for _ = 1, 2 do
    local a = assert(H.request(c, "GET /a HTTP/1.1\r\nHost: t\r\n\r\n"))
    T.eq({ a.status, a.headers["content-type"], a.headers["content-length"], a.body },
      { 200, "text/plain; charset=utf-8", "4", "aaaa" })
    local b = assert(H.request(c, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n"))
    T.eq({ b.status, b.headers["content-length"], b.body }, { 201, "2", "bb" })
    local j = assert(H.request(c, "GET /j HTTP/1.1\r\nHost: t\r\n\r\n"))
    T.eq({ j.headers["content-type"], j.body }, { "application/json", '{"k":1}' })
    local e = assert(H.request(c, "GET /e HTTP/1.1\r\nHost: t\r\n\r\n"))
    T.eq({ e.headers["content-type"], e.headers["content-length"] }, { nil, "0" })
    local h = assert(H.request(c, "HEAD /a HTTP/1.1\r\nHost: t\r\n\r\n", { head = true }))
    T.eq({ h.headers["content-length"], h.body }, { "4", "" })
  end
  -- HTTP/1.0 kept alive and closed.
  local ka = assert(H.request(c, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
  T.eq(ka.headers.connection, "keep-alive")
  local cl = assert(H.request(c, "GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
  T.eq(cl.headers.connection, "close")
  T.ok(H.closed(c))
  c:close()
  srv:close()
end)

T.test("a connection kept busy is not closed by its idle timeout", function()
  local srv = H.start(function() return 200, "ok" end, { idle_timeout = 0.1 })
  local c = H.connect(srv)
  -- Twelve gaps of 25 ms add up to three idle timeouts: the connection
  -- lives on only because every request re-arms the timer.
  for _ = 1, 12 do
    T.eq(assert(H.request(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")).status, 200)
    orrery.sleep(0.025)
  end
  T.ok(H.closed(c), "closed once idle")
  c:close()
  srv:close()
end)

T.test("many connections going idle and busy again share read buffers", function()
  local srv = H.start(function(req) return 200, req.path end, { max_connections = 1000 })
  local cs = {}
  for i = 1, 200 do cs[i] = H.connect(srv) end
  for round = 1, 3 do
    for i, c in ipairs(cs) do assert(c:write(("GET /%d/%d HTTP/1.1\r\nHost: t\r\n\r\n"):format(round, i))) end
    for i, c in ipairs(cs) do T.eq(assert(H.read_response(c)).body, ("/%d/%d"):format(round, i)) end
  end
  for _, c in ipairs(cs) do c:close() end
  srv:close()
end)

-- Requests on a kept-alive connection run through one trace for the
-- request and one for the wait: an abort in orrery/http/ (an NYI, a C
-- function called the Lua C API way) would put the interpreter back on
-- the request path.
T.test("the request loop stays JIT-compiled", function()
  if not jit.status() then T.skip("the JIT is off") end
  local jutil = require "jit.util"
  local vmdef = require "jit.vmdef"
  local srv = H.start(function() return 200, "ok" end)
  local c = H.connect(srv)
  T.eq(assert(H.request(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")).status, 200)
  jit.flush()
  local aborts = {}
  local function on_trace(what, _, func, pc, code)
    if what ~= "abort" then return end
    local info = jutil.funcinfo(func, pc)
    local why = tostring(vmdef.traceerr[code] or code)
    if (info.source or ""):find("orrery/http/", 1, true) and not T.BENIGN_ABORTS[why] then
      aborts[#aborts + 1] = ("%s:%s: %s"):format(info.source, tostring(info.currentline), why)
    end
  end
  jit.attach(on_trace, "trace")
  for _ = 1, 2000 do
    assert(c:write("GET / HTTP/1.1\r\nHost: t\r\n\r\n"))
    assert(H.read_response(c))
  end
  jit.attach(on_trace)
  T.eq(aborts, {})
  c:close()
  srv:close()
end)

-- The same for JSON bodies: the encoder's loops get traces of their own,
-- and the request path must link through them back to the request loop
-- instead of leaving the rest of each response to the interpreter (a
-- trace that starts inside a pcall cannot return through it).
T.test("JSON responses stay JIT-compiled: no trace falls back to the interpreter", function()
  if not jit.status() then T.skip("the JIT is off") end
  local jutil = require "jit.util"
  local vmdef = require "jit.vmdef"
  local r = http.router()
  r:get("/json", function() return 200, { id = 123, status = "ok", items = { 1, 2, 3 } } end)
  local srv = H.start(r)
  local c = H.connect(srv)
  T.eq(assert(H.request(c, "GET /json HTTP/1.1\r\nHost: t\r\n\r\n")).status, 200)
  -- Pending finalizers would run in a GC step while a trace records
  -- ("error thrown or hook called during recording"): a flake, not a fact
  -- about the request path.
  collectgarbage()
  collectgarbage()
  jit.flush()
  local bad = {}
  local started = {} -- trace number -> where it started, if in our modules
  local repeats = {}
  local function where(func, pc)
    local info = jutil.funcinfo(func, pc)
    local src = info.source or ""
    if src:find("orrery/http/", 1, true) or src:find("orrery/json", 1, true) then
      return ("%s:%s"):format(src, tostring(info.currentline))
    end
  end
  local function on_trace(what, tr, func, pc, code)
    if what == "start" then
      started[tr] = where(func, pc) or false
    elseif what == "abort" and started[tr] then
      -- A positional abort once in a while is benign; the same one over
      -- and over means that part of the path never compiles.
      local why = tostring(vmdef.traceerr[code] or code)
      local key = started[tr] .. ": " .. why
      repeats[key] = (repeats[key] or 0) + 1
      if not T.BENIGN_ABORTS[why] or repeats[key] == 8 then bad[#bad + 1] = "abort: " .. key end
    elseif what == "stop" and started[tr] and jutil.traceinfo(tr).linktype == "interpreter" then
      bad[#bad + 1] = ("trace %d from %s falls back to the interpreter"):format(tr, started[tr])
    end
  end
  jit.attach(on_trace, "trace")
  for _ = 1, 2000 do
    assert(c:write("GET /json HTTP/1.1\r\nHost: t\r\n\r\n"))
    local body = assert(H.read_response(c)).body
    if #body ~= 40 then T.eq(json.decode(body), { id = 123, status = "ok", items = { 1, 2, 3 } }) end
  end
  jit.attach(on_trace)
  T.eq(bad, {})
  c:close()
  srv:close()
end)
