-- SPDX-License-Identifier: MIT
-- orrery.json -- JSON text to Lua values and back: strict RFC 8259
-- decoding, the null sentinel and the array/object markers (docs/json.md).
local core = require "orrery.json.core"
local buffer = require "string.buffer"
local C = require "orrery.ffi"

local array_mt, object_mt = core.array_mt, core.object_mt
local c_encode, null, NUMBER_BUF = core.encode, core.null, core.number_buf
local type, next, pairs, getmetatable = type, next, pairs, getmetatable
local json_str_len, json_escape = C.orrery_ffi_json_str_len, C.orrery_ffi_json_escape
local json_number = C.orrery_ffi_json_number

-- -- The encoder's fast path --
-- Strings, numbers, booleans, null, and tables that are plain or carry
-- the shared markers, nested at most FAST_DEPTH deep, are encoded here,
-- in Lua that the JIT compiles into the caller's trace: a call into the
-- C encoder would end the trace. Anything else, including every value
-- that raises, makes the fast path give up (return false) and the C
-- encoder starts over: it alone holds the options, __jsontype and the
-- error messages. Both produce the same bytes, key order included (both
-- walk tables with next); json_test checks that on generated values.
--
-- Measured against the C encoder (release build, one process per case):
-- a 3-key object 72 vs 306 ns, arrays of 10 to 300 small objects 30-40 %
-- faster, an array of one object about the same. A single loop over an
-- explicit stack instead of these small recursive functions was tried and
-- was slower than C throughout: its per-value dispatch leaves a side exit
-- on every turn, and its loop-carried state must live in tables to keep
-- the loop type-stable.
local FAST_DEPTH = 16
local SPARSE_RATIO, SPARSE_SLACK = core.sparse_ratio, core.sparse_slack
local out = buffer.new(512)
local fast_value

local function fast_string(b, s)
  local n = #s
  local m = json_str_len(s, n)
  if m == n + 2 then -- nothing to escape
    b:put('"', s, '"')
  elseif m == 0 then -- not UTF-8: C names the path in its error
    return false
  else
    local p = b:reserve(m)
    b:commit(json_escape(p, s, n))
  end
  return true
end

-- Object keys repeat (every object of a list has the same ones): their
-- quoted form with the colon is kept, for keys of at most KEY_MAX bytes,
-- in a cache that starts over when it holds KEY_CACHE_MAX of them.
local KEY_MAX, KEY_CACHE_MAX = 64, 2048
local keys, nkeys = {}, 0

local function put_key(b, k)
  local q = keys[k]
  if q == nil then
    local n = #k
    local m = json_str_len(k, n)
    if m == 0 then return false end -- not UTF-8
    if m ~= n + 2 then -- needs escapes: not cached
      fast_string(b, k)
      b:put(":")
      return true
    end
    q = '"' .. k .. '":'
    if n <= KEY_MAX then
      if nkeys >= KEY_CACHE_MAX then keys, nkeys = {}, 0 end
      keys[k] = q
      nkeys = nkeys + 1
    end
  end
  b:put(q)
  return true
end

-- A plain table whose first key is a number, as an array in one pass: its
-- keys must come as 1, 2, 3... (how tables built in order iterate); any
-- other key or order leaves the table to the C encoder.
local function fast_plain_array(b, t, depth)
  local c = 0
  for k, v in pairs(t) do
    c = c + 1
    if k ~= c then return false end
    if c == 1 then b:put("[") else b:put(",") end
    if not fast_value(b, v, depth + 1) then return false end
  end
  b:put("]")
  return true
end

local function fast_array(b, t, n, depth)
  b:put("[")
  for i = 1, n do
    if i > 1 then b:put(",") end
    local v = t[i]
    if v == nil then
      b:put("null") -- a hole in a marked array
    elseif not fast_value(b, v, depth + 1) then
      return false
    end
  end
  b:put("]")
  return true
end

local function fast_object(b, t, depth)
  local sep = "{"
  for k, v in pairs(t) do
    if type(k) ~= "string" then return false end
    b:put(sep)
    sep = ","
    if not put_key(b, k) then return false end
    if not fast_value(b, v, depth + 1) then return false end
  end
  if sep == "{" then b:put("{}") else b:put("}") end
  return true
