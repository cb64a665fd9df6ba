-- SPDX-License-Identifier: MIT
-- prometheus_test.lua -- a real Prometheus server (Debian's prometheus
-- package) on loopback scrapes a service's admin endpoint, and the test
-- reads the samples back through Prometheus's HTTP API: a counter the
-- test's own requests incremented, a histogram's _count, and up = 1.
--
-- Prometheus runs as an unprivileged user (nobody when we are root) with
-- its configuration and TSDB in a temporary directory, and is stopped
-- (and the directory removed) at the end, or by a watcher if this process
-- dies first.
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"
local json = require "orrery.json"
local metrics = require "orrery.metrics"
local admin = require "orrery.admin"

local root = (debug.getinfo(1, "S").source:match("^@(.*)tests/lua/prometheus_test%.lua$") or "")

local function shquote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("rc=(%d+)%s*$")), (out:gsub("rc=%d+%s*$", ""))
end

-- The prometheus binary: installed by scripts/deps.sh when missing.
local function prometheus_bin()
  local function found()
    local _, out = sh("command -v prometheus")
    return out:match("^(/%S+)")
  end
  local path = found()
  if path then return path end
  local rc, out = sh(shquote(root .. "scripts/deps.sh") .. " prometheus")
  path = found()
  if not path then
    T.skip("prometheus is not installed and `scripts/deps.sh prometheus` could not install it (status "
      .. tostring(rc) .. "): " .. out:sub(-300))
  end
  return path
end


-- start(target) -> { port, dir, stop() }: Prometheus scraping target
-- ("127.0.0.1:PORT") every 200 ms.
local function start_prometheus(bin, target)
  local rc, dir = sh("mktemp -d /tmp/orrery-prom.XXXXXX")
  assert(rc == 0, dir)
  dir = dir:match("(%S+)")
  local _, uid = sh("id -u")
  local user = uid:match("^%s*0%s*$") and "nobody" or nil
  local f = assert(io.open(dir .. "/prometheus.yml", "w"))
  f:write(([[
global:
  scrape_interval: 200ms
  scrape_timeout: 150ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: orrery
    static_configs:
      - targets: ["%s"]
]]):format(target))
  f:close()
  assert(os.execute("mkdir -p " .. shquote(dir .. "/data")))
  if user then assert(os.execute("chown -R " .. user .. " " .. shquote(dir))) end
  local port = T.free_port()
  local cmd = ("%s --config.file=%s --storage.tsdb.path=%s --web.listen-address=127.0.0.1:%d"
    .. " --log.level=warn"):format(shquote(bin), shquote(dir .. "/prometheus.yml"),
    shquote(dir .. "/data"), port)
  if user then cmd = "runuser -u " .. user .. " -- " .. cmd end
  -- In the background, its pid written to a file; a watcher kills it and
  -- removes the directory when this process goes away.
  local launch = ("(%s >%s 2>&1 & echo $! >%s)"):format(cmd, shquote(dir .. "/prometheus.log"),
    shquote(dir .. "/pid"))
  assert(os.execute(launch))
  local pf = assert(io.open(dir .. "/pid"))
  local pid = pf:read("*l")
  pf:close()
  os.execute(("(while kill -0 %s 2>/dev/null; do sleep 1; done; kill %s 2>/dev/null; sleep 1; rm -rf %s)"
    .. " >/dev/null 2>&1 &"):format(require("orrery").pid(), pid, shquote(dir)))
  local p = { port = port, dir = dir, pid = pid }
  function p.log()
    local lf = io.open(dir .. "/prometheus.log")
    local s = lf and lf:read("*a") or ""
    if lf then lf:close() end
    return s
  end
  function p.stop()
    -- runuser's child is prometheus: end both, then wait for it to go.
    os.execute(("pkill -TERM -P %s 2>/dev/null; kill -TERM %s 2>/dev/null"):format(pid, pid))
    os.execute(("for i in $(seq 100); do kill -0 %s 2>/dev/null || break; sleep 0.1; done"):format(pid))
    os.execute("rm -rf " .. shquote(dir))
  end
  return p
