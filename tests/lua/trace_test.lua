-- SPDX-License-Identifier: MIT
-- trace_test.lua -- orrery.trace: the spans an in-process OTLP receiver
-- gets, checked against the OTLP JSON mapping; W3C traceparent and
-- tracestate read, continued and sent (client -> server A -> server B in
-- one process); sampling by ratio and by the parent's flag; the bounded
-- queue dropping and counting behind a stalled receiver; export failures;
-- trace ids in log lines; option checks.
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"
local json = require "orrery.json"
local log = require "orrery.log"
local trace = require "orrery.trace"

local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

-- -- The receiver --
--
-- An OTLP/HTTP endpoint on loopback (not traced itself). Each request's
-- decoded body goes to `bodies`; while `stall` is set the handler first
-- reports on `stalled` and waits for a value on `release`; `answer` is
-- the status it replies with.
local bodies, stalled, release = orrery.chan(1000), orrery.chan(10), orrery.chan(10)
local recv_state = { stall = false, answer = 200, answers = {}, ctype = {} }
local receiver = assert(http.listen(function(req)
  recv_state.ctype[#recv_state.ctype + 1] = req:header("content-type")
  if recv_state.stall then
    stalled:send(true)
    release:recv()
  end
  local body = assert(req:body())
  bodies:send(json.decode(body))
  local answer = table.remove(recv_state.answers, 1)
  if answer then return answer, "{}", { ["Retry-After"] = "0" } end
  return recv_state.answer, "{}"
end, { host = "127.0.0.1", port = 0, trace = false }))
local ENDPOINT = ("http://127.0.0.1:%d/v1/traces"):format(receiver.port)

local function configure(opts)
  local o = { endpoint = ENDPOINT, service_name = "trace-test", interval = 3600 }
  for k, v in pairs(opts or {}) do o[k] = v end
  trace.configure(o)
  recv_state.stall, recv_state.answer, recv_state.answers = false, 200, {}
  while bodies:try_recv() do end
end

-- -- The OTLP JSON mapping --

local function is_int(v) return type(v) == "number" and v % 1 == 0 end

local function check_value(v, where)
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  T.eq(n, 1, where .. ": one field in an AnyValue")
  if v.stringValue ~= nil then
    T.eq(type(v.stringValue), "string", where)
  elseif v.intValue ~= nil then
    T.match(v.intValue, "^%-?%d+$", where .. ": intValue is a decimal string")
  elseif v.doubleValue ~= nil then
    T.eq(type(v.doubleValue), "number", where)
  elseif v.boolValue ~= nil then
    T.eq(type(v.boolValue), "boolean", where)
  elseif v.arrayValue ~= nil then
    for i, x in ipairs(v.arrayValue.values) do check_value(x, where .. "[" .. i .. "]") end
  else
    T.fail(where .. ": unknown AnyValue field")
  end
end

-- attrs(list) -> { key = decoded value }, after checking each KeyValue.
local function attrs(list, where)
  T.eq(type(list), "table", where .. ": attributes is a list")
  local out = {}
  for i, kv in ipairs(list) do
    T.eq(type(kv.key), "string", where .. ": key")
    check_value(kv.value, ("%s attribute %d (%s)"):format(where, i, kv.key))
    local v = kv.value
    out[kv.key] = v.stringValue or (v.intValue and tonumber(v.intValue)) or v.doubleValue
    if v.boolValue ~= nil then out[kv.key] = v.boolValue end
  end
  return out
end

-- Checks one ExportTraceServiceRequest; returns its spans with their
-- attributes decoded into span.attrs.
local function check_request(req)
  local out = {}
  T.eq(type(req.resourceSpans), "table", "resourceSpans")
  for _, rs in ipairs(req.resourceSpans) do
    local ra = attrs(rs.resource.attributes, "resource")
    T.eq(ra["service.name"], "trace-test")
    T.eq(ra["telemetry.sdk.name"], "orrery")
    for _, ss in ipairs(rs.scopeSpans) do
      T.eq(ss.scope.name, "orrery.trace")
      for _, s in ipairs(ss.spans) do
        local w = "span " .. tostring(s.name)
        T.match(s.traceId, "^" .. ("[0-9a-f]"):rep(32) .. "$", w .. ": traceId is 32 lowercase hex digits")
        T.match(s.spanId, "^" .. ("[0-9a-f]"):rep(16) .. "$", w .. ": spanId is 16 lowercase hex digits")
        if s.parentSpanId ~= nil then
          T.match(s.parentSpanId, "^" .. ("[0-9a-f]"):rep(16) .. "$", w .. ": parentSpanId")
        end
        T.ok(is_int(s.kind) and s.kind >= 1 and s.kind <= 5, w .. ": kind is an integer enum")
        T.ok(is_int(s.status.code) and s.status.code >= 0 and s.status.code <= 2, w .. ": status code")
        T.match(s.startTimeUnixNano, "^%d+$", w .. ": start time is a string of nanoseconds")
        T.match(s.endTimeUnixNano, "^%d+$", w .. ": end time")
        T.eq(#s.startTimeUnixNano, 19, w .. ": unix nanoseconds of this century")
        T.ok(s.startTimeUnixNano <= s.endTimeUnixNano, w .. ": ends after it starts")
        s.attrs = attrs(s.attributes, w)
        for _, e in ipairs(s.events or {}) do
          T.match(e.timeUnixNano, "^%d+$", w .. ": event time")
          e.attrs = attrs(e.attributes or {}, w .. " event")
        end
        out[#out + 1] = s
      end
    end
  end
  return out
end

-- collect(n) -> n spans from the receiver (after a flush), by name too.
local function collect(n)
  T.eq(trace.flush(), true, "flush")
  local spans, by_name = {}, {}
  while #spans < n do
    local req, ok = bodies:recv(10)
    T.ok(ok, ("only %d of %d spans arrived"):format(#spans, n))
    for _, s in ipairs(check_request(req)) do
      spans[#spans + 1] = s
      by_name[s.name] = by_name[s.name] or {}
      table.insert(by_name[s.name], s)
    end
  end
  T.eq(#spans, n, "spans exported")
  T.eq(bodies:len(), 0, "no more batches")
  return spans, by_name
end

local function by_id(spans)
  local m = {}
  for _, s in ipairs(spans) do m[s.spanId] = s end
  return m
end

-- Server B answers with the traceparent and tracestate it got and the
-- ids in its request's context; server A calls B.
local b_srv = H.start(function(req)
  local cur = trace.current(req.ctx)
  return 200, { traceparent = req:header("traceparent") or json.null,
    tracestate = req:header("tracestate") or json.null,
    trace_id = cur and cur.trace_id or json.null, span_id = cur and cur.span_id or json.null }
end)
local B_URL = ("http://127.0.0.1:%d/b"):format(b_srv.port)

local app = http.router()
app:get("/a/:id", function(req)
  -- No ctx given: the client takes the handler coroutine's, which
  -- carries the server span.
  local res = assert(http.get(B_URL))
  return 200, res:json()
end)
app:get("/fail", function() error("boom") end)
app:get("/missing", function() return 404, "no\n" end)
local a_srv = H.start(app)
local A = ("http://127.0.0.1:%d"):format(a_srv.port)

-- -- Propagation --

T.test("client -> server A -> server B: one trace, each span the child of the one before", function()
  configure()
  local root, ctx = trace.start(nil, "test root")
  local res = assert(http.get(A .. "/a/7", { ctx = ctx }))
  T.eq(res.status, 200)
  local seen = res:json()
  root:finish()
  local spans, named = collect(5)
  local ids = by_id(spans)
  for _, s in ipairs(spans) do T.eq(s.traceId, root.trace_id, s.name .. ": one trace id") end
  local r = named["test root"][1]
  T.eq(r.parentSpanId, nil, "the root has no parent")
  T.eq(r.kind, 1, "INTERNAL")
  local sa = named["GET /a/:id"][1]
  T.eq(sa.kind, 2, "SERVER")
  local c1 = ids[sa.parentSpanId]
  T.eq(c1.kind, 3, "server A's parent is the test's client span")
  T.eq(c1.parentSpanId, r.spanId)
  T.eq(c1.attrs["url.full"], A .. "/a/7")
  T.eq(c1.attrs["http.response.status_code"], 200)
  T.eq(sa.attrs["http.route"], "/a/:id")
  T.eq(sa.attrs["http.request.method"], "GET")
  T.eq(sa.attrs["url.path"], "/a/7")
  T.eq(sa.attrs["http.response.status_code"], 200)
  T.eq(sa.attrs["server.port"], a_srv.port)
  -- B has no route, so its span is named by the method alone, as are
  -- the client spans.
  local c2, s_b
  for _, s in ipairs(named["GET"]) do
    if s.kind == 3 and s.parentSpanId == sa.spanId then c2 = s end
    if s.kind == 2 then s_b = s end
  end
  T.ok(c2, "A's client span")
  T.eq(c2.parentSpanId, sa.spanId, "A's client span is a child of A's server span")
  T.eq(s_b.parentSpanId, c2.spanId, "B's server span is a child of A's client span")
  T.eq(seen.traceparent, ("00-%s-%s-01"):format(root.trace_id, c2.spanId), "traceparent sent to B")
  T.eq(seen.trace_id, root.trace_id)
  T.eq(seen.span_id, s_b.spanId, "B's handler sees its server span in req.ctx")
  T.eq(recv_state.ctype[#recv_state.ctype], "application/json")
end)

T.test("an incoming traceparent is continued and tracestate passed on", function()
  configure()
  local tid, pid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
  local c = H.connect(a_srv)
  local res = H.request(c, "GET /a/1 HTTP/1.1\r\nHost: x\r\ntraceparent: 00-" .. tid .. "-" .. pid
    .. "-01\r\ntracestate: rojo=00f067aa0ba902b7, ,congo=t61rcWkgMzE\r\n\r\n")
  c:close()
  T.eq(res.status, 200)
  local seen = json.decode(res.body)
  local _, named = collect(3)
  local sa = named["GET /a/:id"][1]
  T.eq(sa.traceId, tid)
  T.eq(sa.parentSpanId, pid)
  T.eq(sa.traceState, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
  T.eq(seen.tracestate, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "tracestate sent downstream")
  T.eq(seen.trace_id, tid)
end)

T.test("an invalid traceparent starts a new trace", function()
  configure()
  local c = H.connect(b_srv)
  local res = H.request(c, "GET /b HTTP/1.1\r\nHost: x\r\ntraceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01\r\n\r\n")
  c:close()
  local seen = json.decode(res.body)
  local spans = collect(1)
  T.eq(spans[1].parentSpanId, nil)
  T.ne(spans[1].traceId, "4bf92f3577b34da6a3ce929d0e0e4736")
  T.eq(seen.trace_id, spans[1].traceId)
end)

T.test("traceparent parsing follows W3C Trace Context level 1", function()
  local tid, pid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
  local cases = {
    { "00-" .. tid .. "-" .. pid .. "-01", true, true },
    { "00-" .. tid .. "-" .. pid .. "-00", true, false },
    { "00-" .. tid .. "-" .. pid .. "-09", true, true },    -- other flag bits: sampled is bit 0
    { "00-" .. tid .. "-" .. pid .. "-02", true, false },
    { " 00-" .. tid .. "-" .. pid .. "-01 ", true, true },  -- optional whitespace around it
    { "01-" .. tid .. "-" .. pid .. "-01", true, true },    -- a later version, same length
    { "cc-" .. tid .. "-" .. pid .. "-01-what-the-future-will-be", true, true },
    { "cc-" .. tid .. "-" .. pid .. "-01.extra", false },   -- later version: a dash must follow
    { "00-" .. tid .. "-" .. pid .. "-01-extra", false },   -- version 00 is exactly 55 characters
    { "ff-" .. tid .. "-" .. pid .. "-01", false },         -- version ff is invalid
    { "0g-" .. tid .. "-" .. pid .. "-01", false },
    { "00-" .. tid:upper() .. "-" .. pid .. "-01", false }, -- uppercase hex
    { "00-" .. tid .. "-" .. pid:upper() .. "-01", false },
    { "00-" .. ("0"):rep(32) .. "-" .. pid .. "-01", false }, -- all-zero trace id
    { "00-" .. tid .. "-" .. ("0"):rep(16) .. "-01", false }, -- all-zero parent id
    { "00-" .. tid:sub(2) .. "-" .. pid .. "-01", false },  -- short trace id
    { "00-" .. tid .. "-" .. pid .. "-1", false },
    { "00-" .. tid .. "-" .. pid .. "-0x", false },
    { "00_" .. tid .. "_" .. pid .. "_01", false },
    { "00-" .. tid .. "-" .. pid .. "-01, 00-" .. tid .. "-" .. pid .. "-01", false }, -- two fields
    { "", false },
  }
  for _, c in ipairs(cases) do
    local sc = trace.extract { traceparent = c[1] }
    if c[2] then
      T.ok(sc, "valid: " .. c[1])
      T.eq(sc.trace_id, tid, c[1])
      T.eq(sc.span_id, pid, c[1])
      T.eq(sc.sampled, c[3], "sampled flag of " .. c[1])
    else
      T.eq(sc, nil, "invalid: " .. c[1])
    end
  end
  -- Any case of the field name, a request's headers, tracestate lists.
  local sc = trace.extract { TraceParent = "00-" .. tid .. "-" .. pid .. "-01",
    TRACESTATE = { "a=1", "b@c=2 " } }
  T.eq(sc.tracestate, "a=1,b@c=2")
  local bad_states = { "A=1", "a=", "a=1,a=2", "a=x=y", "1a=1", "a=b,c", "a=1 ,b=\1" }
  for _, s in ipairs(bad_states) do
    T.eq(trace.extract({ traceparent = "00-" .. tid .. "-" .. pid .. "-01", tracestate = s }).tracestate,
      false, "tracestate dropped: " .. s)
  end
  local many = {}
  for i = 1, 33 do many[i] = "k" .. i .. "=v" end
  T.eq(trace.extract({ traceparent = "00-" .. tid .. "-" .. pid .. "-01",
    tracestate = table.concat(many, ",") }).tracestate, false, "more than 32 members")
  T.eq(trace.extract {}, nil)
end)

T.test("inject writes the current span's traceparent; spans started from one continue it", function()
  configure()
  local sc = trace.extract { traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    tracestate = "x=y" }
  local span, ctx = trace.start(nil, "consumer", { kind = "consumer", parent = sc })
  T.eq(span.trace_id, sc.trace_id)
  local h = trace.inject(ctx, {})
  T.eq(h.traceparent, ("00-%s-%s-01"):format(sc.trace_id, span.span_id))
  T.eq(h.tracestate, "x=y")
  T.eq(trace.current(ctx), span)
  T.eq(trace.inject(orrery.context.background(), {}).traceparent, nil, "no span, no field")
  local child = trace.start(ctx, "child")
  -- Without a context: the running coroutine's.
  local bare = trace.start("bare", { kind = "internal" })
  T.ne(bare.trace_id, sc.trace_id, "the test's coroutine carries no span")
  local inner = trace.start(orrery.context.with_value("x", 1, ctx), "child of a derived context")
  T.eq(inner.trace_id, sc.trace_id)
  T.eq(child.trace_id, sc.trace_id)
  local fresh = trace.start(ctx, "new root", { parent = false })
  T.ne(fresh.trace_id, sc.trace_id)
  child:finish()
  span:finish()
  local spans = collect(2)
  local ids = by_id(spans)
  T.eq(ids[child.span_id].parentSpanId, span.span_id)
  T.eq(ids[span.span_id].parentSpanId, "00f067aa0ba902b7")
  T.eq(ids[span.span_id].kind, 5, "CONSUMER")
end)

-- -- Sampling --

T.test("ratio 0: nothing is exported, ids still propagate with flags 00", function()
  configure { ratio = 0 }
  local before = trace.stats().exported
  local root, ctx = trace.start(nil, "unsampled root")
  T.eq(root.sampled, false)
  local res = assert(http.get(A .. "/a/1", { ctx = ctx }))
  local seen = res:json()
  root:finish()
  T.eq(seen.trace_id, root.trace_id, "the trace id reaches B")
  T.match(seen.traceparent, "^00%-" .. root.trace_id .. "%-[0-9a-f]+%-00$")
  T.eq(trace.flush(), true)
  T.eq(trace.stats().exported, before)
  T.eq(trace.stats().queued, 0)
  T.eq(bodies:len(), 0, "the receiver got nothing")
end)

T.test("the parent's sampled flag decides, whatever the ratio", function()
  local tid = "4bf92f3577b34da6a3ce929d0e0e4736"
  configure { ratio = 0 }
  local c = H.connect(b_srv)
  local res = H.request(c, "GET /b HTTP/1.1\r\nHost: x\r\ntraceparent: 00-" .. tid .. "-00f067aa0ba902b7-01\r\n\r\n")
  T.eq(res.status, 200)
  local spans = collect(1)
  T.eq(spans[1].traceId, tid, "sampled parent, ratio 0: exported")
  configure { ratio = 1 }
  local before = trace.stats().exported
  res = H.request(c, "GET /b HTTP/1.1\r\nHost: x\r\ntraceparent: 00-" .. tid .. "-00f067aa0ba902b7-00\r\n\r\n")
  c:close()
  T.eq(json.decode(res.body).trace_id, tid)
  T.eq(trace.flush(), true)
  T.eq(trace.stats().exported, before, "unsampled parent, ratio 1: not exported")
  T.eq(bodies:len(), 0)
end)

T.test("the ratio decides on the trace id, as TraceIdRatioBased does", function()
  configure { ratio = 0.5 }
  -- The last 8 bytes, shifted right by one, against ratio * 2^63.
  T.eq(trace._sampled_id("ffffffffffffffff0000000000000000"), true)
  T.eq(trace._sampled_id("00000000000000007ffffffffffffffe"), true, "2^62 - 1")
  T.eq(trace._sampled_id("00000000000000007fffffffffffffff"), true, "2^62 - 1 too")
  T.eq(trace._sampled_id("00000000000000008000000000000000"), false, "2^62")
  T.eq(trace._sampled_id("0000000000000000ffffffffffffffff"), false)
  configure { ratio = 0.25 }
  T.eq(trace._sampled_id("00000000000000003ffffffffffff000"), true)
  T.eq(trace._sampled_id("00000000000000004000000000000000"), false)
  -- Over many roots the share sampled follows the ratio, and each span's
  -- decision is the one its id implies.
  local n = 0
  for _ = 1, 2000 do
    local s = trace.start(nil, "r")
    T.eq(s.sampled, trace._sampled_id(s.trace_id))
    if s.sampled then n = n + 1 end
  end
  T.ok(n > 300 and n < 700, "about a quarter sampled: " .. n)
  configure()
end)

-- -- Spans --

T.test("attributes, events and errors in the OTLP mapping", function()
  configure()
  local span, ctx = trace.start(nil, "work", { attributes = { ["job.id"] = 42, ratio = 0.5 } })
  span:set("ok", true):set("name", "x\"y"):set("tags", { "a", "b" }):set("raw", "caf\233\n")
  span:event("step", { n = 1 })
  local inner = trace.start(ctx, "inner")
  inner:fail("disk full")
  inner:finish()
  inner:finish() -- twice: still one span
  span:finish()
  local spans = collect(2)
  local ids = by_id(spans)
  local w = ids[span.span_id]
  T.eq(w.attrs["job.id"], 42)
  T.eq(w.attrs.ratio, 0.5)
  T.eq(w.attrs.ok, true)
  T.eq(w.attrs.name, "x\"y")
  T.eq(w.attrs.raw, "caf\195\169\n", "bytes that are not UTF-8 are sent as code points")
  T.eq(w.events[1].name, "step")
  T.eq(w.events[1].attrs.n, 1)
  T.eq(w.status.code, 0, "UNSET")
  local i = ids[inner.span_id]
  T.eq(i.status.code, 2, "ERROR")
  T.eq(i.status.message, "disk full")
  T.eq(i.events[1].name, "exception")
  T.eq(i.events[1].attrs["exception.message"], "disk full")
end)

T.test("a 5xx is an error on the server span; a 4xx on the client span", function()
  configure()
  local root, ctx = trace.start(nil, "root")
  T.eq(assert(http.get(A .. "/fail", { ctx = ctx })).status, 500)
  T.eq(assert(http.get(A .. "/missing", { ctx = ctx })).status, 404)
  root:finish()
  local spans = collect(5)
  local fail_srv, miss_srv, miss_cli
  for _, s in ipairs(spans) do
    if s.name == "GET /fail" then fail_srv = s end
    if s.name == "GET /missing" then miss_srv = s end
    if s.kind == 3 and s.attrs["http.response.status_code"] == 404 then miss_cli = s end
  end
  T.eq(fail_srv.status.code, 2)
  T.eq(fail_srv.attrs["error.type"], "500")
  T.eq(miss_srv.status.code, 0, "a 404 is not the server's error")
  T.eq(miss_cli.status.code, 2, "but it is the client's")
  T.eq(#a_srv.logged > 0, true)
end)

T.test("a client error (refused) is recorded on the client span", function()
  configure()
  local l = assert(require("orrery.net").listen { host = "127.0.0.1", port = 0 })
  local port = l.port
  l:close()
  local root, ctx = trace.start(nil, "root")
  local res, err = http.get(("http://127.0.0.1:%d/"):format(port), { ctx = ctx })
  T.eq(res, nil)
  root:finish()
  local spans = collect(2)
  local c
  for _, s in ipairs(spans) do if s.kind == 3 then c = s end end
  T.eq(c.status.code, 2)
  T.eq(c.attrs["error.type"], http.err_code(err))
end)

T.test("log lines inside a traced handler carry its trace_id and span_id", function()
  configure()
  local level = log.level()
  log.set_level("info") -- the test runner starts files at "warn"
  local path = os.tmpname()
  assert(log.open(path))
  local srv = H.start(function(req)
    log.info("inside the handler")
    return 200, "ok"
  end)
  local root, ctx = trace.start(nil, "root")
  assert(http.get(("http://127.0.0.1:%d/"):format(srv.port), { ctx = ctx }))
  root:finish()
  log.info("outside")
  log.flush()
  log.close()
  log.set_level(level)
  local f = assert(io.open(path))
  local lines = {}
  for l in f:lines() do lines[#lines + 1] = json.decode(l) end
  f:close()
  os.remove(path)
  local spans = collect(3)
  local server_span
  for _, s in ipairs(spans) do if s.kind == 2 then server_span = s end end
  local by = {}
  for _, l in ipairs(lines) do by[l.msg] = l end
  T.eq(by["inside the handler"].trace_id, root.trace_id)
  T.eq(by["inside the handler"].span_id, server_span.spanId)
  T.eq(by["http request"].trace_id, root.trace_id, "the access line too")
  T.eq(by["outside"].trace_id, nil, "the handler's binding does not outlive it")
  srv:close()
end)

T.test("saga steps and compensations are spans under the caller's span", function()
  configure()
  local saga = require "orrery.saga"
  local dir = io.popen("mktemp -d"):read("*l")
  local def = saga.define { name = "traced", journal = dir .. "/j.db", recover = false, steps = {
    { name = "pay", action = function() return true end, compensate = function() return true end },
    { name = "reserve", action = function() return saga.refuse("out of stock") end },
  } }
  local root, ctx = trace.start(nil, "root")
  local r, err = orrery.with_context(ctx, function() return def:run({}) end)
  root:finish()
  T.eq({ r, err }, { nil, "out of stock" })
  local spans, by_name = collect(4)
  local ids = by_id(spans)
  for _, name in ipairs { "saga step pay", "saga step reserve", "saga compensate pay" } do
    local sp = assert(by_name[name], name)[1]
    T.eq(sp.traceId, root.trace_id, name)
    T.eq(ids[sp.parentSpanId].name, "root", name .. "'s parent")
    T.eq(sp.attrs["saga.name"], "traced")
  end
  T.eq(by_name["saga step reserve"][1].status.code, 2, "the refused step is an error")
  os.execute("rm -rf " .. dir)
end)

-- -- The exporter --

T.test("batches of `batch` spans; a full queue drops and counts", function()
  configure { queue = 4, batch = 2 }
  local before = trace.stats()
  recv_state.stall = true
  trace.start(nil, "s1"):finish()
  trace.start(nil, "s2"):finish() -- a full batch: the exporter posts it
  stalled:recv()                  -- and the receiver holds it
  for i = 3, 8 do trace.start(nil, "s" .. i):finish() end
  local st = trace.stats()
  T.eq(st.queued, 4, "the queue holds 4")
  T.eq(st.dropped - before.dropped, 2, "2 dropped")
  recv_state.stall = false
  release:send(true)
  local spans = collect(6)
  local names = {}
  for _, s in ipairs(spans) do names[#names + 1] = s.name end
  table.sort(names)
  T.eq(names, { "s1", "s2", "s3", "s4", "s5", "s6" })
  st = trace.stats()
  T.eq(st.exported - before.exported, 6)
  T.eq(st.exports - before.exports, 3, "three batches of two")
  T.eq(st.queued, 0)
end)

T.test("a full batch goes at once; the rest waits for the interval", function()
  configure { batch = 3 } -- interval: an hour
  local done = orrery.chan(10)
  trace._on_export = function(n) done:try_send(n) end
  for i = 1, 4 do trace.start(nil, "b" .. i):finish() end
  local req, ok = bodies:recv(10)
  T.ok(ok)
  T.eq(#check_request(req), 3, "one full batch")
  T.eq(done:recv(10), 3, "the batch is done")
  -- The exporter is back to waiting, with the fourth span queued.
  T.eq(trace.stats().queued, 1, "the fourth span waits")
  trace._on_export = nil
  T.eq(collect(1)[1].name, "b4")
end)

T.test("a failed export is dropped and counted", function()
  configure()
  recv_state.answer = 500
  local before = trace.stats()
  trace.start(nil, "lost"):finish()
  T.eq(trace.flush(), true)
  local _, ok = bodies:recv(10)
  T.ok(ok)
  local st = trace.stats()
  T.eq(st.failed - before.failed, 1)
  T.eq(st.export_errors - before.export_errors, 1)
  T.eq(st.exported, before.exported)
  T.eq(st.last_error, "status 500")
  recv_state.answer = 200
end)

T.test("a retryable answer (503) is tried once more, after Retry-After", function()
  configure()
  local before = trace.stats()
  recv_state.answers = { 503 }
  trace.start(nil, "retried"):finish()
  T.eq(trace.flush(), true)
  local first, second = bodies:recv(10), bodies:recv(10)
  T.eq(check_request(first)[1].spanId, check_request(second)[1].spanId, "the same batch again")
  local st = trace.stats()
  T.eq(st.retries - before.retries, 1)
  T.eq(st.exported - before.exported, 1)
  T.eq(st.failed, before.failed)
  -- Twice: dropped and counted, no third try.
  recv_state.answers = { 503, 503 }
  trace.start(nil, "lost after a retry"):finish()
  T.eq(trace.flush(), true)
  T.ok(bodies:recv(10))
  T.ok(bodies:recv(10))
  T.eq(bodies:len(), 0)
  st = trace.stats()
  T.eq(st.retries - before.retries, 2)
  T.eq(st.failed - before.failed, 1)
  T.eq(st.last_error, "status 503")
end)

T.test("the exporter's counters are in orrery.metrics", function()
  configure()
  local metrics = require "orrery.metrics"
  trace.start(nil, "counted"):finish()
  collect(1)
  local text = metrics.expose()
  local n = tonumber(text:match("\norrery_trace_spans_exported_total (%d+)"))
  T.eq(n, trace.stats().exported)
  T.match(text, 'orrery_trace_spans_dropped_total{reason="queue_full"} %d+')
  T.match(text, "orrery_trace_queue_spans 0")
end)

T.test("flush waits at most its timeout", function()
  configure()
  recv_state.stall = true
  trace.start(nil, "held"):finish()
  local out = T.spawn(trace.flush, 0.05)
  stalled:recv()
  local r = out:recv()
  T.eq(r[2], nil)
  T.eq(r[3], "timeout")
  release:send(true)
  recv_state.stall = false
  collect(1)
end)

T.test("the blocking http.serve flushes the queued spans before it returns", function()
  configure() -- interval: an hour
  trace.start(nil, "queued before the stop"):finish()
  T.eq(trace.stats().queued, 1)
  local ctx, cancel = orrery.context.with_cancel()
  cancel() -- the server stops as soon as it has started
  http.serve(function() return 200 end, { host = "127.0.0.1", port = 0, ctx = ctx })
  T.eq(trace.stats().queued, 0)
  local req, ok = bodies:recv(10)
  T.ok(ok)
  T.eq(check_request(req)[1].name, "queued before the stop")
end)

-- -- Off --

T.test("shutdown: the hooks are off, no traceparent is sent", function()
  configure()
  T.eq(trace.shutdown(), true)
  T.eq(trace.enabled(), false)
  local res = assert(http.get(B_URL))
  T.eq(res:json().traceparent, json.null)
  -- Spans started by hand still carry ids, and are not exported.
  local s, ctx = trace.start(nil, "off")
  T.eq(s.sampled, false)
  T.eq(trace.current(ctx), s)
  s:finish()
  T.eq(trace.stats().queued, 0)
end)

T.test("the OTEL_* environment variables are the defaults", function()
  local src = [[
    local trace = require "orrery.trace"
    trace.configure()
    local s = trace.settings()
    print(s.endpoint, s.service_name, s.ratio, s.queue, s.batch, s.interval)
    trace.configure { endpoint = "http://127.0.0.1:9/x", service_name = "given", ratio = 1 }
    s = trace.settings()
    print(s.endpoint, s.service_name, s.ratio)
  ]]
  local st, out = T.script(src, { env = { OTEL_EXPORTER_OTLP_ENDPOINT = "http://collector:4318/",
    OTEL_SERVICE_NAME = "orders", OTEL_TRACES_SAMPLER = "parentbased_traceidratio",
    OTEL_TRACES_SAMPLER_ARG = "0.25" } })
  T.eq(st, 0)
  T.eq(out, "http://collector:4318/v1/traces\torders\t0.25\t2048\t512\t5\n"
    .. "http://127.0.0.1:9/x\tgiven\t1\n")
  st, out = T.script(src, { env = { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "http://c:4318/custom",
    OTEL_EXPORTER_OTLP_ENDPOINT = "http://ignored:4318", OTEL_TRACES_SAMPLER = "always_off" } })
  T.eq(st, 0)
  T.match(out, "^http://c:4318/custom\tunknown_service:orrery\t0\t")
  st, out = T.script(src)
  T.match(out, "^http://localhost:4318/v1/traces\tunknown_service:orrery\t1\t")
end)

-- -- Misuse --

T.test("bad options and arguments raise naming the function and option", function()
  T.raises(function() trace.configure { bogus = 1 } end, "orrery.trace.configure: unknown option 'bogus'")
  T.raises(function() trace.configure { ratio = 2 } end, "orrery.trace.configure: bad option 'ratio'")
  T.raises(function() trace.configure { queue = 0 } end, "orrery.trace.configure: bad option 'queue'")
  T.raises(function() trace.configure { batch = 1.5 } end, "orrery.trace.configure: bad option 'batch'")
  T.raises(function() trace.configure { interval = 0 } end, "orrery.trace.configure: bad option 'interval'")
  T.raises(function() trace.configure { endpoint = "ftp://x" } end, "orrery.trace.configure: bad option 'endpoint'")
  T.raises(function() trace.configure { headers = { x = {} } } end, "orrery.trace.configure: bad option 'headers'")
  T.raises(function() trace.configure "x" end, "orrery.trace.configure: bad argument #1")
  T.raises(function() trace.start(nil, 42) end, "orrery.trace.start: bad argument #2")
  T.raises(function() trace.start(nil, "x", { kind = "sever" }) end, "orrery.trace.start: bad option 'kind'")
  T.raises(function() trace.start(nil, "x", { colour = 1 }) end, "orrery.trace.start: unknown option 'colour'")
  T.raises(function() trace.start(nil, "x", { parent = "00-..." }) end, "orrery.trace.start: bad option 'parent'")
  T.raises(function() trace.start(42, "x") end, "orrery.trace.start: bad argument #1")
  T.raises(function() trace.extract("x") end, "orrery.trace.extract: bad argument #1")
  T.raises(function() trace.flush(-1) end, "orrery.trace.flush: bad argument #1")
  local s = trace.start(nil, "x")
  T.raises(function() s.set("k", 1) end, "orrery.trace:set: bad self")
  T.raises(function() s:set(1, 1) end, "orrery.trace:set: bad argument #1")
  T.raises(function() s:event({}) end, "orrery.trace:event: bad argument #1")
  T.raises(function() http.listen(function() end, { port = 0, trace = 1 }) end,
    "orrery.http.listen: bad option 'trace'")
  -- The error names the caller's line.
  local _, err = pcall(trace.configure, { bogus = 1 })
  T.match(err, "^orrery.trace.configure")
  local ok, e2 = pcall(function() trace.configure { bogus = 1 } end)
  T.eq(ok, false)
  T.match(e2, "trace_test%.lua:%d+: orrery.trace.configure")
end)

-- A kick left in the exporter's channel once used to arm its interval
-- timer for an empty queue, which hid a deadlock for that long.
T.test("an idle exporter holds no timer: a stuck script is still a deadlock", function()
  local st, _, err = T.script([[
    local trace = require "orrery.trace"
    trace.configure { endpoint = "http://127.0.0.1:1/v1/traces", interval = 3600 }
    trace.start(nil, "x"):finish()
    assert(trace.flush())
    require("orrery").chan():recv()
  ]], { timeout = 30 })
  T.eq(st, 2)
  T.match(err, "all coroutines are asleep %- deadlock!")
end)

-- -- JIT --

T.test("traced requests stay JIT-compiled (sampled and not)", function()
  if not jit.status() then T.skip("the JIT is off") end
  local jutil, vmdef = require "jit.util", require "jit.vmdef"
  for _, ratio in ipairs { 1, 0 } do
    -- The request path only: no batch is encoded while the loop runs
    -- (the exporter's loops over attributes of mixed types are another
    -- matter, off that path).
    configure { ratio = ratio, interval = 3600, queue = 4096, batch = 4096 }
    local srv = H.start(function() return 200, "ok" end)
    local c = H.connect(srv)
    T.eq(assert(H.request(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")).status, 200)
    jit.flush()
    local aborts = {}
    local function on_trace(what, _, func, pc, code)
      if what ~= "abort" then return end
      local info = jutil.funcinfo(func, pc)
      local why = tostring(vmdef.traceerr[code] or code)
      local src = info.source or ""
      if (src:find("orrery/trace.lua", 1, true) or src:find("orrery/http/server", 1, true)
          or src:find("orrery/context", 1, true)) and not T.BENIGN_ABORTS[why] then
        aborts[#aborts + 1] = ("%s:%s: %s"):format(src, tostring(info.currentline), why)
      end
    end
    jit.attach(on_trace, "trace")
    for _ = 1, 2000 do
      assert(c:write("GET / HTTP/1.1\r\nHost: t\r\n\r\n"))
      assert(H.read_response(c))
    end
    jit.attach(on_trace)
    T.eq(aborts, {}, "ratio " .. ratio)
    c:close()
    srv:close()
    trace.flush()
    while bodies:try_recv() do end
  end
end)
