-- SPDX-License-Identifier: MIT
-- http_common_test.lua -- what the server and the router share
-- (orrery.http.common): one table of status lines, and a router that
-- does not depend on the server.
local T = require "orrery.test"
local http = require "orrery.http"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

T.test("status_text knows the statuses the Lua table used to lack (203, 418, 451)", function()
  T.eq(http.status_text(203), "Non-Authoritative Information")
  T.eq(http.status_text(418), "I'm a teapot")
  T.eq(http.status_text(451), "Unavailable For Legal Reasons")
  T.eq(http.status_text(404), "Not Found")
  T.eq(http.status_text(299), nil)
  T.eq(http.status_text("404"), nil)
end)

T.test("status lines on the wire and http.status_text agree", function()
  local codes = { 200, 201, 203, 204, 301, 400, 404, 418, 429, 451, 500, 503 }
  local srv = H.start(function(req) return tonumber(req.path:sub(2)), "x" end)
  local c = H.connect(srv)
  for _, code in ipairs(codes) do
    local res = assert(H.request(c, "GET /" .. code .. " HTTP/1.1\r\nHost: t\r\n\r\n"))
    T.eq(res.head:match("^[^\r\n]*"), ("HTTP/1.1 %d %s"):format(code, http.status_text(code)))
  end
  c:close()
  srv:close()
end)

T.test("http.error without a body answers with the status line's text", function()
  local srv = H.start(function() http.error(451) end)
  local c = H.connect(srv)
  local res = assert(H.request(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"))
  T.eq(res.status, 451)
  T.eq(res.body, "Unavailable For Legal Reasons\n")
  c:close()
  srv:close()
end)

T.test("the router does not load the server module", function()
  local st, out, err = T.script([[
    require "orrery.http.router"
    io.write(tostring(package.loaded["orrery.http.server"] ~= nil))
  ]])
  T.eq(st, 0, err)
  T.eq(out, "false")
end)
