-- SPDX-License-Identifier: MIT
-- http_returns_test.lua -- what the server does with a handler's return
-- values that are wrong, and the errors of req:json().
local T = require "orrery.test"
local http = require "orrery.http"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

local function app()
  local r = http.router()
  r:get("/string-status", function() return "201", { ok = true } end)
  r:get("/999", function() return 999, "x" end)
  r:get("/99", function() return 99, "x" end)
  r:get("/fraction", function() return 200.5, "x" end)
  r:get("/bad-header", function() return 200, "x", { ok = true } end)
  r:get("/string-body", function() return "201" end)
  r:get("/text-with-headers", function() return "hello", { ["X-A"] = "1" } end)
  r:post("/json", function(req) return 200, req:json() end)
  return r
end

local function get(srv, c, path)
  return assert(H.request(c, "GET " .. path .. " HTTP/1.1\r\nHost: t\r\n\r\n"))
end

T.test("return \"201\", { ok = true } is a 500 whose log line says the status is a string", function()
  local srv = H.start(app())
  local c = H.connect(srv)
  local res = get(srv, c, "/string-status")
  T.eq(res.status, 500)
  T.eq(#srv.logged, 1)
  T.ok(srv.logged[1]:find('GET /string-status: handler returned status "201" as a string', 1, true), srv.logged[1])
  c:close()
  srv:close()
end)

T.test("return 999, \"x\" is a 500, not HTTP/1.1 999, and says why", function()
  local srv = H.start(app())
  local c = H.connect(srv)
  for _, p in ipairs { "/999", "/99", "/fraction" } do
    local res = get(srv, c, p)
    T.eq(res.status, 500, p)
    T.eq(res.body, "Internal Server Error\n")
  end
  T.eq(#srv.logged, 3)
  T.ok(srv.logged[1]:find("returned status 999: an integer from 100 to 599 expected", 1, true), srv.logged[1])
  T.ok(srv.logged[2]:find("returned status 99:", 1, true), srv.logged[2])
  T.ok(srv.logged[3]:find("returned status 200.5:", 1, true), srv.logged[3])
  c:close()
  srv:close()
end)

T.test("a bad header is a 500 whose log line shows what the handler returned", function()
  local srv = H.start(app())
  local c = H.connect(srv)
  T.eq(get(srv, c, "/bad-header").status, 500)
  T.ok(srv.logged[1]:find('handler returned an unusable response (status 200, body "x", headers table)', 1, true),
    srv.logged[1])
  T.ok(srv.logged[1]:find("header ok: string value expected", 1, true), srv.logged[1])
  c:close()
  srv:close()
end)

T.test("a string in first place is still a 200 body", function()
  local srv = H.start(app())
  local c = H.connect(srv)
  local res = get(srv, c, "/string-body")
  T.eq({ res.status, res.body }, { 200, "201" })
  res = get(srv, c, "/text-with-headers")
  T.eq({ res.status, res.body, res.headers["x-a"] }, { 200, "hello", "1" })
  T.eq(srv.logged, {})
  c:close()
  srv:close()
end)

T.test("http.error takes statuses from 100 to 599 only", function()
  T.raises(function() http.error(999) end, "bad argument #1 (status from 100 to 599 expected, got 999)")
  T.raises(function() http.error(99) end, "got 99")
  T.raises(function() http.error("404") end, "got string")
end)

T.test("req:json() answers invalid JSON in JSON when the client accepts it", function()
  local srv = H.start(app())
  local c = H.connect(srv)
  local function post(accept)
    return assert(H.request(c, "POST /json HTTP/1.1\r\nHost: t\r\n" .. accept ..
      "Content-Length: 3\r\n\r\n{x}"))
  end
  for _, accept in ipairs { "Accept: application/json\r\n", "Accept: */*\r\n",
    "Accept: text/html, application/problem+json;q=0.5\r\n" } do
    local res = post(accept)
    T.eq(res.status, 400, accept)
    T.eq(res.headers["content-type"], "application/json", accept)
    T.match(res.body, '^{"error":"invalid JSON: ')
  end
  for _, accept in ipairs { "", "Accept: text/plain\r\n", "Accept: application/json;q=0\r\n" } do
    local res = post(accept)
    T.eq(res.status, 400, accept)
    T.eq(res.headers["content-type"], "text/plain; charset=utf-8", accept)
    T.match(res.body, "^invalid JSON: ")
  end
  c:close()
  srv:close()
end)
