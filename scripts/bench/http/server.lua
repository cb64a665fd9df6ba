-- SPDX-License-Identifier: MIT
-- server.lua PORT [MAX_CONNECTIONS] -- the orrery side of
-- scripts/bench/http.sh, with the server's default timeouts.
local http = require "orrery.http"

local app = http.router()
app:get("/", function() return 200, "hello world" end)
app:get("/json", function() return 200, { id = 123, status = "ok", items = { 1, 2, 3 } } end)
http.serve(app, {
  host = "127.0.0.1",
  port = tonumber(arg[1] or "18080"),
  max_connections = tonumber(arg[2] or "4096"),
})
