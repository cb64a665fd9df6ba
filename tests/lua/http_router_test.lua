-- SPDX-License-Identifier: MIT
-- http_router_test.lua -- routing, 404/405, middleware, per-route timeouts.
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

local function fake(method, path)
  return setmetatable({ method = method, path = path, raw_query = "", ctx = orrery.context.background() },
    require("orrery.http.server").req_mt)
end

T.test("static, parameter and wildcard routes", function()
  local r = http.router()
  r:get("/", function() return 200, "root" end)
  r:get("/users", function() return 200, "list" end)
  r:get("/users/me", function() return 200, "me" end)
  r:get("/users/:id", function(req) return 200, "user " .. req.params.id end)
  r:get("/users/:id/posts/:post", function(req) return 200, req.params.id .. "/" .. req.params.post end)
  r:get("/static/*path", function(req) return 200, "file " .. req.params.path end)
  r:post("/users", function() return 201, "created" end)
  local h = r:handler()
  T.eq({ h(fake("GET", "/")) }, { 200, "root" })
  T.eq({ h(fake("GET", "/users")) }, { 200, "list" })
  T.eq({ h(fake("GET", "/users/me")) }, { 200, "me" })
  T.eq({ h(fake("GET", "/users/a%20b")) }, { 200, "user a b" })
  T.eq({ h(fake("GET", "/users/7/posts/9")) }, { 200, "7/9" })
  T.eq({ h(fake("GET", "/static/css/site.css")) }, { 200, "file css/site.css" })
  T.eq({ h(fake("POST", "/users")) }, { 201, "created" })
  T.eq({ h(fake("HEAD", "/users")) }, { 200, "list" })
  T.eq((h(fake("GET", "/nope"))), 404)
  T.eq((h(fake("GET", "/users/7/posts"))), 404)
  local s, _, hd = h(fake("DELETE", "/users"))
  T.eq(s, 405)
  T.eq(hd.Allow, "GET, HEAD, POST, OPTIONS")
  s, _, hd = h(fake("OPTIONS", "/users/3"))
  T.eq(s, 204)
  T.eq(hd.Allow, "GET, HEAD, OPTIONS")
end)

T.test("conflicting parameter names are a registration error", function()
  local r = http.router()
  r:get("/a/:id", function() end)
  T.raises(function() r:get("/a/:name/x", function() end) end, "conflicts")
  T.raises(function() r:get("/b/*rest/more", function() end) end, "wildcard must end")
  T.raises(function() r:get("nope", function() end) end, "must start with")
end)

local function fakeq(method, path, query)
  local r = fake(method, path)
  r.raw_query = query or ""
  return r
end

T.test("a trailing slash is significant; the other form is redirected", function()
  local r = http.router()
  r:get("/users", function() return 200, "list" end)
  r:get("/users/:id", function(req) return 200, "user " .. req.params.id end)
  r:get("/dir/", function() return 200, "dir" end)
  r:get("/files/*path", function(req) return 200, "file " .. req.params.path end)
  r:post("/items/:id/", function() return 201, "made" end)
  local h = r:handler()
  T.eq({ h(fake("GET", "/users")) }, { 200, "list" })
  T.eq({ h(fake("GET", "/users/")) }, { 301, "Moved Permanently\n", { Location = "/users" } })
  T.eq({ h(fake("GET", "/users/7/")) }, { 301, "Moved Permanently\n", { Location = "/users/7" } })
  T.eq({ h(fake("GET", "/dir/")) }, { 200, "dir" })
  T.eq({ h(fakeq("HEAD", "/dir", "a=1&b")) }, { 301, "Moved Permanently\n", { Location = "/dir/?a=1&b" } })
  -- Other methods get 308, which keeps the method and the body.
  T.eq({ h(fake("POST", "/items/3/")) }, { 201, "made" })
  T.eq({ h(fake("POST", "/items/3")) }, { 308, "Permanent Redirect\n", { Location = "/items/3/" } })
  -- A wildcard takes the rest as sent, trailing slash included.
  T.eq({ h(fake("GET", "/files/a/b.txt")) }, { 200, "file a/b.txt" })
  T.eq({ h(fake("GET", "/files/a/")) }, { 200, "file a/" })
  T.eq({ h(fake("GET", "/files/")) }, { 200, "file " })
  T.eq({ h(fake("GET", "/files")) }, { 301, "Moved Permanently\n", { Location = "/files/" } })
  -- Neither form known: 404.
  T.eq((h(fake("GET", "/nope/"))), 404)
  T.eq((h(fake("GET", "/"))), 404)
  -- Turned off: the other form is a 404.
  local strict = http.router({ redirect_slash = false })
  strict:get("/users", function() return 200, "list" end)
  strict:get("/users/:id", function() return 200, "one" end)
  T.eq((strict:handler()(fake("GET", "/users/"))), 404)
  T.eq((strict:handler()(fake("GET", "/users/7/"))), 404)
end)

