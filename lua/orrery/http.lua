-- SPDX-License-Identifier: MIT
-- orrery.http -- HTTP/1.1: the server (serve, listen), the router and
-- status errors (docs/http.md).
local server = require "orrery.http.server"
local router = require "orrery.http.router"

local M = {
  serve = server.serve,
  listen = server.listen,
  router = router.new,
  compose = router.compose,
  error = server.error,
  status_text = server.status_text,
  parse_query = server.parse_query,
  defaults = server.defaults,
}

return M
