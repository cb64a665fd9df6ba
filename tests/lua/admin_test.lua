-- admin_test.lua -- the admin listener: /metrics, /debug/coroutines (text,
-- JSON, filters), /health, and its loopback-only default.
local T = require "orrery.test"
local orrery = require "orrery"
local admin = require "orrery.admin"
local metrics = require "orrery.metrics"
local json = require "orrery.json"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

T.test("the admin listener serves metrics, the coroutine dump and health", function()
  local reg = metrics.registry()
  reg:counter { name = "admin_test_hits", help = "Hits." }:inc(3)
  local srv = assert(admin.listen { port = 0, registry = reg })
  local inbox = orrery.chan(0, "admin_test inbox")
  local id = orrery.go(function() inbox:recv() end)
  T.settle({ id })

  local res = H.get(srv, "/metrics")
  T.eq(res.status, 200)
  T.match(res.body, "\nadmin_test_hits_total 3\n")

  res = H.get(srv, "/debug/coroutines?wait=admin_test%20inbox")
  T.eq(res.status, 200)
  T.match(res.body, "^coroutine " .. id .. " %[chan receive on chan #%d+ \"admin_test inbox\"")
  T.ok(not res.body:find("coroutine 1 ", 1, true), "the filter leaves the others out")

  res = H.get(srv, "/debug/coroutines?format=json&state=waiting")
  T.eq(res.status, 200)
  local list = json.decode(res.body)
  local mine
  for _, c in ipairs(list) do if c.id == id then mine = c end end
  T.eq(mine and mine.name, "admin_test inbox")

  res = H.get(srv, "/health")
  T.eq({ res.status, res.body }, { 200, '{"status":"ok"}' })
  inbox:send(1)
  srv:close()
end)

T.test("health reports what the service's check says; a check that raises is a 503", function()
  local healthy = true
  local srv = assert(admin.listen { port = 0, health = function()
    if not healthy then error("database down") end
    return 200, { status = "ok", db = "up" }
  end })
  T.eq(json.decode(H.get(srv, "/health").body).db, "up")
  healthy = false
  local res = H.get(srv, "/health")
  T.eq(res.status, 503)
  T.match(res.body, "database down")
  srv:close()
end)

T.test("admin.listen stays on loopback unless told otherwise, and checks its options", function()
  T.raises(function() admin.listen { host = "0.0.0.0", port = 0 } end, "not loopback")
  T.raises(function() admin.listen { prot = 1 } end, "unknown option 'prot'")
  T.raises(function() admin.listen { health = 1 } end, "option health must be a function")
end)

T.test("/debug/coroutines?group=1 and /debug/waits", function()
  local srv = assert(admin.listen { port = 0 })
  local ch = orrery.chan(0, "admin_test many")
  local ids = {}
  for i = 1, 5 do ids[i] = orrery.go(function() ch:recv() end) end
  T.settle(ids)
  local res = H.get(srv, "/debug/coroutines?group=1&wait=admin_test%20many")
  T.match(res.body, "^5 coroutines %[chan receive on chan \"admin_test many\"")
  res = H.get(srv, "/debug/waits?older=0")
  T.eq(res.status, 200)
  local found
  for _, g in ipairs(json.decode(res.body)) do
    if g.wait:find("admin_test many", 1, true) then found = g end
  end
  T.eq(found and found.count, 5)
  T.eq(H.get(srv, "/debug/waits?older=x").status, 400)
  ch:close()
  srv:close()
end)
