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
