-- SPDX-License-Identifier: MIT
-- server.lua PORT [MAX_CONNECTIONS [FEATURES [LOG_PATH]]] -- the orrery
-- side of scripts/bench/http.sh, with the server's default timeouts.
-- FEATURES (the obs section) is "off" or a comma-separated list of what
-- to turn on: metrics (orrery.metrics loaded, the HTTP families recorded),
-- log (the access log, the server's default, through orrery.log to
-- LOG_PATH). Without it the server runs with its defaults but the access
-- log, which is off as nginx's is in http.sh, and loads nothing more.
local http = require "orrery.http"

local port = tonumber(arg[1] or "18080")
local features = arg[3]
local opts = { host = "127.0.0.1", port = port, max_connections = tonumber(arg[2] or "4096"),
  access_log = false }
if features then
  local on = {}
  for f in features:gmatch("[^,]+") do on[f] = true end
  opts.metrics = on.metrics or false
  opts.access_log = on.log or false
  if on.log then assert(require("orrery.log").open(assert(arg[4], "LOG_PATH"))) end
end

local app = http.router()
app:get("/", function() return 200, "hello world" end)
app:get("/json", function() return 200, { id = 123, status = "ok", items = { 1, 2, 3 } } end)
http.serve(app, opts)
