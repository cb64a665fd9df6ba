-- SPDX-License-Identifier: MIT
-- orrery.http.router -- method + path routing with :params and trailing
-- wildcards, middleware chains and per-route timeouts.
--
-- Handler contract: handler(req) -> status, body, headers.
-- Middleware: function(req, next) that returns next(req)'s results (maybe
-- changed) or short-circuits with its own. Chains are composed once, when
-- routes or middleware change, so a request allocates no closure.
local common = require "orrery.http.common"

local type, error, setmetatable = type, error, setmetatable
local unescape = common.unescape

local M = {}

local Router = {}
Router.__index = Router
M.Router = Router

local METHODS = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE" }

local function node()
  return { static = {} }
end

local ROUTER_OPTS = { redirect_slash = true, clean_path = true }

--- http.router([opts]) -> router. opts.redirect_slash (default true):
-- a path that matches no route but would with its trailing slash added or
-- removed is redirected there. opts.clean_path (default true): a path with
-- empty, "." or ".." segments (percent-encoded ones included) is
-- redirected to its cleaned form before routing.
function M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #1 to 'orrery.http.router' (table expected, got %s)"):format(type(opts)), 2)
  end
  local self = setmetatable({ exact = {}, tree = node(), mws = {}, n = 0,
    redirect_slash = true, clean_path = true, max_route_body = 0 }, Router)
  for k, v in pairs(opts or {}) do
    if not ROUTER_OPTS[k] then
      error(("bad argument #1 to 'orrery.http.router' (unknown option '%s')"):format(tostring(k)), 2)
    end
    if type(v) ~= "boolean" then
      error(("bad argument #1 to 'orrery.http.router' (%s must be a boolean)"):format(k), 2)
    end
    self[k] = v
  end
  return self
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

-- The segments of path, and where each starts (for wildcards, which take
-- the raw rest of the path).
local function split(path)
  local segs, pos = {}, {}
  for at, seg in path:gmatch("()([^/]+)") do
    segs[#segs + 1] = seg
    pos[#pos + 1] = at
  end
  return segs, pos
end

-- The path's segment decoded, if it may be a dot segment.
local function dot(seg)
  if seg:find("%", 1, true) then seg = unescape(seg) end
  return seg == "." and 1 or seg == ".." and 2 or nil
end

-- path without empty, "." and ".." segments (percent-encoded ones too),
-- keeping a trailing slash; nil when it is clean already.
local function clean(path)
  if not (path:find("//", 1, true) or path:find("/.", 1, true) or path:find("/%", 1, true)) then
    return nil
  end
  local parts = {}
  for seg in (path:sub(2) .. "/"):gmatch("([^/]*)/") do
    local d = seg ~= "" and dot(seg)
    if d == 2 then
      parts[#parts] = nil
    elseif seg ~= "" and not d then
      parts[#parts + 1] = seg
    end
  end
  local c = "/" .. table.concat(parts, "/")
  if c ~= "/" and path:byte(-1) == 47 then c = c .. "/" end
  if c == path then return nil end
  return c
end
M.clean = clean

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
  -- "/a/:b" and "/a/:b/" are different routes.
  local key = pattern:sub(-1) == "/" and "entry_slash" or "entry"
  n[key] = n[key] or { methods = {}, pattern = pattern }
  return n[key]
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
-- run for this route only, after the router's own; opts.max_body_size
-- (bytes) replaces the server's body limit for this route.
function Router:route(method, pattern, handler, opts)
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    error("orrery.http.router: bad pattern (must start with '/')", 2)
  end
  if clean(pattern) then
    error(("orrery.http.router: bad pattern %q (empty, '.' or '..' segment)"):format(pattern), 2)
  end
  if type(handler) == "table" and type(opts) == "function" then handler, opts = opts, handler end
  if type(handler) ~= "function" then error("orrery.http.router: bad handler (function expected)", 2) end
  opts = opts or {}
  local h = handler
  if opts.middleware then h = compose(opts.middleware, h) end
  local limit = opts.max_body_size
  if limit ~= nil then
    if type(limit) ~= "number" or limit < 0 or limit ~= limit then
      error("orrery.http.router: bad max_body_size (non-negative number of bytes expected)", 2)
    end
    local inner = h
    h = function(req)
      req:set_body_limit(limit)
      return inner(req)
    end
    if limit > self.max_route_body then self.max_route_body = limit end
  end
  if opts.timeout then
    local secs, inner = opts.timeout, h
    h = function(req)
      -- The request runs it (orrery.http.server's call_with_timeout): the
      -- router only composes handlers and knows no server.
      local ok, s, b, hd = req:_with_timeout(secs, inner)
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

-- The entry for segs[i..] below node n, filling params; slash says that
-- the path ends with "/" (and is not "/"); path and pos (segment starts)
-- give wildcards the raw rest of the path.
local function match(n, segs, i, params, slash, path, pos)
  if i > #segs then
    local e
    if slash then e = n.entry_slash else e = n.entry end
    if e then return e end
    if n.wild and slash then
      params[n.wild.name] = ""
      return n.wild.entry
    end
    return nil
  end
  local seg = segs[i]
  local s = n.static[seg]
  if s then
    local e = match(s, segs, i + 1, params, slash, path, pos)
    if e then return e end
  end
  if n.param then
    local e = match(n.param.node, segs, i + 1, params, slash, path, pos)
    if e then
      params[n.param.name] = unescape(seg)
      return e
    end
  end
  if n.wild then
    params[n.wild.name] = unescape(path:sub(pos[i]))
    return n.wild.entry
  end
  return nil
end

-- The entry for path in the tree, and its params.
local function lookup(tree, path)
  local segs, pos = split(path)
  local params = {}
  local slash = #path > 1 and path:byte(-1) == 47 -- "/"
  local e = match(tree, segs, 1, params, slash, path, pos)
  return e, params
end


-- 301 for GET and HEAD, 308 (method and body kept) for the others.
local function redirect(req, to)
  if req.raw_query ~= "" then to = to .. "?" .. req.raw_query end
  if req.method == "GET" or req.method == "HEAD" then
    return 301, "Moved Permanently\n", { Location = to }
  end
  return 308, "Permanent Redirect\n", { Location = to }
end

local function dispatcher(self)
  local exact, tree = self.exact, self.tree
  local not_found = self.on_not_found or default_not_found
  local clean_path, redirect_slash = self.clean_path, self.redirect_slash
  local function known(path)
    return exact[path] or lookup(tree, path)
  end
  return function(req)
    local path = req.path
    local e = exact[path]
    if not e then
      local params
      if clean_path then
        local c = clean(path)
        if c then return redirect(req, c) end
      end
      e, params = lookup(tree, path)
      if not e then
        if redirect_slash and path ~= "/" then
          local other = path:byte(-1) == 47 and path:sub(1, -2) or path .. "/"
          if known(other) then return redirect(req, other) end
        end
        return not_found(req)
      end
      req.params = params
    end
    -- The pattern that matched: a label of bounded cardinality for the
    -- server's metrics and spans (a raw path is not).
    req.route = e.pattern
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
