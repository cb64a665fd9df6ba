-- SPDX-License-Identifier: MIT
-- metrics_test.lua -- orrery.metrics: counters, gauges, histograms, label
-- sets and their limit, names, both expositions (checked by promtool),
-- the built-in metrics, the HTTP handler, and JIT-compiled increments.
local T = require "orrery.test"
local metrics = require "orrery.metrics"
local breaker = require "orrery.breaker"
local limit = require "orrery.limit"
local http = require "orrery.http"

local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")
local root = (debug.getinfo(1, "S").source:match("^@(.*)tests/lua/metrics_test%.lua$") or "")

-- raises_like(fn, pattern): fn raises an error that matches the Lua pattern.
local function raises_like(fn, pattern)
  T.match(T.raises(fn), pattern)
end

-- The exposition's lines as a set, and in order.
local function lines(text)
  local set, list = {}, {}
  for l in text:gmatch("([^\n]*)\n") do
    set[l] = true
    list[#list + 1] = l
  end
  return set, list
end

T.test("counter: inc, labels, _total suffix, with()", function()
  local r = metrics.registry()
  local c = r:counter { name = "orders_created", help = "Orders created.", labels = { "result" } }
  T.eq(c.name, "orders_created_total")
  c:inc(1, "ok")
  c:inc(2, "ok")
  c:inc(nil, "failed")
  local ok = c:with("ok")
  ok:inc()
  ok:inc(0.5)
  T.eq(c:value("ok"), 4.5)
  T.eq(c:value("failed"), 1)
  T.eq(c:value("other"), nil)
  T.eq(r:get("orders_created_total"), c)
  T.eq(r:get("orders_created"), c)
  local set = lines(r:expose())
  T.ok(set["# TYPE orders_created_total counter"])
  T.ok(set["# HELP orders_created_total Orders created."])
  T.ok(set['orders_created_total{result="ok"} 4.5'])
  T.ok(set['orders_created_total{result="failed"} 1'])
end)

T.test("counter: negative or non-number increments raise at the caller", function()
  local c = metrics.registry():counter { name = "x_total", help = "x" }
  raises_like(function() c:inc(-1) end, "metrics_test.lua:%d+: orrery.metrics:inc: bad argument #1")
  T.raises(function() c:inc("1") end, "bad argument #1")
  raises_like(function() c:inc(0 / 0) end, "non%-negative number expected, got nan")
  raises_like(function() c:with():inc(-2) end, "metrics_test.lua:%d+:.*bad argument #1")
  T.raises(function() c.inc(nil, "x") end, "bad self")
end)

T.test("number and boolean label values name the same series as their strings", function()
  local c = metrics.registry():counter { name = "http_responses_total", help = "h", labels = { "code", "cached" } }
  c:inc(1, 200, true)
  c:inc(1, "200", "true")
  c:with(200, true):inc()
  T.eq(c:value("200", "true"), 3)
  T.eq(c:series_count(), 1)
  T.raises(function() c:inc(1, 0 / 0, "x") end, "NaN is not a label value")
  raises_like(function() c:inc(1, {}, "x") end, "metrics_test.lua:%d+: .*label code: bad value")
  raises_like(function() c:value(0 / 0, "x") end, "metrics_test.lua:%d+: .*NaN")
  raises_like(function() c:remove({}, "x") end, "metrics_test.lua:%d+: .*bad value")
end)

T.test("wrong number of label values raises at the caller's line", function()
  local c = metrics.registry():counter { name = "a_total", help = "a", labels = { "x", "y" } }
  raises_like(function() c:inc(1, "only") end, "metrics_test.lua:%d+: orrery.metrics: a_total: expected 2 label values %(x, y%), got 1")
  T.raises(function() c:inc(1, "a", "b", "c") end, "got 3")
  raises_like(function() c:with("a") end, "metrics_test.lua:%d+:.*expected 2 label values")
  local u = metrics.registry():counter { name = "u_total", help = "u" }
  T.raises(function() u:with("a") end, "expected 0 label values")
  local four = metrics.registry():gauge { name = "four", help = "f", labels = { "a", "b", "c", "d" } }
  four:set(4, "1", "2", "3", "4")
  four:inc(1, "1", "2", "3", "4")
  T.eq(four:value("1", "2", "3", "4"), 5)
  T.raises(function() four:set(1, "1", "2", "3") end, "expected 4 label values")
end)

T.test("gauge: set, inc, dec", function()
  local g = metrics.registry():gauge { name = "queue_depth", help = "Queue depth.", labels = { "queue" } }
  g:set(5, "jobs")
  g:inc(2, "jobs")
  g:dec(nil, "jobs")
  g:dec(10, "mail")
  T.eq(g:value("jobs"), 6)
  T.eq(g:value("mail"), -10)
  local c = g:with("jobs")
  c:set(1.25)
  T.eq(g:value("jobs"), 1.25)
  raises_like(function() g:set("x", "jobs") end, "metrics_test.lua:%d+: orrery.metrics:set: bad argument #1")
end)

T.test("histogram: cumulative buckets, +Inf, _sum and _count", function()
  local r = metrics.registry()
  local h = r:histogram { name = "job_duration_seconds", help = "Job duration.", unit = "seconds",
    buckets = { 0.1, 1, 10 } }
  for _, v in ipairs({ 0.05, 0.1, 0.5, 2, 20, 30 }) do h:observe(v) end
  T.eq({ h:value() }, { 6, 52.65 })
  local set = lines(r:expose())
  T.ok(set['job_duration_seconds_bucket{le="0.1"} 2'], "le is inclusive")
  T.ok(set['job_duration_seconds_bucket{le="1"} 3'])
  T.ok(set['job_duration_seconds_bucket{le="10"} 4'])
  T.ok(set['job_duration_seconds_bucket{le="+Inf"} 6'])
  T.ok(set["job_duration_seconds_sum 52.65"])
  T.ok(set["job_duration_seconds_count 6"])
  local om = lines(r:expose("openmetrics"))
  T.ok(om['job_duration_seconds_bucket{le="1.0"} 3'], "OpenMetrics le values are canonical floats")
  T.ok(om["# UNIT job_duration_seconds seconds"])
  local d = r:histogram { name = "d_seconds", help = "d", labels = { "route" } }
  d:observe(0.3, "/a")
  d:with("/a"):observe(0.004)
  T.eq(#d.buckets, #metrics.DEFAULT_BUCKETS)
  T.eq({ d:value("/a") }, { 2, 0.304 })
  T.raises(function() d:observe("slow", "/a") end, "bad argument #1")
end)

T.test("names and options are checked, naming the function and the option", function()
  local r = metrics.registry()
  raises_like(function() r:counter { name = "bad-name", help = "h" } end,
    "metrics_test.lua:%d+: orrery.metrics.counter: bad option 'name' %(\"bad%-name\"")
  T.raises(function() metrics.gauge { name = "1abc", help = "h" } end, "orrery.metrics.gauge: bad option 'name'")
  T.raises(function() r:gauge { name = "x", help = "h", labels = { "a-b" } } end, "bad option 'labels'")
  T.raises(function() r:gauge { name = "x", help = "h", labels = { "__a" } } end, "bad option 'labels'")
  T.raises(function() r:gauge { name = "x", help = "h", labels = { "a", "a" } } end, "duplicate label")
  T.raises(function() r:histogram { name = "h", help = "h", labels = { "le" } } end, "reserved")
  T.raises(function() r:gauge { name = "x" } end, "bad option 'help'")
  T.raises(function() r:gauge { name = "x", help = "h", colour = 1 } end, "unknown option 'colour'")
  T.raises(function() r:gauge { name = "x_total", help = "h" } end, "_total is for counters")
  T.raises(function() r:histogram { name = "x_count", help = "h" } end, "reserved for histogram series")
  T.raises(function() r:gauge { name = "latency_ms", help = "h", unit = "seconds" } end, "must end in _seconds")
  T.raises(function() r:histogram { name = "x", help = "h", buckets = { 1, 1 } } end, "strictly increasing")
  T.raises(function() r:gauge { name = "x", help = "h", max_series = 0 } end, "bad option 'max_series'")
  raises_like(function() metrics.counter "x" end, "bad argument #1 %(options table expected")
end)

T.test("registering again: the same definition returns the metric, another raises", function()
  local r = metrics.registry()
  local a = r:counter { name = "jobs_total", help = "Jobs.", labels = { "kind" } }
  T.eq(r:counter { name = "jobs", help = "Jobs.", labels = { "kind" } }, a)
  T.raises(function() r:counter { name = "jobs_total", help = "Jobs.", labels = { "other" } } end,
    "already registered")
end)

T.test("sample names may not collide across families", function()
  local r = metrics.registry()
  r:histogram { name = "rpc_seconds", help = "h" }
  T.raises(function() r:gauge { name = "rpc_seconds_count", help = "g" } end, "collides with")
  T.ok(r:unregister("rpc_seconds"))
  T.ok(r:gauge { name = "rpc_seconds_count", help = "g" })
  T.eq(r:unregister("nothing"), false)
end)

T.test("max_series: new label sets past the limit are refused and counted", function()
  local r = metrics.registry()
  local c = r:counter { name = "by_user_total", help = "u", labels = { "user" }, max_series = 2 }
  c:inc(1, "a")
  c:inc(1, "b")
  c:inc(1, "c") -- refused
  c:inc(5, "c") -- refused again
  c:with("d"):inc(100) -- refused: a series that is never exposed
  c:inc(1, "a") -- existing series still work
  T.eq(c:series_count(), 2)
  T.eq(c:value("a"), 2)
  T.eq(c:value("c"), nil)
  T.eq(c.refused, 3)
  local set = lines(r:expose())
  T.ok(set['orrery_metrics_refused_series_total{metric="by_user_total"} 3'])
  T.ok(not r:expose():find('user="d"', 1, true))
  T.ok(c:remove("b"))
  T.eq(c:remove("b"), false)
  c:inc(1, "c") -- room again
  T.eq(c:value("c"), 1)
end)

T.test("label values and help are escaped", function()
  local r = metrics.registry()
  local g = r:gauge { name = "esc", help = 'back\\slash "quoted"\nnext', labels = { "v" } }
  g:set(1, 'a"b\\c\nd')
  local text = r:expose()
  T.ok(text:find('# HELP esc back\\\\slash "quoted"\\nnext\n', 1, true), text)
  T.ok(text:find('esc{v="a\\"b\\\\c\\nd"} 1\n', 1, true), text)
  local om = r:expose("openmetrics")
  T.ok(om:find('# HELP esc back\\\\slash \\"quoted\\"\\nnext\n', 1, true), om)
end)

T.test("values: integers, floats, infinities and NaN", function()
  T.eq(metrics.format_value(3), "3")
  T.eq(metrics.format_value(0.1), "0.1")
  T.eq(metrics.format_value(1 / 3), "0.33333333333333331")
  T.eq(metrics.format_value(math.huge), "+Inf")
  T.eq(metrics.format_value(-math.huge), "-Inf")
  T.eq(metrics.format_value(0 / 0), "NaN")
  T.eq(metrics.format_value(2 ^ 60), "1.152921504606847e+18")
end)

T.test("OpenMetrics: counter families without _total, # UNIT, # EOF last", function()
  local r = metrics.registry()
  r:counter { name = "cpu_seconds_total", help = "CPU.", unit = "seconds" }:inc(1.5)
  local text, ctype = r:expose("openmetrics")
  T.eq(ctype, "application/openmetrics-text; version=1.0.0; charset=utf-8")
  local set, list = lines(text)
  T.ok(set["# TYPE cpu_seconds counter"])
  T.ok(set["# UNIT cpu_seconds seconds"])
  T.ok(set["cpu_seconds_total 1.5"])
  T.eq(list[#list], "# EOF")
  local t2, ct2 = r:expose()
  T.eq(ct2, "text/plain; version=0.0.4; charset=utf-8")
  T.ok(not t2:find("# EOF", 1, true))
  T.ok(not t2:find("# UNIT", 1, true))
  T.raises(function() r:expose("xml") end, "bad argument #1")
end)

T.test("negotiate picks OpenMetrics only when the Accept header prefers it", function()
  local prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    .. "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
  T.eq(metrics.negotiate(prom), "openmetrics")
  T.eq(metrics.negotiate("application/openmetrics-text; version=1.0.0; charset=utf-8"), "openmetrics")
  T.eq(metrics.negotiate("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"), "text")
  T.eq(metrics.negotiate("application/openmetrics-text;version=2.0.0"), "text")
  T.eq(metrics.negotiate("application/openmetrics-text;q=0"), "text")
  T.eq(metrics.negotiate(nil), "text")
  T.eq(metrics.negotiate("*/*"), "text")
  local _, ct = metrics.negotiate(prom)
  T.eq(ct, metrics.OPENMETRICS)
end)

T.test("on_collect runs before each exposition", function()
  local r = metrics.registry()
  local g = r:gauge { name = "scrapes", help = "Scrapes." }
  local n = 0
  r:on_collect(function(reg)
    T.eq(reg, r)
    n = n + 1
    g:set(n)
  end)
  T.ok(r:expose():find("scrapes 1\n", 1, true))
  T.ok(r:expose():find("scrapes 2\n", 1, true))
end)

T.test("built-in metrics: runtime, breakers and limiters in the default registry", function()
  local cb = breaker.new { name = "payments_test" }
  cb:call(function() return true end)
  cb:call(function() return nil, "boom" end)
  local tb = limit.token_bucket { name = "api_test", rate = 1, burst = 2 }
  tb:allow()
  tb:allow()
  tb:allow()
  local bh = limit.concurrency { name = "db_test", max = 3 }
  local set = lines(metrics.expose())
  T.ok(set['orrery_breaker_state{breaker="payments_test",state="closed"} 1'])
  T.ok(set['orrery_breaker_state{breaker="payments_test",state="open"} 0'])
  T.ok(set['orrery_breaker_calls_total{breaker="payments_test",result="success"} 1'])
  T.ok(set['orrery_breaker_calls_total{breaker="payments_test",result="failure"} 1'])
  T.ok(set['orrery_limiter_allowed_total{limiter="api_test",kind="token_bucket"} 2'])
  T.ok(set['orrery_limiter_rejected_total{limiter="api_test",kind="token_bucket"} 1'])
  T.ok(set['orrery_limiter_in_flight{limiter="db_test"} 0'])
  local text = metrics.expose()
  T.match(text, "\norrery_coroutines %d+\n")
  T.match(text, '\norrery_coroutines_by_state{state="running"} 1\n')
  T.match(text, '\norrery_coroutines_by_state{state="waiting"} %d+\n')
  T.match(text, "\norrery_timers %d+\n")
  T.match(text, "\norrery_lua_memory_bytes %d+\n")
  T.match(text, "\nprocess_resident_memory_bytes [1-9]%d*\n")
  T.ok(cb and tb and bh)
end)

T.test("built-in metrics: loop lag, GC cycles, named retry policies, sagas", function()
  local orrery = require "orrery"
  local retry = require "orrery.retry"
  local saga = require "orrery.saga"
  local p = retry.new { name = "upstream_test", max_attempts = 3, initial = 0 }
  local n = 0
  T.eq(p:call(function() n = n + 1; if n < 2 then return nil, "busy" end; return "ok" end), "ok")
  T.eq({ p:call(function() return nil, "down" end) }, { nil, "down" })
  local dir = io.popen("mktemp -d"):read("*l")
  local gate = orrery.chan()
  local def = saga.define { name = "metrics_test_saga", journal = dir .. "/j.db", recover = false,
    steps = { { name = "wait", action = function(sc)
      if sc.input.fail then return nil, "failed" end
      return gate:recv()
    end } } }
  T.eq({ def:run({ fail = true }, { key = "failing" }) }, { nil, "failed" })
  local id = assert(def:start({}, { key = "held" }))
  collectgarbage()
  collectgarbage()
  -- scraped through the handler, which measures the loop's lag first
  local _, text = metrics.handler()({ header = function() return nil end })
  local set = lines(text)
  T.match(text, "\norrery_loop_lag_seconds [%d.e-]+\n")
  local cycles = tonumber(text:match("\norrery_lua_gc_cycles_total (%d+)\n"))
  T.ok(cycles and cycles >= 2, "two full collections counted")
  T.ok(set['orrery_retry_calls_total{policy="upstream_test"} 2'])
  T.ok(set['orrery_retry_attempts_total{policy="upstream_test"} 5'])
  T.ok(set['orrery_retry_failures_total{policy="upstream_test"} 1'])
  T.ok(set['orrery_saga_instances{saga="metrics_test_saga",state="running"} 1'], "held runs")
  T.ok(set['orrery_saga_finished_total{saga="metrics_test_saga",state="compensated"} 1'], "failing compensated")
  gate:send("shipped")
  T.eq(def:wait(id), "shipped")
  set = lines(metrics.expose())
  T.ok(set['orrery_saga_instances{saga="metrics_test_saga",state="running"} 0'])
  T.ok(set['orrery_saga_finished_total{saga="metrics_test_saga",state="completed"} 1'])
  local st = def:stats()
  T.eq({ st.running, st.completed, st.compensated }, { 0, 1, 1 })
  T.eq(require("orrery.console").sagas()[1].name, "metrics_test_saga")
  os.execute("rm -rf " .. dir)
end)

T.test("orrery.stats() counts coroutines by state", function()
  local orrery = require "orrery"
  local ch = orrery.chan()
  local ids = {}
  for i = 1, 3 do ids[i] = orrery.go(function() ch:recv() end) end
  T.settle(ids)
  orrery.go(function() end) -- runnable, not started yet
  local s = orrery.stats()
  T.eq(s.running, 1)
  T.ok(s.waiting >= 3)
  T.ok(s.runnable >= 1)
  T.eq(s.runnable + s.running + s.waiting, s.coroutines)
  ch:close()
end)

-- Every feature in one registry, for promtool.
local function everything()
  local r = metrics.registry { runtime = true }
  local c = r:counter { name = "orders_created_total", help = "Orders created.", labels = { "result", "region" } }
  c:inc(1, "ok", "eu")
  c:with("failed", 'we"ird\\region\n'):inc(3)
  r:counter { name = "cpu_seconds_total", help = "CPU time.", unit = "seconds" }:inc(0.25)
  local g = r:gauge { name = "queue_depth", help = "Queue depth,\nper queue.", labels = { "queue" } }
  g:set(3, "jobs")
  g:set(-1.5, "mail")
  r:gauge { name = "temperature_celsius", help = "Temperature.", unit = "celsius" }:set(1 / 3)
  local h = r:histogram { name = "http_request_duration_seconds", help = "Request duration.",
    unit = "seconds", labels = { "route" } }
  for _, v in ipairs({ 0.001, 0.02, 0.3, 4, 50 }) do h:observe(v, "/orders/:id") end
  r:histogram { name = "payload_bytes", help = "Payload size.", unit = "bytes", buckets = { 64, 1024, 65536 } }
    :observe(1000)
  local lim = r:counter { name = "by_key_total", help = "Limited.", labels = { "key" }, max_series = 1 }
  lim:inc(1, "a")
  lim:inc(1, "b")
  local cb = breaker.new { name = "promtool_breaker" }
  cb:call(function() return 1 end)
  local tb = limit.token_bucket { name = "promtool_bucket", rate = 10, burst = 1 }
  tb:allow()
  return r, { cb, tb }
end

-- promtool comes with Debian's prometheus package; scripts/deps.sh
-- installs it when missing. A failed install fails the test.
local function promtool()
  local function found()
    local p = io.popen("command -v promtool 2>/dev/null")
    local s = p:read("*l")
    p:close()
    return s
  end
  local path = found()
  if path then return path end
  local ok = os.execute(T.shquote(root .. "scripts/deps.sh") .. " prometheus >/dev/null 2>&1")
  path = found()
  if not path then
    T.fail("promtool is missing and `scripts/deps.sh prometheus` could not install it (status "
      .. tostring(ok) .. ")")
  end
  return path
end

local function check_with_promtool(text)
  local f = os.tmpname()
  local h = io.open(f, "w")
  h:write(text)
  h:close()
  local p = io.popen(T.shquote(promtool()) .. " check metrics < " .. f .. " 2>&1; echo \"status=$?\"")
  local out = p:read("*a")
  p:close()
  os.remove(f)
  return out
end

T.test("promtool check metrics accepts the exposition of every feature", function()
  local r, keep = everything()
  local text = r:expose()
  local out = check_with_promtool(text)
  T.eq(out, "status=0\n", "promtool's complaints, for:\n" .. text)
  T.ok(keep)
end, { timeout = 300 })

T.test("the OpenMetrics exposition keeps the same samples", function()
  local r, keep = everything()
  local text = r:expose()
  local om = r:expose("openmetrics")
  -- Every sample line of the text format is in the OpenMetrics one, but
  -- le values, which OpenMetrics writes as canonical floats.
  local omset = lines(om)
  for l in text:gmatch("([^\n]*)\n") do
    -- (Built-in values such as memory and tokens move between the two.)
    if l:sub(1, 1) ~= "#" and not l:find('le="', 1, true) and not l:find("^orrery_") and not l:find("^process_") then
      T.ok(omset[l], l)
    end
  end
  local _, list = lines(om)
  T.eq(list[#list], "# EOF")
  T.ok(omset["# TYPE orders_created counter"])
  T.ok(keep)
end)

-- The OpenMetrics parser of Debian's python3-prometheus-client is strict
-- (promtool reads the text format only); scripts/deps.sh installs it
-- when missing, and a failed install fails the test.
local PY = "/usr/bin/python3"
local PARSE = [[
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
n = 0
for f in text_string_to_metric_families(open(sys.argv[1]).read()):
    n += len(f.samples)
print("samples", n)
]]

local function om_parser()
  local check = PY .. " -c 'import prometheus_client.openmetrics.parser' >/dev/null 2>&1"
  if os.execute(check) == 0 then return end
  local st = os.execute(T.shquote(root .. "scripts/deps.sh") .. " python3-prometheus-client >/dev/null 2>&1")
  if os.execute(check) ~= 0 then
    T.fail("python3-prometheus-client is missing and `scripts/deps.sh python3-prometheus-client`"
      .. " could not install it (status " .. tostring(st) .. ")")
  end
end

T.test("a strict OpenMetrics parser accepts the OpenMetrics exposition", function()
  om_parser()
  local r, keep = everything()
  local text = r:expose("openmetrics")
  local f, py = os.tmpname(), os.tmpname()
  local h = io.open(f, "w")
  h:write(text)
  h:close()
  h = io.open(py, "w")
  h:write(PARSE)
  h:close()
  local p = io.popen(PY .. " " .. py .. " " .. f .. " 2>&1; echo \"status=$?\"")
  local out = p:read("*a")
  p:close()
  os.remove(f)
  os.remove(py)
  T.match(out, "^samples %d+\nstatus=0\n$", "the parser's complaints, for:\n" .. text)
  T.ok(keep)
end, { timeout = 300 })

T.test("metrics.handler answers by the Accept header", function()
  local app = http.router()
  app:get("/metrics", metrics.handler())
  local r = metrics.registry()
  r:gauge { name = "mine", help = "Mine." }:set(7)
  app:get("/mine", metrics.handler { registry = r })
  local srv = H.start(app)
  local res = H.get(srv, "/mine")
  T.eq(res.status, 200)
  T.eq(res.headers["content-type"], metrics.TEXT)
  T.eq(res.body, "# HELP mine Mine.\n# TYPE mine gauge\nmine 7\n")
  res = H.get(srv, "/mine", "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n")
  T.eq(res.headers["content-type"], metrics.OPENMETRICS)
  T.eq(res.body, "# HELP mine Mine.\n# TYPE mine gauge\nmine 7\n# EOF\n")
  res = H.get(srv, "/metrics")
  T.match(res.body, "orrery_coroutines %d+")
  srv:close()
  T.raises(function() metrics.handler { registry = {} } end, "option 'registry'")
  T.raises(function() metrics.handler { accept = true } end, "unknown option 'accept'")
end)

-- -- JIT --

T.test("increments stay JIT-compiled (counter, child, gauge, histogram)", function()
  if not jit or not jit.status() then T.skip("JIT is off") end
  local r = metrics.registry()
  local c = r:counter { name = "hot_total", help = "h", labels = { "result" } }
  local u = r:counter { name = "plain_total", help = "p" }
  local g = r:gauge { name = "hot_gauge", help = "g", labels = { "a", "b" } }
  local h = r:histogram { name = "hot_seconds", help = "h" }
  c:inc(1, "ok") -- the first use of a label set takes the slow path
  g:set(0, "x", "y")
  local ok = c:with("ok")
  local aborts, stops = T.traced(function()
    for i = 1, 20000 do
      c:inc(1, "ok")
      ok:inc()
      u:inc(2)
      g:inc(1, "x", "y")
      h:observe((i % 100) / 10)
    end
  end, "orrery/metrics.lua")
  T.eq(aborts, {}, "trace aborts")
  T.ok(stops >= 1, "at least one trace")
  T.eq(c:value("ok"), 40001)
  T.eq(u:value(), 40000)
  T.eq(g:value("x", "y"), 20000)
  T.eq((h:value()), 20000)
end)