end

local function fast_table(b, t, depth)
  if depth >= FAST_DEPTH then return false end
  local mt = getmetatable(t)
  if mt == nil then
    local k1 = next(t)
    if k1 == nil then
      b:put("{}")
      return true
    end
    if type(k1) ~= "number" then return fast_object(b, t, depth) end
    return fast_plain_array(b, t, depth)
  elseif mt == array_mt then
    -- Holes become null, within the C encoder's sparseness limit.
    local max, c = 0, 0
    for k in pairs(t) do
      if type(k) ~= "number" or k < 1 or k % 1 ~= 0 or k > 2 ^ 53 then return false end
      if k > max then max = k end
      c = c + 1
    end
    if max > c * SPARSE_RATIO + SPARSE_SLACK then return false end
    return fast_array(b, t, max, depth)
  elseif mt == object_mt then
    return fast_object(b, t, depth)
  end
  return false
end

function fast_value(b, v, depth)
  local tv = type(v)
  if tv == "string" then return fast_string(b, v) end
  if tv == "number" then
    local p = b:reserve(NUMBER_BUF)
    local n = json_number(p, v)
    if n == 0 then return false end -- NaN or an infinity
    b:commit(n)
    return true
  end
  if tv == "table" then return fast_table(b, v, depth) end
  if tv == "boolean" then
    b:put(v and "true" or "false")
    return true
  end
  if v == null then
    b:put("null")
    return true
  end
  return false
end

-- The fast path's text, or nil when the C encoder has to decide.
local function fast_encode(v)
  local b = out:reset()
  if not fast_value(b, v, 0) then return nil end
  local s = b:tostring()
  if #s > 65536 then b:free() end -- do not keep a big buffer alive
  return s
end

-- A vararg function, so that the C encoder still tells encode() from
-- encode(nil). The tail call keeps the caller's line in C's errors.
local function encode(...)
  local v, opts = ...
  if opts == nil and v ~= nil then
    local s = fast_encode(v)
    -- Not a tail call: after a tail call to a builtin the JIT cannot
    -- return to a lower frame.
    if s then return s end
  end
  return c_encode(...)
end

local function try_encode(v, opts)
  if opts == nil then
    local s = fast_encode(v)
    if s then return s end
  end
  local ok, s = pcall(c_encode, v, opts)
  if ok then return s end
  return nil, s
end

local M = {
  -- decode(text [, opts]) -> value | nil, err, pos
  --   opts.max_depth: deepest nesting accepted (default 1000, at most 2000)
  -- err reads "<what> at position <pos>", pos being the 1-based byte
  -- offset of the problem (#text + 1 when the text ends too early).
  decode = core.decode,
  -- encode(value [, opts]) -> text; raises on values JSON cannot hold
  --   opts.max_depth, opts.pretty, opts.indent, opts.sort_keys
  encode = encode,
  -- try_encode(value [, opts]) -> text | nil, err: encode that returns
  --   the error instead of raising it.
  try_encode = try_encode,
  -- null: what JSON null decodes to, and encodes as null.
  null = core.null,
  max_depth = core.max_depth,
  depth_limit = core.depth_limit,
}

-- put_text(b, s): s as a JSON string into the string buffer b, for the
-- modules that write JSON of their own (orrery.log, orrery.trace). Text
-- that is not UTF-8 is not refused: each byte from 0x80 up is written as
-- the code point of the same number (as if it were Latin-1), so the
-- output stays valid JSON and nothing is dropped.
local function put_latin1(b, s)
  b:put('"')
  for i = 1, #s do
    local c = s:byte(i)
    if c < 0x20 or c == 0x22 or c == 0x5c or c >= 0x7f then
      if c == 0x22 then b:put('\\"')
      elseif c == 0x5c then b:put("\\\\")
      elseif c == 0x0a then b:put("\\n")
      else b:putf("\\u%04x", c) end
    else
      b:put(string.char(c))
    end
  end
  b:put('"')
end

function M.put_text(b, s)
  local n = #s
  local m = json_str_len(s, n)
  if m == n + 2 then
    b:put('"', s, '"')
  elseif m == 0 then
    put_latin1(b, s)
  else
    local p = b:reserve(m)
    b:commit(json_escape(p, s, n))
  end
end

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