T.test("paths with empty, '.' and '..' segments are redirected to their clean form", function()
  local r = http.router()
  r:get("/a/b", function() return 200, "ab" end)
  r:get("/static/*path", function(req) return 200, "file " .. req.params.path end)
  local h = r:handler()
  local function loc(path, query)
    local s, _, hd = h(fakeq("GET", path, query))
    return s, hd and hd.Location
  end
  T.eq({ loc("/a//b") }, { 301, "/a/b" })
  T.eq({ loc("/a/./b") }, { 301, "/a/b" })
  T.eq({ loc("/x/../a/b", "q=1") }, { 301, "/a/b?q=1" })
  T.eq({ loc("/a/b/") }, { 301, "/a/b" })
  T.eq({ loc("/static/%2e%2e/%2E%2e/etc/passwd") }, { 301, "/etc/passwd" })
  T.eq({ loc("/static/css/../../../etc/passwd") }, { 301, "/etc/passwd" })
  T.eq({ loc("/..") }, { 301, "/" })
  T.eq({ loc("/static/a/.") }, { 301, "/static/a" })
  T.eq({ loc("/static/a/./") }, { 301, "/static/a/" })
  -- A dot inside a name, an encoded slash and a dot file are not dot segments.
  T.eq({ h(fake("GET", "/static/.well-known/x")) }, { 200, "file .well-known/x" })
  T.eq({ h(fake("GET", "/static/a%2fb")) }, { 200, "file a/b" })
  T.eq({ h(fake("GET", "/static/v1.2/..x")) }, { 200, "file v1.2/..x" })
  -- Patterns must be clean; the check can be turned off per router.
  T.raises(function() r:get("/a//c", function() end) end, "bad pattern \"/a//c\"")
  T.raises(function() r:get("/a/../c", function() end) end, "'..' segment")
  local raw = http.router({ clean_path = false })
  raw:get("/static/*path", function(req) return 200, req.params.path end)
  T.eq({ raw:handler()(fake("GET", "/static/x/../y")) }, { 200, "x/../y" })
  T.raises(function() http.router({ clean = true }) end,
    "bad argument #1 to 'orrery.http.router' (unknown option 'clean')")
  T.raises(function() http.router({ clean_path = 1 }) end, "clean_path must be a boolean")
  T.raises(function() http.router("x") end, "(table expected, got string)")
end)

T.test("middleware runs in order, can change results and short-circuit", function()
  local r = http.router()
  local order = {}
  r:use(function(req, next)
    order[#order + 1] = "a>"
    local s, b, h = next(req)
    order[#order + 1] = "<a"
    h = h or {}
    h["X-A"] = "1"
    return s, b, h
  end)
  r:use(function(req, next)
    if req:header("authorization") ~= "yes" then return 401, "no" end
    order[#order + 1] = "b>"
    return next(req)
  end)
  r:get("/x", function() order[#order + 1] = "h"; return 200, "x" end)
  local srv = H.start(r)
  local res = H.get(srv, "/x", "Authorization: yes\r\n")
  T.eq(res.status, 200)
  T.eq(res.headers["x-a"], "1")
  T.eq(order, { "a>", "b>", "h", "<a" })
  order = {}
  res = H.get(srv, "/x")
  T.eq(res.status, 401)
  T.eq(res.headers["x-a"], "1")
  T.eq(order, { "a>", "<a" })
  -- Global middleware also sees unknown paths.
  res = H.get(srv, "/missing", "Authorization: yes\r\n")
  T.eq(res.status, 404)
  T.eq(res.headers["x-a"], "1")
  srv:close()
end)

T.test("route middleware, groups and custom not_found", function()
  local r = http.router()
  local tag = function(v) return function(req, next) local s, b = next(req); return s, b .. v end end
  r:group("/api", function(g)
    g:get("/ping", function() return 200, "pong" end, { middleware = { tag("!") } })
    g:post("/ping", function() return 200, "posted" end)
  end, { middleware = { tag("?") } })
  r:not_found(function(req) return 404, { missing = req.path } end)
  local h = r:handler()
  T.eq({ h(fake("GET", "/api/ping")) }, { 200, "pong!?" })
  T.eq({ h(fake("POST", "/api/ping")) }, { 200, "posted?" })
  T.eq({ h(fake("GET", "/other")) }, { 404, { missing = "/other" } })
end)

T.test("a per-route timeout cancels the handler's waits and answers 503", function()
  local r = http.router()
  local seen = H.signal()
  r:get("/slow", function(req)
    local ok, err = orrery.sleep(5)
    seen:fire({ err = err, ctx = req.ctx:err() })
    if not ok then error("gave up") end
    return 200, "never"
  end, { timeout = 0.05 })
  r:get("/fast", function() orrery.sleep(0.01); return 200, "fast" end, { timeout = 1 })
  local srv = H.start(r)
  local res = H.get(srv, "/slow")
  T.eq(res.status, 503)
  T.eq(seen:wait(), { err = "timeout", ctx = "timeout" })
  T.eq(H.get(srv, "/fast").body, "fast")
  srv:close()
end)

T.test("the router answers over the wire: 404, 405 with Allow", function()
  local r = http.router()
  r:get("/a", function() return 200, "a" end)
  r:put("/a", function() return 200, "put" end)
  local srv = H.start(r)
  T.eq(H.get(srv, "/b").status, 404)
  local c = H.connect(srv)
  local res = H.request(c, "DELETE /a HTTP/1.1\r\nHost: t\r\n\r\n")
  T.eq(res.status, 405)
  T.eq(res.headers["allow"], "GET, HEAD, PUT, OPTIONS")
  res = H.request(c, "PUT /a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
  T.eq(res.body, "put")
  c:close()
  srv:close()
end)
