-- SPDX-License-Identifier: MIT
-- idempotency_test.lua -- orrery.idempotency on a real SQLite file: the
-- middleware over a real HTTP server and client (stored responses,
-- 422 for a reused key, 409 while the first is in flight, failures not
-- kept), and the barrier's duplicate, early-compensation and
-- late-action cases, with the participant's own rows in the same
-- transaction.
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"
local sqlite = require "orrery.sqlite"
local idem = require "orrery.idempotency"

local function tmpdb()
  local p = io.popen("mktemp -d")
  local d = p:read("*l")
  p:close()
  return assert(sqlite.open(d .. "/p.db"))
end

-- A payment service: each charge gets a new number.
local function payment_server(db, gate, entered)
  local charges = 0
  local app = http.router()
  app:use(idem.middleware { store = db })
  app:post("/charge", function(req)
    local body = req:json()
    if entered then entered:send(true) end
    if gate then gate:recv() end
    if body.fail then return 503, { error = "down" } end
    charges = charges + 1
    return 201, { charge = charges, amount = body.amount }, { ["X-Charge"] = tostring(charges) }
  end)
  local srv = assert(http.listen(app, { host = "127.0.0.1", port = 0, log = function() end }))
  return srv, function() return charges end
end

local function post(srv, key, body)
  return assert(http.post("http://127.0.0.1:" .. srv.port .. "/charge", body,
    { headers = key and { ["Idempotency-Key"] = key } or nil, timeout = 5 }))
end

T.test("a duplicate gets the stored response; the handler ran once", function()
  local srv, charges = payment_server(tmpdb())
  local a = post(srv, "k1", { amount = 5 })
  T.eq(a.status, 201)
  local b = post(srv, "k1", { amount = 5 })
  T.eq(b.status, 201)
  T.eq(b:json(), a:json())
  T.eq(b.headers["Idempotent-Replayed"], "true")
  T.eq(b.headers["X-Charge"], "1")
  T.eq(charges(), 1)
  -- no key: every request runs
  post(srv, nil, { amount = 5 })
  post(srv, nil, { amount = 5 })
  T.eq(charges(), 3)
  srv:close()
end)

T.test("the same key with a different request is 422", function()
  local srv, charges = payment_server(tmpdb())
  post(srv, "k2", { amount = 5 })
  local r = post(srv, "k2", { amount = 6 })
  T.eq(r.status, 422)
  T.match(r:json().error, "different request")
  T.eq(charges(), 1)
  srv:close()
end)

T.test("a duplicate while the first is in flight is 409; then it is replayed", function()
  local gate, entered = orrery.chan(), orrery.chan()
  local srv, charges = payment_server(tmpdb(), gate, entered)
  local first = T.spawn(function() return post(srv, "k3", { amount = 1 }) end)
  entered:recv() -- the first holds the key and waits in its handler
  local second = post(srv, "k3", { amount = 1 })
  T.eq(second.status, 409)
  T.eq(second.headers["Retry-After"], "1")
  gate:send(true)
  local r = first:recv()
  T.eq(r[2].status, 201)
  T.eq(post(srv, "k3", { amount = 1 }).status, 201)
  T.eq(charges(), 1)
  srv:close()
end)

T.test("a failed request is not kept: the retry runs again", function()
  local srv, charges = payment_server(tmpdb())
  T.eq(post(srv, "k4", { amount = 1, fail = true }).status, 503)
  local r = post(srv, "k4", { amount = 1, fail = true })
  T.eq(r.status, 503)
  T.eq(r.headers["Idempotent-Replayed"], nil)
  srv:close()
end)

T.test("barrier: duplicates do nothing, an early compensation blocks the late action", function()
  local db = tmpdb()
  assert(db:exec("CREATE TABLE stock (sku TEXT PRIMARY KEY, n INTEGER)"))
  assert(db:exec("INSERT INTO stock VALUES ('apple', 10)"))
  local b = idem.barrier(db)
  local function reserve(key)
    return b:action(key, function(tx)
      assert(tx:exec("UPDATE stock SET n = n - 1 WHERE sku = 'apple'"))
      return "reserved"
    end)
  end
  local function release(key)
    return b:compensate(key, function(tx)
      assert(tx:exec("UPDATE stock SET n = n + 1 WHERE sku = 'apple'"))
      return true
    end)
  end
  local function stock() return assert(db:exec("SELECT n FROM stock"))[1].n end
  -- normal: action, duplicate action, compensation, duplicate compensation
  T.eq(reserve("o1:reserve"), "reserved")
  T.eq({ reserve("o1:reserve") }, { nil, "duplicate" })
  T.eq(stock(), 9)
  T.eq({ release("o1:reserve") }, { true, true })
  T.eq({ release("o1:reserve") }, { nil, "duplicate" })
  T.eq(stock(), 10)
  -- the compensation arrives first: nothing to undo, and the action is refused
  T.eq({ release("o2:reserve") }, { true, false })
  T.eq({ reserve("o2:reserve") }, { nil, "compensated" })
  T.eq(stock(), 10)
  -- an action that fails rolls back with its record: it can run again
  T.raises(function() b:action("o3:reserve", function() error("db down") end) end, "db down")
  T.eq(reserve("o3:reserve"), "reserved")
  T.eq(stock(), 9)
end)

T.test("bad arguments raise errors naming the function", function()
  local db = tmpdb()
  T.raises(function() idem.middleware {} end, "orrery.idempotency.middleware: bad option 'store'")
  T.raises(function() idem.middleware { store = db, tll = 1 } end, "unknown option 'tll'")
  T.raises(function() idem.barrier(42) end, "orrery.idempotency.barrier: bad argument #1")
  local b = idem.barrier(db)
  T.raises(function() b:action(nil, print) end, "orrery.idempotency.action: bad argument #1")
  T.raises(function() b:compensate("k", 42) end, "orrery.idempotency.compensate: bad argument #2")
end)
