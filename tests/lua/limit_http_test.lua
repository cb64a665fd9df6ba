-- SPDX-License-Identifier: MIT
-- limit_http_test.lua -- orrery.limit.middleware mounted on a real server.
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"
local limit = require "orrery.limit"
local H = dofile("tests/lua/http_helpers.lua")

T.test("a token bucket middleware answers 429 with Retry-After once the burst is spent", function()
  local now = 100
  local lim = limit.token_bucket { rate = 0.5, burst = 2, clock = function() return now end }
  local app = http.router()
  app:use(limit.middleware { limiter = lim })
  app:get("/pay", function() return 200, "paid" end)
  local srv = H.start(app)
  local c = H.connect(srv)
  local statuses, retry = {}, nil
  for i = 1, 3 do
    local res = assert(H.request(c, "GET /pay HTTP/1.1\r\nHost: x\r\n\r\n"))
    statuses[i] = res.status
    if res.status == 429 then retry = res.headers["retry-after"] end
  end
  T.eq(statuses, { 200, 200, 429 })
  T.eq(retry, "2", "one token at 0.5/s is two seconds away")
  now = now + 2
  local res = assert(H.request(c, "GET /pay HTTP/1.1\r\nHost: x\r\n\r\n"))
  T.eq(res.status, 200, "the bucket refilled")
  c:close()
  srv:close()
end)

T.test("a per-key middleware limits each client key separately", function()
  local now = 0
  local app = http.router()
  app:use(limit.middleware {
    per_key = function(req) return req:header("x-api-key") end,
    new = function() return limit.token_bucket { rate = 1, burst = 1, clock = function() return now end } end,
  })
  app:get("/", function() return 200, "ok" end)
  local srv = H.start(app)
  local c = H.connect(srv)
  local function get(key)
    local extra = key and ("X-Api-Key: " .. key .. "\r\n") or ""
    return assert(H.request(c, "GET / HTTP/1.1\r\nHost: x\r\n" .. extra .. "\r\n")).status
  end
  T.eq({ get("a"), get("a"), get("b"), get("b"), get(nil), get(nil) }, { 200, 429, 200, 429, 200, 200 })
  c:close()
  srv:close()
end)
