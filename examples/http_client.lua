-- SPDX-License-Identifier: MIT
-- http_client.lua -- a service calling another over HTTP through a
-- concurrency limit, a circuit breaker and retries with an idempotency
-- key. The "payments" service it calls runs in the same process on a free
-- port and fails now and then; the caller charges ten orders from five
-- coroutines and prints what happened. Run: orrery examples/http_client.lua
local orrery = require "orrery"
local http = require "orrery.http"
local breaker = require "orrery.breaker"
local limit = require "orrery.limit"
local retry = require "orrery.retry"

-- The payments service: every third request fails with a 503; a charge
-- is taken once per Idempotency-Key however often it is sent.
local charged, seen = {}, 0
local payments = http.router()
payments:post("/charges", function(req)
  seen = seen + 1
  if seen % 3 == 0 then return 503, { error = "busy" } end
  local key = req.headers["idempotency-key"]
  local c = req:json()
  charged[key] = charged[key] or c.amount
  return 201, { key = key, amount = charged[key] }
end)
local srv = assert(http.listen(payments, { host = "127.0.0.1", port = 0 }))
local url = "http://127.0.0.1:" .. srv.port .. "/charges"

-- The caller's side: one client (its own pool), at most 4 calls at once,
-- a breaker that opens after 5 failures in a row, 3 attempts per charge.
local client = http.client { max_conns_per_host = 4, timeout = 2 }
local bulkhead = limit.concurrency { max = 4, queue = 16, name = "payments" }
local cb = breaker.new { name = "payments", timeout = 5,
  ready_to_trip = function(c) return c.consecutive_failures >= 5 end }
local policy = retry.new { max_attempts = 3, initial = 0.01, jitter = "full" }

-- One attempt: a 5xx is a failure (for the breaker and the retry), a
-- 4xx is an answer.
local function charge_once(order)
  local res, err = client:post(url, { amount = order.amount },
    { headers = { ["Idempotency-Key"] = order.key } })
  if not res then return nil, err end
  if res.status >= 500 then return nil, "http " .. res.status end
  return res:json()
end

local function charge(order)
  return bulkhead:call(function()
    return policy:call(function() return cb:call(charge_once, order) end)
  end)
end

local g = orrery.group()
local results = {}
for i = 1, 10 do
  g:go(function()
    local r, err = charge { key = "order-" .. i, amount = i * 10 }
    results[i] = r and ("charged " .. r.amount) or ("failed: " .. tostring(err))
  end)
end
assert(g:wait() == nil)
for i = 1, 10 do print(("order-%d %s"):format(i, results[i])) end

local st = client:stats()["http://127.0.0.1:" .. srv.port]
print(("requests %d, connections created %d, reused %d, breaker %s, retries %d")
  :format(seen, st.created, st.reused, cb:state(), policy:stats().retries))
srv:close()
