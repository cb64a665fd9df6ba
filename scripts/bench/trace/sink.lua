-- SPDX-License-Identifier: MIT
-- sink.lua PORT -- an OTLP/HTTP endpoint for scripts/bench/trace.sh that
-- reads each batch and answers 200 (not traced itself).
local http = require "orrery.http"
http.serve(function(req)
  req:body()
  return 200, "{}"
end, { host = "127.0.0.1", port = tonumber(arg[1]), trace = false, max_body_size = 64 * 1048576 })
