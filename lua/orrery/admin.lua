-- SPDX-License-Identifier: MIT
-- orrery.admin -- the admin HTTP listener: metrics, the coroutine dump and
-- a health check, for operators and their tools (Prometheus, curl).
-- Off unless started; on loopback unless told otherwise.
local orrery = require "orrery"
local http = require "orrery.http"
local json = require "orrery.json"
local metrics = require "orrery.metrics"
local console = require "orrery.console"
local profile = require "orrery.profile"

local M = {}

local OPTS = { host = true, port = true, registry = true, health = true, allow_remote = true }

local LOOPBACK = { ["127.0.0.1"] = true, ["::1"] = true, localhost = true }

-- The filter of a /debug/coroutines request: ?state=&wait=&site=.
local function filter_of(req)
  local q = req.query
  local f = {}
  for _, k in ipairs { "state", "wait", "site" } do
    if q[k] and q[k] ~= "" then f[k] = q[k] end
  end
  return f
end

local function coroutines(req)
  local f = filter_of(req)
  if req.query.group == "1" or req.query.group == "true" then f.group = true end
  if req.query.format == "json" then
    local list = console.coroutines(f)
    for _, c in ipairs(list) do
      if c.cases then c.cases = json.array(c.cases) end
    end
    return 200, json.array(list)
  end
  return 200, console.dump(f) .. "\n"
end

-- /debug/waits?older=60: coroutines parked longer than that, grouped.
local function waits(req)
  local older = tonumber(req.query.older or "60")
  if not older or older < 0 then return 400, { error = "older: seconds expected" } end
  local list = console.waits(older)
  for _, g in ipairs(list) do g.ids = json.array(g.ids) end
  return 200, json.array(list)
end

-- /debug/leaks: coroutines parked for good on channels nothing can reach
-- (console.leaks), and those parked longer than ?older=60 seconds
-- (console.waits), as JSON; ?format=text gives the grouped dump of the
-- first kind.
local function leaks(req)
  local older = tonumber(req.query.older or "60")
  if not older or older < 0 then return 400, { error = "older: seconds expected" } end
  if req.query.format == "text" then
    local text = console.dump { leaked = true, group = true }
    return 200, text == "" and "no leaked coroutines\n" or text .. "\n"
  end
  local unreachable, long = console.leaks(), console.waits(older)
  for _, g in ipairs(unreachable) do g.ids = json.array(g.ids) end
  for _, g in ipairs(long) do g.ids = json.array(g.ids) end
  return 200, { unreachable = json.array(unreachable), waits = json.array(long) }
end

-- /debug/pprof/profile?seconds=30: a CPU profile taken while the request
-- waits, in pprof's format (gzipped profile.proto), or ?format=folded
-- (flamegraph.pl's input) or ?format=top (a text list).
local FORMATS = { pprof = true, folded = true, top = true }

local function pprof_profile(req)
  local q = req.query
  local secs = tonumber(q.seconds or "30")
  if not secs or secs <= 0 or secs > 3600 then
    return 400, { error = "seconds: a number from 0 to 3600 expected" }
  end
  local format = q.format or "pprof"
  if not FORMATS[format] then return 400, { error = "format: pprof, folded or top expected" } end
  local p, err = profile.collect(secs)
  if not p then
    if err == "busy" then return 409, { error = "a profile is already being taken" } end
    return 503, { error = tostring(err) }
  end
  if format == "folded" then return 200, p:folded() end
  if format == "top" then return 200, p:top(50) .. "\n" end
  return 200, p:pprof(), { ["Content-Type"] = "application/octet-stream",
    ["Content-Disposition"] = 'attachment; filename="profile"' }
end

--- admin.listen{ host = "127.0.0.1", port = 9090, registry =, health =,
-- allow_remote = false } -> server | nil, err. Routes:
--   GET /metrics            the registry (default metrics.default), text
--                           or OpenMetrics by the Accept header
--   GET /debug/coroutines   the dump as text; ?format=json for JSON;
--                           ?state=, ?wait=, ?site= filter
--   GET /debug/waits        ?older=60: coroutines parked longer, grouped
--                           by wait and creation site (JSON)
--   GET /debug/leaks        coroutines parked for good on unreachable
--                           channels, and those parked over ?older=60 s
--   GET /debug/pprof/profile  ?seconds=30: a CPU profile (pprof's format;
--                           ?format=folded or top for text)
--   GET /health             200 {"status":"ok"}, or what health() returns
--                           (status, body), 503 when it raises
-- A host other than loopback needs allow_remote = true.
function M.listen(opts)
  local F = "orrery.admin.listen"
  opts = opts or {}
  if type(opts) ~= "table" then
    error(F .. ": bad argument #1 (options table expected, got " .. type(opts) .. ")", 2)
  end
  for k in pairs(opts) do
    if not OPTS[k] then error(("%s: unknown option '%s'"):format(F, tostring(k)), 2) end
  end
  local host = opts.host or "127.0.0.1"
  if type(host) ~= "string" then error(F .. ": option host must be a string", 2) end
  if not LOOPBACK[host] and not opts.allow_remote then
    error(F .. ": option host '" .. host .. "' is not loopback (set allow_remote = true to listen there)", 2)
  end
  if opts.health ~= nil and type(opts.health) ~= "function" then
    error(F .. ": option health must be a function", 2)
  end
  local health = opts.health
  local r = http.router()
  r:get("/metrics", metrics.handler { registry = opts.registry })
  r:get("/debug/coroutines", coroutines)
  r:get("/debug/waits", waits)
  r:get("/debug/leaks", leaks)
  r:get("/debug/pprof/profile", pprof_profile)
  r:get("/health", function()
    if not health then return 200, { status = "ok" } end
    local ok, status, body = pcall(health)
    if not ok then return 503, { status = "unavailable", error = tostring(status) } end
    return status or 200, body or { status = "ok" }
  end)
  local port = opts.port
  if port == nil then port = 9090 end
  return http.listen(r, { host = host, port = port, access_log = false })
end

return M
