-- SPDX-License-Identifier: MIT
-- http_hello.lua -- a small HTTP service: plain text, JSON, a route
-- parameter, a body echo and a middleware. Run: orrery examples/http_hello.lua
-- Environment: HOST (127.0.0.1), PORT (8080; 0 picks a free port),
-- ACCESS_LOG=1 for one JSON log line per request. SIGTERM (or Ctrl-C)
-- stops it gracefully: requests in flight finish, then it exits.
-- example: service, tested by http_shutdown_test.lua
local orrery = require "orrery"
local http = require "orrery.http"

local app = http.router()

-- Middleware: tag every response with the time spent in the handler.
app:use(function(req, next)
  local t0 = os.clock()
  local status, body, headers = next(req)
  headers = headers or {}
  headers["X-Handler-Time"] = ("%.6f"):format(os.clock() - t0)
  return status, body, headers
end)

app:get("/", function() return 200, "hello world" end)
app:get("/json", function() return 200, { id = 123, status = "ok", items = { 1, 2, 3 } } end)
app:get("/hello/:name", function(req) return 200, { hello = req.params.name } end)
-- A handler that blocks: other connections keep being served meanwhile.
app:get("/sleep/:ms", function(req)
  orrery.sleep((tonumber(req.params.ms) or 0) / 1000)
  return 200, "slept " .. req.params.ms
end)
app:post("/echo", function(req)
  local body, err = req:body()
  if not body then return 400, err end
  return 200, body, { ["Content-Type"] = req:header("content-type") or "application/octet-stream" }
end)

local srv = assert(http.listen(app, {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT") or "8080"),
  access_log = os.getenv("ACCESS_LOG") == "1",
}))
print(("listening on http://%s:%d pid %d"):format(srv.host, srv.port,
  orrery.pid()))
io.stdout:flush()
srv:wait() -- until SIGTERM/SIGINT has drained the server
print("stopped")
