-- SPDX-License-Identifier: MIT
-- server.lua PORT CERT KEY -- the orrery side of scripts/bench/tls.sh's
-- server section: HTTPS with the server's default timeouts, "hello world".
local http = require "orrery.http"

local app = http.router()
app:get("/", function() return 200, "hello world" end)
http.serve(app, {
  host = "127.0.0.1",
  port = tonumber(arg[1]),
  tls = { cert = arg[2], key = arg[3] },
})
