-- SPDX-License-Identifier: MIT
-- orrery.json -- JSON text to Lua values and back: strict RFC 8259
-- decoding, the null sentinel and the array/object markers (docs/json.md).
local core = require "orrery.json.core"

local array_mt, object_mt = core.array_mt, core.object_mt

local M = {
  -- decode(text [, opts]) -> value | nil, err, pos
  --   opts.max_depth: deepest nesting accepted (default 1000, at most 2000)
  -- err reads "<what> at position <pos>", pos being the 1-based byte
  -- offset of the problem (#text + 1 when the text ends too early).
  decode = core.decode,
  -- encode(value [, opts]) -> text; raises on values JSON cannot hold
  --   opts.max_depth, opts.pretty, opts.indent, opts.sort_keys
  encode = core.encode,
  -- null: what JSON null decodes to, and encodes as null.
  null = core.null,
  max_depth = core.max_depth,
  depth_limit = core.depth_limit,
}

local function mark(fname, t, mt, other)
  if t == nil then t = {} end
  if type(t) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(t)), 3)
  end
  local cur = getmetatable(t)
  if cur ~= nil and cur ~= mt and cur ~= other then
    -- Replacing a class's metatable would break the object; a class
    -- says how it encodes with __jsontype instead.
    error(("bad argument #1 to '%s' (table already has a metatable; set __jsontype in it)")
      :format(fname), 3)
  end
  return setmetatable(t, mt)
end

-- array([t]) -> t: marks t (or a new table) to encode as a JSON array,
-- even when empty; nil holes become null.
function M.array(t) return mark("orrery.json.array", t, array_mt, object_mt) end

-- object([t]) -> t: marks t (or a new table) to encode as a JSON object,
-- even when empty or keyed by numbers.
function M.object(t) return mark("orrery.json.object", t, object_mt, array_mt) end

-- is_array(t), is_object(t): whether t carries that marker (decoded
-- arrays carry the array marker).
function M.is_array(t) return type(t) == "table" and getmetatable(t) == array_mt end
function M.is_object(t) return type(t) == "table" and getmetatable(t) == object_mt end

return M
