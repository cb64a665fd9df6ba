-- SPDX-License-Identifier: MIT
-- orrery.http -- HTTP/1.1: the server (serve, listen), the router and
-- status errors (docs/http.md), and the client (request, get, post,
-- client; docs/http-client.md).
local server = require "orrery.http.server"
local router = require "orrery.http.router"
local client = require "orrery.http.client"

local M = {
  serve = server.serve,
  listen = server.listen,
  router = router.new,
  compose = router.compose,
  error = server.error,
  status_text = server.status_text,
  parse_query = server.parse_query,
  defaults = server.defaults,
  request = client.request,
  get = client.get,
  post = client.post,
  client = client.client,
  default_client = client.default_client,
  client_defaults = client.defaults,
  err_code = client.err_code,
}

return M
