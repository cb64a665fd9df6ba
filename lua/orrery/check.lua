-- SPDX-License-Identifier: MIT
-- orrery.check -- argument and option checks shared by the shipped modules,
-- and the weak registries that let metrics and the console list live
-- objects. Internal: not part of the documented surface.
local M = {}

function M.callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

-- How a bad value is shown in an error: numbers as themselves, anything
-- else by its type.
function M.show(v)
  if type(v) == "number" then return tostring(v) end
  return type(v)
end

-- Every check below raises with `level`, the error() level that names the
-- user's line when the check is called straight from a public function
-- (3 there), and words its message as the shipped modules do:
--   "<fname>: bad argument #1 (options table expected, got string)"
--   "<fname>: unknown option 'prot'"
--   "<fname>: bad option '<key>' (<what> expected, got <value>)"

-- opts(fname, opts, known, level [, argn]) -> opts (a new empty table for
-- nil); known is a set of option names, argn the argument's position
-- (default 1).
function M.opts(fname, opts, known, level, argn)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s: bad argument #%d (options table expected, got %s)"):format(fname, argn or 1, type(opts)),
      level)
  end
  for k in pairs(opts) do
    if not known[k] then error(("%s: unknown option '%s'"):format(fname, tostring(k)), level) end
  end
  return opts
end

-- bad_opt(fname, key, what, v, level): raises the bad option error.
function M.bad_opt(fname, key, what, v, level)
  error(("%s: bad option '%s' (%s expected, got %s)"):format(fname, key, what, M.show(v)), level)
end

-- number_opt(fname, opts, key, how, level) -> opts[key]: nil or a number
-- >= how.min (default 0; > it when how.strict), <= how.max when given,
-- an integer when how.int, infinite only when how.inf; how.what names
-- what was expected (default "non-negative number").
function M.number_opt(fname, opts, key, how, level)
  local v = opts[key]
  if v == nil then return nil end
  local lo = how.min or 0
  local ok = type(v) == "number" and v == v and v >= lo
  if ok and how.strict and v == lo then ok = false end
  if ok and how.max and v > how.max then ok = false end
  if ok and not how.inf and (v == math.huge or v == -math.huge) then ok = false end
  if ok and how.int and v ~= math.huge and v % 1 ~= 0 then ok = false end
  if not ok then M.bad_opt(fname, key, how.what or "non-negative number", v, level + 1) end
  return v
end

-- is_port(v): v is a port number, an integer from 0 to 65535.
M.PORT = "integer from 0 to 65535"
function M.is_port(v)
  return type(v) == "number" and v >= 0 and v <= 65535 and v % 1 == 0
end

-- port_opt(fname, opts, key, level) -> opts[key]: nil or a port number.
function M.port_opt(fname, opts, key, level)
  local v = opts[key]
  if v ~= nil and not M.is_port(v) then M.bad_opt(fname, key, M.PORT, v, level + 1) end
  return v
end

-- type_opt(fname, opts, key, tname, level) -> opts[key]: nil or a value
-- of Lua type tname ("string", "boolean", "table").
function M.type_opt(fname, opts, key, tname, level)
  local v = opts[key]
  if v ~= nil and type(v) ~= tname then
    error(("%s: bad option '%s' (%s expected, got %s)"):format(fname, key, tname, type(v)), level)
  end
  return v
end

-- func_opt(fname, opts, key, level) -> opts[key], which must be nil or
-- callable; level is the error() level that names the user's line when
-- this is called straight from a public function (3 there).
function M.func_opt(fname, opts, key, level)
  local v = opts[key]
  if v ~= nil and not M.callable(v) then
    error(("%s: bad option '%s' (function expected, got %s)"):format(fname, key, type(v)), level)
  end
  return v
end

-- self(v, mt, fname, what): raises unless v is an object of metatable mt,
-- the mistake of calling obj.method() for obj:method(). Called straight
-- from a method, the error names the user's line.
function M.self(v, mt, fname, what)
  if getmetatable(v) ~= mt or type(v) ~= "table" then
    error(("%s: bad self (%s expected, got %s; call it with ':')"):format(fname, what, type(v)), 3)
  end
end

-- registry() -> live, list: a weak set of live objects and a function
-- that returns them sorted by name.
function M.registry()
  local live = setmetatable({}, { __mode = "k" })
  return live, function()
    local out = {}
    for o in pairs(live) do out[#out + 1] = o end
    table.sort(out, function(a, b) return a.name < b.name end)
    return out
  end
end

return M
