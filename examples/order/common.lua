-- SPDX-License-Identifier: MIT
-- common.lua -- what the order example's services share: flags, the
-- faults they can be told to inject, and a participant's HTTP server with
-- the Idempotency-Key middleware and the barrier (README.md).
local orrery = require "orrery"
local http = require "orrery.http"
local sqlite = require "orrery.sqlite"
local idem = require "orrery.idempotency"

local C = {}

-- flags(...) -> { port = 0, db = ..., ... } from --name value pairs.
function C.flags(...)
  local f, argv = {}, { ... }
  for i = 1, #argv, 2 do
    local k = argv[i]:match("^%-%-([%w_-]+)$")
    if not k or argv[i + 1] == nil then
      io.stderr:write("usage: --name value ... (got ", tostring(argv[i]), ")\n")
      os.exit(2)
    end
    f[k:gsub("-", "_")] = argv[i + 1]
  end
  f.port = tonumber(f.port or "0")
  return f
end

local pid = orrery.pid
C.pid = pid

-- fault(where, req, flags): injects what the request's X-Fault header or
-- the service's --fail/--slow/--crash flag asks for at `where`
-- ("action" or "compensate"): "fail" answers 500, "slow" sleeps
-- --slow seconds (default 2), "crash" kills the process with SIGKILL.
function C.fault(where, req, flags)
  local h = req:header("x-fault") or ""
  local want = h:match("^" .. where .. "=(%a+)$") or h:match("^(%a+)$")
  if flags.fail == where then want = "fail" end
  if flags.crash == where then want = "crash" end
  if flags.slow == where then want = "slow" end
  if want == "crash" then os.execute("kill -9 " .. pid()) end
  if want == "slow" then orrery.sleep(tonumber(flags.slow_secs or "2")) end
  if want == "fail" then return 500, { error = "injected failure" } end
end

-- write_port(flags, srv): tells whoever started us where we listen.
-- With --watch-parent PID the service also exits once that process is
-- gone (the test suite passes its own pid, so that a test that fails or
-- is killed leaves no service behind).
function C.write_port(flags, srv)
  local parent = flags.watch_parent
  if parent then
    orrery.go(function()
      while orrery.sleep(0.5) do
        local f = io.open("/proc/" .. parent .. "/stat")
        local st = f and f:read("*a"):match("^%d+ %b() (%a)")
        if f then f:close() end
        if st == nil or st == "Z" then os.exit(0) end
      end
    end)
  end
  print(("%s listening on http://127.0.0.1:%d"):format(flags.name or "service", srv.port))
  io.stdout:flush()
  if flags.port_file then
    local tmp = flags.port_file .. ".tmp"
    local h = assert(io.open(tmp, "w"))
    h:write(srv.port, "\n")
    h:close()
    os.rename(tmp, flags.port_file)
  end
end

-- participant{ name, flags, schema, action, compensate, stats }: a
-- service with POST /action and POST /compensate, each run through the
-- barrier under the request's Idempotency-Key, and GET /stats.
-- --crash-rate P: before and after the barrier, die by SIGKILL with
-- probability P (the crash test with the participants killed).
function C.participant(p)
  local flags = p.flags
  flags.name = p.name
  local crash_rate = tonumber(flags.crash_rate or "0")
  math.randomseed(tonumber(pid()) + os.time())
  local function maybe_crash()
    if crash_rate > 0 and math.random() < crash_rate then os.execute("kill -9 " .. pid()) end
  end
  local db = assert(sqlite.open(flags.db or (p.name .. ".db")))
  for _, s in ipairs(p.schema) do assert(db:exec(s)) end
  local barrier = idem.barrier(db)
  local app = http.router()
  app:use(idem.middleware { store = db })
  app:post("/action", function(req)
    local f, body = C.fault("action", req, flags)
    if f then return f, body end
    local key = req:header("idempotency-key")
    if not key then return 400, { error = "Idempotency-Key required" } end
    local in_ = req:json()
    maybe_crash()
    local r, err = barrier:action(key, function(tx) return p.action(tx, in_, key) end)
    maybe_crash()
    if r == nil and err ~= "duplicate" and err ~= "compensated" then
      -- a business refusal is final (409); anything else may pass (503)
      return p.refusals and p.refusals[err] and 409 or 503, { error = err }
    end
    -- a duplicate took effect the first time: that is a success too; an
    -- action after its compensation is refused
    return 200, { ok = err ~= "compensated", note = err, result = r }
  end)
  app:post("/compensate", function(req)
    local f, body = C.fault("compensate", req, flags)
    if f then return f, body end
    -- the barrier key is the action's own key, carried in the body
    local in_ = req:json()
    local key = in_.key
    if type(key) ~= "string" then return 400, { error = "body.key (the action's key) required" } end
    maybe_crash()
    local ok, undone = barrier:compensate(key, function(tx) return p.compensate(tx, in_, key) end)
    maybe_crash()
    return 200, { ok = true, undone = undone == true, note = ok == nil and undone or nil }
  end)
  app:get("/stats", function() return 200, p.stats(db) end)
  local srv = assert(http.listen(app, { host = "127.0.0.1", port = flags.port }))
  C.write_port(flags, srv)
  orrery.context.background():done():recv() -- until SIGTERM / SIGINT
end

return C
