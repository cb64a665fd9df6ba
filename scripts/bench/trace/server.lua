-- SPDX-License-Identifier: MIT
-- server.lua PORT MODE [ENDPOINT] -- the traced side of
-- scripts/bench/trace.sh: GET / ("hello world") with tracing off (MODE
-- "off": trace.configure is never called) or on at a ratio (MODE
-- "ratio=R"), exporting to ENDPOINT. GET /stats answers trace.stats().
local http = require "orrery.http"
local trace = require "orrery.trace"

local port, mode, endpoint = tonumber(arg[1]), arg[2] or "off", arg[3]
local ratio = tonumber(mode:match("^ratio=([%d.]+)$") or "")
if ratio then trace.configure { endpoint = endpoint, service_name = "bench", ratio = ratio } end

local app = http.router()
app:get("/", function() return 200, "hello world" end)
app:get("/stats", function() return 200, trace.stats() end)
http.serve(app, { host = "127.0.0.1", port = port })