end

-- query(p, expr) -> the API's result list, or nil and why.
local function query(p, expr)
  local url = ("http://127.0.0.1:%d/api/v1/query?query=%s"):format(p.port,
    expr:gsub("[^%w%-_.~]", function(c) return ("%%%02X"):format(c:byte()) end))
  local res, err = http.get(url, { timeout = 2 })
  if not res then return nil, err end
  local body = res:body() or ""
  if res.status ~= 200 then return nil, "status " .. res.status .. ": " .. body end
  local v = json.decode(body)
  if v.status ~= "success" then return nil, body end
  return v.data.result
end

-- Polls expr until fn(result) holds, for at most `secs` (Prometheus
-- scrapes on its own schedule: this waits for the scrape that shows it).
local function eventually(p, expr, fn, secs)
  local deadline = orrery.now() + secs
  local last, err
  while orrery.now() < deadline do
    last, err = query(p, expr)
    if last and fn(last) then return last end
    orrery.sleep(0.1)
  end
  T.fail(("%s: not seen within %d s (last: %s %s)\nprometheus log:\n%s"):format(expr, secs,
    last and json.encode(last) or "nil", tostring(err or ""), p.log():sub(-1500)))
end

local function value(result, labels)
  for _, r in ipairs(result) do
    local ok = true
    for k, v in pairs(labels or {}) do
      if r.metric[k] ~= v then ok = false end
    end
    if ok then return tonumber(r.value[2]) end
  end
  return nil
end

T.test("Prometheus scrapes the admin endpoint; its API returns the service's samples", function()
  local bin = prometheus_bin()
  local orders = metrics.counter { name = "shop_orders_total", help = "Orders taken.", labels = { "kind" } }
  local app = http.router()
  app:post("/orders", function()
    orders:inc(1, "web")
    return 201, "created"
  end)
  -- The service and its admin endpoint, both on loopback.
  local srv = assert(http.listen(app, { host = "127.0.0.1", port = 0, access_log = false, metrics = true }))
  local adm = assert(admin.listen { port = 0 })
  for _ = 1, 7 do
    T.eq(assert(http.post(("http://127.0.0.1:%d/orders"):format(srv.port), "x")).status, 201)
  end
  local p = start_prometheus(bin, "127.0.0.1:" .. adm.port)
  local ok, err = pcall(function()
    local up = eventually(p, 'up{job="orrery"}', function(r) return value(r) == 1 end, 60)
    T.eq(value(up), 1, "the target is up")
    local c = eventually(p, "shop_orders_total", function(r) return value(r, { kind = "web" }) ~= nil end, 30)
    T.eq(value(c, { kind = "web", job = "orrery" }), 7, "the counter the test's requests incremented")
    -- The server's own histogram: 7 requests on POST /orders.
    local h = eventually(p, 'http_server_request_duration_seconds_count{route="/orders"}',
      function(r) return value(r) ~= nil end, 30)
    T.eq(value(h, { method = "POST", route = "/orders" }), 7, "the request histogram's _count")
    -- A later increment shows up in a later scrape.
    T.eq(assert(http.post(("http://127.0.0.1:%d/orders"):format(srv.port), "x")).status, 201)
    eventually(p, "shop_orders_total", function(r) return value(r, { kind = "web" }) == 8 end, 30)
    -- PromQL over the scraped series: the buckets sum to the count.
    local le = eventually(p, 'http_server_request_duration_seconds_bucket{route="/orders",le="+Inf"}',
      function(r) return value(r) == 8 end, 30)
    T.eq(value(le), 8)
  end)
  p.stop()
  adm:close()
  srv:close()
  if not ok then error(err, 0) end
end, { timeout = 240 })
