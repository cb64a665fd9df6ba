-- SPDX-License-Identifier: MIT
-- order.lua -- the order example's order service: POST /orders runs the
-- order saga (create order -> charge payment -> reserve stock -> schedule
-- shipment) against the three participant services (README.md).
--
--   orrery examples/order/order.lua --port 8080 --db order.db \
--     --payment http://127.0.0.1:8081 --inventory http://127.0.0.1:8082 \
--     --shipping http://127.0.0.1:8083 [--crash STEP]
local orrery = require "orrery"
local http = require "orrery.http"
local saga = require "orrery.saga"
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local C = dofile(dir .. "common.lua")

local flags = C.flags(...)
flags.name = "order"
local urls = { payment = flags.payment or "http://127.0.0.1:8081",
  inventory = flags.inventory or "http://127.0.0.1:8082",
  shipping = flags.shipping or "http://127.0.0.1:8083" }

-- Calls a participant: 200 with ok is success; a 409 (a business
-- refusal: out of stock) or an action refused after its compensation
-- did not take effect (saga.refuse); anything else may have (a lost
-- answer, a 5xx), and the saga compensates the step too.
local function call(service, path, key, body, fault)
  local res, err = http.post(urls[service] .. path, body, { timeout = 4,
    headers = { ["Idempotency-Key"] = key, ["X-Fault"] = fault } })
  if not res then return nil, err end
  local j = res:json()
  if res.status == 409 then return saga.refuse((j and j.error) or "refused") end
  if res.status ~= 200 then return nil, (j and j.error) or ("status " .. res.status) end
  if path == "/action" and not j.ok then return saga.refuse(j.note or "refused") end
  return j.result or true
end

-- A step that calls `service`; the saga input's fault table can ask the
-- participant (fault[service]) or this process (fault.order == name) to
-- misbehave.
-- --crash-rate P: before and after each call, die by SIGKILL with
-- probability P (the crash test).
local crash_rate = tonumber(flags.crash_rate or "0")
math.randomseed(tonumber(C.pid()) + os.time())
local function maybe_crash()
  if crash_rate > 0 and math.random() < crash_rate then os.execute("kill -9 " .. C.pid()) end
end

local function remote(name, service, body_of)
  return {
    name = name,
    action = function(sc)
      local f = sc.input.fault or {}
      if f.order == name or flags.crash == name then os.execute("kill -9 " .. C.pid()) end
      maybe_crash()
      local body = body_of(sc)
      body.order = sc.id
      local r, err = call(service, "/action", sc.key, body, f[service])
      maybe_crash()
      return r, err
    end,
    compensate = function(sc)
      return call(service, "/compensate", sc.key .. ":undo", { key = sc.key, order = sc.id },
        (sc.input.fault or {})[service .. "_undo"])
    end,
    timeout = 5,
    retry = { max_attempts = 3, initial = 0.05 },
    -- a compensation is retried until the participant takes it
    compensate_retry = { max_attempts = math.huge, initial = 0.05, max_interval = 1 },
  }
end

local charge = remote("charge", "payment", function(sc) return { amount = sc.input.amount } end)
local reserve = remote("reserve", "inventory", function(sc) return { sku = sc.input.sku, qty = sc.input.qty } end)
reserve.pivot = true
local ship = remote("ship", "shipping", function() return {} end)
ship.retry = { max_attempts = math.huge, initial = 0.05, max_interval = 0.5 }

local orders = saga.define {
  name = "order", version = 1,
  journal = "sqlite:" .. (flags.db or "order.db"),
  recover_interval = 1,
  steps = {
    { name = "create", action = function(sc) return { order = sc.id } end,
      compensate = function() return true end },
    charge, reserve, ship,
  },
}

local app = http.router()
app:post("/orders", function(req)
  local input = req:json()
  local key = req:header("idempotency-key")
  if req.raw_query:match("async=1") then
    local id, err = orders:start(input, { key = key })
    if not id then return err == "key_conflict" and 422 or 500, { error = err } end
    return 202, { id = id }
  end
  local r, err = orders:run(input, { key = key })
  if err == "key_conflict" then return 422, { error = err } end
  local g = key and orders:get(key)
  return r and 201 or 200, { state = g and g.state or (r and "completed" or "compensated"),
    id = g and g.id, result = r, error = err }
end)
app:get("/orders/:id", function(req)
  local g, err = orders:get(req.params.id)
  if not g then return 404, { error = err } end
  g.history = nil
  return 200, g
end)
app:get("/stats", function()
  local n = {}
  for _, s in ipairs(saga.STATES) do n[s] = #assert(orders.journal:list(s)) end
  return 200, n
end)

local srv = assert(http.listen(app, { host = "127.0.0.1", port = flags.port }))
C.write_port(flags, srv)
orrery.context.background():done():recv()
