-- SPDX-License-Identifier: MIT
-- orrery.http.router -- method + path routing with :params and trailing
-- wildcards, middleware chains and per-route timeouts.
--
-- Handler contract: handler(req) -> status, body, headers.
-- Middleware: function(req, next) that returns next(req)'s results (maybe
-- changed) or short-circuits with its own. Chains are composed once, when
-- routes or middleware change, so a request allocates no closure.
local server = require "orrery.http.server"

local type, error, setmetatable = type, error, setmetatable
local unescape = server.unescape

local M = {}

local Router = {}
Router.__index = Router
M.Router = Router

local METHODS = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE" }

local function node()
  return { static = {} }
end

function M.new()
  return setmetatable({ exact = {}, tree = node(), mws = {}, n = 0 }, Router)
end

local function compose(mws, final)
  local h = final
  for i = #mws, 1, -1 do
    local mw, nxt = mws[i], h
    h = function(req) return mw(req, nxt) end
  end
  return h
end
M.compose = compose

local function split(path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do segs[#segs + 1] = seg end
  return segs
end

-- The route entry for pattern, created on first use.
local function entry_for(self, pattern)
  if not pattern:find("[:*]") then
    local e = self.exact[pattern]
    if not e then
      e = { methods = {}, pattern = pattern }
      self.exact[pattern] = e
    end
    return e
  end
  local n = self.tree
  local segs = split(pattern)
  local names = {}
  for i, seg in ipairs(segs) do
    local c = seg:sub(1, 1)
    if c == ":" then
      local name = seg:sub(2)
      if name == "" then error("orrery.http.router: empty parameter name in " .. pattern, 4) end
      if n.param and n.param.name ~= name then
        error(("orrery.http.router: %s: parameter :%s conflicts with :%s"):format(pattern, name, n.param.name), 4)
      end
      n.param = n.param or { name = name, node = node() }
      names[#names + 1] = name
      n = n.param.node
    elseif c == "*" then
      if i ~= #segs then error("orrery.http.router: wildcard must end the pattern: " .. pattern, 4) end
      local name = seg:sub(2)
      if name == "" then name = "*" end
      n.wild = n.wild or { name = name, entry = { methods = {}, pattern = pattern } }
      return n.wild.entry
    else
      local s = n.static[seg]
      if not s then
        s = node()
        n.static[seg] = s
      end
      n = s
    end
  end
  n.entry = n.entry or { methods = {}, pattern = pattern }
  return n.entry
end

local function allow_of(e)
  local list, has = {}, e.methods
  if has.ANY then return table.concat(METHODS, ", ") end
  for _, m in ipairs(METHODS) do
    if has[m] or (m == "HEAD" and has.GET) then list[#list + 1] = m end
  end
  for m in pairs(has) do
    local known = false
    for _, k in ipairs(METHODS) do if k == m then known = true end end
    if not known then list[#list + 1] = m end
  end
  if not has.OPTIONS then list[#list + 1] = "OPTIONS" end
  return table.concat(list, ", ")
end

--- router:route(method, pattern, handler [, opts]): method is a string,
-- a list of strings or "*" for any. opts.timeout (seconds) runs the handler
-- under a deadline (503 when it fails past it); opts.middleware is a list
-- run for this route only, after the router's own.
function Router:route(method, pattern, handler, opts)
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    error("orrery.http.router: bad pattern (must start with '/')", 2)
  end
  if type(handler) == "table" and type(opts) == "function" then handler, opts = opts, handler end
  if type(handler) ~= "function" then error("orrery.http.router: bad handler (function expected)", 2) end
  opts = opts or {}
  local h = handler
  if opts.middleware then h = compose(opts.middleware, h) end
  if opts.timeout then
    local secs, inner = opts.timeout, h
    h = function(req)
      local ok, s, b, hd = server.call_with_timeout(req, secs, inner)
      if not ok then error(s, 0) end
      return s, b, hd
    end
  end
  local e = entry_for(self, pattern)
  local ms = type(method) == "table" and method or { method }
  for _, m in ipairs(ms) do
    m = m == "*" and "ANY" or m:upper()
    e.methods[m] = h
  end
  e.allow = allow_of(e)
  self.dirty = true
  return self
end

for _, m in ipairs(METHODS) do
  Router[m:lower()] = function(self, pattern, handler, opts)
    return self:route(m, pattern, handler, opts)
  end
end
function Router:any(pattern, handler, opts) return self:route("*", pattern, handler, opts) end

--- router:use(mw): adds middleware run for every request, routed or not.
function Router:use(mw)
  if type(mw) ~= "function" then error("orrery.http.router:use: middleware function expected", 2) end
  self.mws[#self.mws + 1] = mw
  self.dirty = true
  return self
end

--- router:group(prefix, fn [, opts]): fn(g) registers routes on g, which
-- prefixes their patterns and adds opts.middleware before their own.
function Router:group(prefix, fn, opts)
  local parent = self
  local mws = opts and opts.middleware or {}
  local g = setmetatable({}, { __index = function(_, k)
    if k == "route" then
      return function(_, method, pattern, handler, ropts)
        if type(handler) == "table" and type(ropts) == "function" then handler, ropts = ropts, handler end
        local o = {}
        for kk, v in pairs(ropts or {}) do o[kk] = v end
        local all = {}
        for _, m in ipairs(mws) do all[#all + 1] = m end
        for _, m in ipairs(o.middleware or {}) do all[#all + 1] = m end
        o.middleware = all
        return parent:route(method, prefix .. (pattern == "/" and "" or pattern), handler, o)
      end
    end
    local m = k:upper()
    return function(gg, pattern, handler, ropts)
      return gg:route(m == "ANY" and "*" or m, pattern, handler, ropts)
    end
  end })
  fn(g)
  return self
end

function Router:not_found(fn) self.on_not_found = fn; self.dirty = true; return self end

local function default_not_found() return 404, "Not Found\n" end

local function match(n, segs, i, params)
  if i > #segs then
    if n.entry then return n.entry end
    if n.wild then
      params[n.wild.name] = ""
      return n.wild.entry
    end
    return nil
  end
  local seg = segs[i]
  local s = n.static[seg]
  if s then
    local e = match(s, segs, i + 1, params)
    if e then return e end
  end
  if n.param then
    local e = match(n.param.node, segs, i + 1, params)
    if e then
      params[n.param.name] = unescape(seg)
      return e
    end
  end
  if n.wild then
    params[n.wild.name] = unescape(table.concat(segs, "/", i))
    return n.wild.entry
  end
  return nil
end

local function dispatcher(self)
  local exact, tree = self.exact, self.tree
  local not_found = self.on_not_found or default_not_found
  return function(req)
    local path = req.path
    local e = exact[path]
    if not e then
      local params = {}
      e = match(tree, split(path), 1, params)
      if not e then return not_found(req) end
      req.params = params
    end
    local method = req.method
    local ms = e.methods
    local h = ms[method] or (method == "HEAD" and ms.GET) or ms.ANY
    if h then return h(req) end
    if method == "OPTIONS" then return 204, nil, { Allow = e.allow } end
    return 405, "Method Not Allowed\n", { Allow = e.allow }
  end
end

--- router:handler() -> function(req): the composed request handler.
function Router:handler()
  return function(req)
    local h = self.h
    if self.dirty or not h then
      h = compose(self.mws, dispatcher(self))
      self.h, self.dirty = h, false
    end
    return h(req)
  end
end

function Router:__call(req)
  local h = self.h
  if self.dirty or not h then
    h = compose(self.mws, dispatcher(self))
    self.h, self.dirty = h, false
  end
  return h(req)
end

return M
