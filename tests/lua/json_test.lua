-- SPDX-License-Identifier: MIT
-- json_test.lua -- orrery.json: strict decoding with positions, NUL,
-- depth limits, numbers, null, markers, encode errors and big documents.
local T = require "orrery.test"
local json = require "orrery.json"
local ffi = require "ffi"

local function rejects(text, err, pos, opts)
  local v, e, p = json.decode(text, opts)
  T.eq(v, nil, ("decode(%q) should fail"):format(text))
  T.eq(e, err .. " at position " .. pos, ("decode(%q)"):format(text))
  T.eq(p, pos, ("position of decode(%q)"):format(text))
end

local function nested(n, open, close)
  return open:rep(n) .. close:rep(n)
end

-- Bitwise equality of doubles, so that -0 and 0 differ.
local function same(a, b)
  local x, y = ffi.new("double[1]", a), ffi.new("double[1]", b)
  return ffi.string(x, 8) == ffi.string(y, 8)
end

-- A tiny deterministic generator (Park-Miller), so runs are repeatable.
local function rng(seed)
  local s = seed
  return function(n)
    s = (s * 16807) % 2147483647
    return s % n
  end
end

T.test("decode scalars, containers and whitespace", function()
  T.eq(json.decode("1"), 1)
  T.eq(json.decode(" \t\r\n-2.5e3 \n"), -2500)
  T.eq(json.decode('"x"'), "x")
  T.eq(json.decode("true"), true)
  T.eq(json.decode("false"), false)
  T.eq(json.decode('[1, "a", [true], {"b": [] }]'), { 1, "a", { true }, { b = {} } })
  T.eq(json.decode('{"a":{"b":{"c":[1,2,{"d":null}]}}}').a.b.c[3].d, json.null)
  T.eq(json.decode("0e10"), 0)
  T.eq(json.decode("1E+2"), 100)
  T.eq(json.decode("1e-2"), 0.01)
  T.eq(json.decode("1e-400"), 0) -- underflow rounds, as strtod does
  -- tables are presized from their neighbours; shapes that change still
  -- decode exactly
  T.eq(json.decode('[{"a":1,"b":2,"c":3},{"x":1},{},[1,2,3],[],{"k":[1,{"z":1}]},[[1,2],[3]]]'),
    { { a = 1, b = 2, c = 3 }, { x = 1 }, {}, { 1, 2, 3 }, {}, { k = { 1, { z = 1 } } }, { { 1, 2 }, { 3 } } })
end)

T.test("decode string escapes and UTF-8", function()
  T.eq(json.decode([["\"\\\/\b\f\n\r\t"]]), "\"\\/\b\f\n\r\t")
  T.eq(json.decode([["\u00e9\u20AC"]]), "\195\169\226\130\172")
  T.eq(json.decode([["\ud83d\ude00"]]), "\240\159\152\128")
  T.eq(json.decode('"\240\159\152\128 \195\169"'), "\240\159\152\128 \195\169")
  T.eq(json.decode('"\127"'), "\127")
  T.eq(json.decode('"plain ascii that is longer than eight bytes"'),
    "plain ascii that is longer than eight bytes")
end)

T.test("\\u0000 is preserved in strings and keys", function()
  local s = json.decode([["a\u0000b"]])
  T.eq(#s, 3)
  T.eq(s, "a\0b")
  local o = json.decode([[{"k\u0000ey": "v\u0000", "k": 1}]])
  T.eq(o["k\0ey"], "v\0")
  T.eq(o.k, 1)
  T.eq(json.encode("a\0b"), [["a\u0000b"]])
  T.eq(json.decode(json.encode({ ["\0"] = "\0\0" }))["\0"], "\0\0")
end)

T.test("duplicate keys: the last one wins, lookup is case-sensitive", function()
  local o = json.decode('{"a": 1, "A": 2, "a": 3}')
  T.eq(o.a, 3)
  T.eq(o.A, 2)
  T.eq(json.decode('{"a": {"x": 1}, "a": []}').a, {})
end)

T.test("decode rejects bad numbers with their position", function()
  rejects("01", "invalid number", 2)
  rejects("[-01]", "invalid number", 4)
  rejects("00", "invalid number", 2)
  rejects("1.", "invalid number", 3)
  rejects("[1.]", "invalid number", 4)
  rejects("1.e5", "invalid number", 3)
  rejects("1e", "invalid number", 3)
  rejects("1e+", "invalid number", 4)
  rejects("-", "invalid number", 2)
  rejects("-x", "invalid number", 2)
  rejects("-Infinity", "invalid number", 2)
  rejects(".5", "expected a value", 1)
  rejects("+1", "expected a value", 1)
  rejects("NaN", "expected a value", 1)
  rejects("Infinity", "expected a value", 1)
  rejects("0x10", "trailing data", 2)
  rejects("1e400", "number out of range", 1)
  rejects("[0, -1e400]", "number out of range", 5)
end)

T.test("decode rejects bad strings with their position", function()
  rejects('"a\tb"', "control character in string", 3)
  rejects('"\n"', "control character in string", 2)
  rejects('"a\0"', "control character in string", 3)
  rejects([["\x"]], "invalid escape", 2)
  rejects([["ab\U0041"]], "invalid escape", 4)
  rejects([["\u00G0"]], "invalid escape", 2)
  rejects([["\ud800"]], "lone surrogate", 2)
  rejects([["\udc00"]], "lone surrogate", 2)
  rejects([["\ud800\u0041"]], "lone surrogate", 2)
  rejects([["x\ud800x"]], "lone surrogate", 3)
  rejects([["\ud800\ud800"]], "lone surrogate", 2)
  rejects('"\255"', "invalid UTF-8", 2)
  rejects('"\128"', "invalid UTF-8", 2)
  rejects('"ab\192\175"', "invalid UTF-8", 4)       -- overlong '/'
  rejects('"\224\128\175"', "invalid UTF-8", 2)     -- overlong 3-byte
  rejects('"\237\160\128"', "invalid UTF-8", 2)     -- UTF-8 encoded surrogate
  rejects('"\244\144\128\128"', "invalid UTF-8", 2) -- above U+10FFFF
  rejects('"\226\130"', "invalid UTF-8", 2)         -- truncated sequence
  rejects('"12345678\255"', "invalid UTF-8", 10)    -- after the fast path
  rejects('"abc', "unexpected end of input", 5)
  rejects([["\u12]], "unexpected end of input", 6)
  rejects('"\\', "unexpected end of input", 3)
end)

T.test("decode rejects bad structure and trailing data", function()
  rejects("", "unexpected end of input", 1)
  rejects(" \n ", "unexpected end of input", 4)
  rejects("[", "unexpected end of input", 2)
  rejects('{"a":1', "unexpected end of input", 7)
  rejects("tru", "unexpected end of input", 4)
  rejects("True", "expected a value", 1)
  rejects("nulL", "invalid literal", 1)
  rejects("1 2", "trailing data", 3)
  rejects("[] []", "trailing data", 4)
  rejects("nullx", "trailing data", 5)
  rejects("[1]\0", "trailing data", 4)
  rejects("\0", "expected a value", 1)
  rejects("\239\187\191{}", "expected a value", 1) -- no byte order mark
  rejects("[1,]", "expected a value", 4)
  rejects("[,1]", "expected a value", 2)
  rejects("[1 2]", "expected ',' or ']'", 4)
  rejects('{"a":1,}', "expected a string key", 8)
  rejects("{,}", "expected a string key", 2)
  rejects("{'a':1}", "expected a string key", 2)
  rejects("{a:1}", "expected a string key", 2)
  rejects('{"a"}', "expected ':'", 5)
  rejects('{"a":}', "expected a value", 6)
  rejects('{"a":1 "b":2}', "expected ',' or '}'", 8)
  rejects("[1}", "expected ',' or ']'", 3)
end)

T.test("decode depth limit, default and max_depth", function()
  T.eq(json.max_depth, 1000)
  local ok = json.decode(nested(1000, "[", "]"))
  T.ok(ok)
  rejects(nested(1001, "[", "]"), "too deep", 1001)
  rejects(('{"a":'):rep(1001) .. "1" .. ("}"):rep(1001), "too deep", 5 * 1000 + 1)
  T.ok(json.decode("[[1]]", { max_depth = 2 }))
  rejects("[[[1]]]", "too deep", 3, { max_depth = 2 })
  rejects('{"a":[{}]}', "too deep", 7, { max_depth = 2 })
  T.eq(json.decode("1", { max_depth = 1 }), 1)
  T.ok(json.decode(nested(2000, "[", "]"), { max_depth = 2000 }))
  rejects(nested(2001, "[", "]"), "too deep", 2001, { max_depth = 2000 })
end)

T.test("encode depth limit, default and max_depth", function()
  local function deep(n)
    local t = {}
    local cur = t
    for _ = 2, n do cur[1] = {}; cur = cur[1] end
    return t
  end
  T.eq(#json.encode(deep(1000)), 2000)
  local err = T.raises(function() json.encode(deep(1001)) end,
    "orrery.json.encode: nesting deeper than max_depth (1000) at $[1][1]")
  T.ok(#err < 600, "a deep path is shortened")
  T.match(err, "%.%.%.")
  T.eq(json.encode({ { 1 } }, { max_depth = 2 }), "[[1]]")
  T.raises(function() json.encode({ { {} } }, { max_depth = 2 }) end,
    "nesting deeper than max_depth (2) at $[1][1]")
  T.raises(function() json.encode({ a = { b = {} } }, { max_depth = 2 }) end, "at $.a.b")
  T.eq(#json.encode(deep(2000), { max_depth = 2000 }), 4000)
  T.raises(function() json.encode(deep(2001), { max_depth = 2000 }) end, "nesting deeper")
end)

T.test("integers up to 2^53 round-trip exactly and print as integers", function()
  for _, x in ipairs { 0, 1, -1, 42, 1e15, 2 ^ 31, 2 ^ 32 + 1, 2 ^ 53 - 1, 2 ^ 53, -2 ^ 53 } do
    local s = json.encode(x)
    T.ok(not s:find("[.eE]"), s)
    T.eq(json.decode(s), x)
  end
  T.eq(json.encode(2 ^ 53), "9007199254740992")
  T.eq(json.encode(-(2 ^ 53)), "-9007199254740992")
  T.eq(json.encode(1e15), "1000000000000000")
  T.eq(json.decode("9007199254740993"), 2 ^ 53) -- rounds like strtod
  T.eq(json.decode("12345678901234567890"), 12345678901234567890)
end)

T.test("tricky doubles round-trip bit for bit", function()
  local xs = { 0.1, 0.2, 0.3, 1 / 3, 2 / 3, 1e308, 5e-324, 2.2250738585072014e-308,
    2.225073858507201e-308, 1.7976931348623157e308, -0.0, 123.456, 1e21, 1e22, 1e23,
    2 ^ 53 + 2, 2 ^ 63, 2 ^ -1074 * 3, 0.1 + 0.2, 100 * 1.1, 4.35, 9.95, -1.5e-300,
    3.141592653589793, 2.718281828459045, 1e-7, 123456789012345.6 }
  for _, x in ipairs(xs) do
    local s = json.encode(x)
    T.ok(same(json.decode(s), x), ("%s via %s"):format(tostring(x), s))
  end
  T.eq(json.encode(0.1), "0.1")
  T.eq(json.encode(5e-324), "5e-324")
  T.eq(json.encode(1e308), "1e+308")
  T.eq(json.encode(-0.0), "-0")
  T.eq(1 / json.decode("-0"), -math.huge)
  T.eq(1 / json.decode("-0.0"), -math.huge)
  T.eq(json.encode(0.1 + 0.2), "0.30000000000000004")
end)

T.test("decoded numbers equal LuaJIT's own conversion", function()
  -- Covers the exact fast paths (short mantissas, small exponents) and
  -- the strtod fallback against an independent correctly rounded parser.
  local r = rng(12345)
  for _ = 1, 3000 do
    local parts = { r(2) == 0 and "-" or "" }
    local nint = 1 + r(20)
    parts[#parts + 1] = tostring(1 + r(9))
    for _ = 2, nint do parts[#parts + 1] = tostring(r(10)) end
    if r(2) == 0 then
      parts[#parts + 1] = "."
      for _ = 1, 1 + r(20) do parts[#parts + 1] = tostring(r(10)) end
    end
    if r(3) == 0 then parts[#parts + 1] = "e" .. (r(2) == 0 and "-" or "") .. r(40) end
    local s = table.concat(parts)
    T.ok(same(json.decode(s), tonumber(s)), s)
  end
end)

T.test("json.null decodes from null and encodes as null", function()
  T.eq(json.decode("null"), json.null)
  T.eq(type(json.null), "userdata")
  T.eq(json.decode("[null, 1]"), { json.null, 1 })
  T.eq(json.decode('{"a": null}').a, json.null)
  T.eq(json.encode(json.null), "null")
  T.eq(json.encode({ json.null, json.null }), "[null,null]")
  T.eq(json.encode({ a = json.null }), '{"a":null}')
  T.eq(json.encode(nil), "null")
end)

T.test("empty tables: plain is {}, markers choose", function()
  T.eq(json.encode({}), "{}")
  T.eq(json.encode(json.array()), "[]")
  T.eq(json.encode(json.array({})), "[]")
  T.eq(json.encode(json.object()), "{}")
  T.eq(json.encode({ list = json.array(), map = json.object() }, { sort_keys = true }),
    '{"list":[],"map":{}}')
  -- decoded arrays carry the marker, so [] survives a round trip
  local v = json.decode('{"a": [], "b": {}}')
  T.ok(json.is_array(v.a))
  T.ok(not json.is_array(v.b))
  T.eq(json.encode(v, { sort_keys = true }), '{"a":[],"b":{}}')
  T.eq(json.encode(json.decode("[]")), "[]")
end)

T.test("markers: json.array and json.object", function()
  local t = {}
  T.ok(json.array(t) == t, "returns its argument")
  T.ok(json.is_array(t))
  T.ok(json.object(t) == t and json.is_object(t), "a marker can be switched")
  T.eq(json.encode(json.array { 1, nil, 3 }), "[1,null,3]")
  T.eq(json.encode(json.array { [2] = "b" }), '[null,"b"]')
  T.eq(json.encode(json.object { "a", "b" }, { sort_keys = true }), '{"1":"a","2":"b"}')
  T.eq(json.encode(json.object { [1.5] = true }), '{"1.5":true}')
  T.raises(function() json.encode(json.object { [1] = "a", ["1"] = "b" }) end,
    'duplicate key "1"')
  T.raises(function() json.encode(json.array { [100] = 1 }) end,
    "array too sparse (index 100, 1 values) at $")
  T.raises(function() json.encode({ x = json.array { 1, n = 1 } }) end,
    "cannot encode string key in an array at $.x")
  T.raises(function() json.encode(json.array { [0] = 1 }) end, "array key 0 is not an array index")
  T.raises(function() json.array(5) end, "bad argument #1 to 'orrery.json.array' (table expected, got number)")
  T.raises(function() json.object(setmetatable({}, {})) end,
    "bad argument #1 to 'orrery.json.object' (table already has a metatable")
  -- a class marks itself with __jsontype
  local Vec = { __jsontype = "array", __index = {} }
  T.eq(json.encode(setmetatable({ 1, 2 }, Vec)), "[1,2]")
  T.eq(json.encode(setmetatable({}, Vec)), "[]")
  T.eq(json.encode(setmetatable({}, { __jsontype = "object" })), "{}")
  -- other metatables are ignored: tables encode by their raw contents
  T.eq(json.encode(setmetatable({ 1 }, { __index = function() return 9 end })), "[1]")
end)

T.test("plain tables: 1..n is an array, string keys an object, else raise", function()
  T.eq(json.encode({ 1, 2, 3 }), "[1,2,3]")
  T.eq(json.encode({ [1] = "a", [2] = "b" }), '["a","b"]')
  T.eq(json.encode({ a = 1 }), '{"a":1}')
  T.raises(function() json.encode({ [1] = 1, [3] = 3 }) end,
    "sparse array (use json.array or json.object) at $")
  T.raises(function() json.encode({ 1, 2, a = 3 }) end, "both string and number keys")
  T.raises(function() json.encode({ a = 3, 1, 2 }) end, "both string and number keys")
  T.raises(function() json.encode({ [0] = 1 }) end, "number key 0 is not an array index (use json.object)")
  T.raises(function() json.encode({ [1.5] = 1 }) end, "number key 1.5 is not an array index")
  T.raises(function() json.encode({ [true] = 1 }) end, "cannot encode boolean key at $")
  T.raises(function() json.encode({ a = { [{}] = 1 } }) end, "cannot encode table key at $.a")
end)

T.test("encode raises on values JSON cannot hold, naming the path", function()
  T.raises(function() json.encode(0 / 0) end, "orrery.json.encode: cannot encode NaN at $")
  T.raises(function() json.encode({ a = { 1, math.huge } }) end,
    "orrery.json.encode: cannot encode inf at $.a[2]")
  T.raises(function() json.encode({ { x = -math.huge } }) end, "cannot encode -inf at $[1].x")
  T.raises(function() json.encode({ f = print }) end, "cannot encode function at $.f")
  T.raises(function() json.encode({ ["a b"] = { io.stdout } }) end,
    'cannot encode userdata at $["a b"][1]')
  T.raises(function() json.encode({ co = coroutine.create(print) }) end, "cannot encode thread at $.co")
  T.raises(function() json.encode({ n = ffi.new("int", 1) }) end, "cannot encode cdata at $.n")
  T.raises(function() json.encode({ s = "ok\255" }) end, "invalid UTF-8 in string at byte 3 at $.s")
  T.raises(function() json.encode({ ["k\255"] = 1 }) end, "invalid UTF-8 in key at byte 2 at $")
  local t = { a = { b = {} } }
  t.a.b.c = t
  T.raises(function() json.encode(t) end, "cycle (a table contains itself) at $.a.b.c")
  local l = {}
  l[1] = l
  T.raises(function() json.encode(l) end, "cycle (a table contains itself) at $[1]")
  -- the same table twice is not a cycle
  local shared = { 1 }
  T.eq(json.encode({ shared, shared }), "[[1],[1]]")
  -- the error points at the caller's line
  local err = T.raises(function() json.encode(print) end)
  T.match(err, "^[^:]*json_test%.lua:%d+: orrery%.json%.encode: cannot encode function at %$$")
end)

T.test("wrong argument types raise naming the function", function()
  T.raises(function() json.decode(1) end,
    "bad argument #1 to 'orrery.json.decode' (string expected, got number)")
  T.raises(function() json.decode() end,
    "bad argument #1 to 'orrery.json.decode' (string expected, got no value)")
  T.raises(function() json.decode({}) end, "(string expected, got table)")
  T.raises(function() json.decode("1", 5) end,
    "bad argument #2 to 'orrery.json.decode' (table expected, got number)")
  T.raises(function() json.decode("1", { max_depth = 0 }) end,
    "bad argument #2 to 'orrery.json.decode' (max_depth must be an integer from 1 to 2000)")
  T.raises(function() json.decode("1", { max_depth = 2001 }) end, "max_depth must be")
  T.raises(function() json.decode("1", { max_depth = 1.5 }) end, "max_depth must be")
  T.raises(function() json.decode("1", { max_depth = "3" }) end, "max_depth must be")
  T.raises(function() json.decode("1", { pretty = true }) end,
    "bad argument #2 to 'orrery.json.decode' (unknown option 'pretty')")
  T.raises(function() json.encode() end, "bad argument #1 to 'orrery.json.encode' (value expected)")
  T.raises(function() json.encode(1, "x") end,
    "bad argument #2 to 'orrery.json.encode' (table expected, got string)")
  T.raises(function() json.encode(1, { sort_key = true }) end, "(unknown option 'sort_key')")
  T.raises(function() json.encode(1, { sort_keys = 1 }) end, "(sort_keys must be a boolean)")
  T.raises(function() json.encode(1, { pretty = "yes" }) end, "(pretty must be a boolean)")
  T.raises(function() json.encode(1, { indent = "--" }) end, "(indent must be a string of spaces and tabs)")
  T.raises(function() json.encode(1, { [1] = true }) end, "(option names must be strings)")
end)

T.test("string escaping on encode", function()
  T.eq(json.encode("\"\\/\b\f\n\r\t\1\31\127"), [["\"\\/\b\f\n\r\t\u0001\u001f]] .. "\127\"")
  T.eq(json.encode("\195\169\240\159\152\128"), '"\195\169\240\159\152\128"')
  local all = {}
  for i = 0, 127 do all[#all + 1] = string.char(i) end
  local s = table.concat(all)
  T.eq(json.decode(json.encode(s)), s)
  T.eq(json.decode(json.encode({ [s] = s }))[s], s)
end)

T.test("pretty printing and sorted keys", function()
  local v = { b = { 1, { c = true } }, a = json.array(), d = json.object() }
  T.eq(json.encode(v, { pretty = true, sort_keys = true }), table.concat({
    "{",
    '  "a": [],',
    '  "b": [',
    "    1,",
    "    {",
    '      "c": true',
    "    }",
    "  ],",
    '  "d": {}',
    "}" }, "\n"))
  T.eq(json.encode({ 1, 2 }, { indent = "\t" }), "[\n\t1,\n\t2\n]")
  T.eq(json.encode({ 1 }, { indent = "\t", pretty = false }), "[1]")
  T.eq(json.encode("x", { pretty = true }), '"x"')
  -- sorting is by bytes, and equal tables give equal text
  T.eq(json.encode({ b = 1, B = 2, a = 3, ["a\0"] = 4, [""] = 5 }, { sort_keys = true }),
    '{"":5,"B":2,"a":3,"a\\u0000":4,"b":1}')
  local x, y = {}, {}
  for i = 1, 200 do x["k" .. i] = i end
  for i = 200, 1, -1 do y["k" .. i] = i end
  T.eq(json.encode(x, { sort_keys = true }), json.encode(y, { sort_keys = true }))
  T.eq(json.decode(json.encode(x, { pretty = true })), x)
end)

T.test("big documents round-trip", function()
  local r = rng(99)
  local items = {}
  for i = 1, 20000 do
    items[i] = { id = i, name = "item-" .. i, price = r(100000) / 100,
      tags = { "a", "b\n", "\195\169" }, ok = i % 2 == 0, none = json.null }
  end
  local text = json.encode({ items = items, count = #items })
  T.ok(#text > 1000000)
  local back = json.decode(text)
  T.eq(back.count, 20000)
  T.eq(back.items, items)
  T.eq(json.encode(back, { sort_keys = true }), json.encode({ items = items, count = #items }, { sort_keys = true }))
  local big = ("x"):rep(2 ^ 20) .. "\n" .. ("\226\130\172"):rep(1000)
  T.eq(json.decode(json.encode(big)), big)
  T.eq(json.decode(json.encode({ big })), { big })
  local wide = {}
  for i = 1, 50000 do wide["key" .. i] = i end
  T.eq(json.decode(json.encode(wide)), wide)
  local long = {}
  for i = 1, 200000 do long[i] = i * 0.5 end
  T.eq(json.decode(json.encode(long)), long)
  -- a long error path in a big document still points at the value
  items[12345].price = 0 / 0
  T.raises(function() json.encode({ items = items }) end, "cannot encode NaN at $.items[12345].price")
end)

-- -- The Lua fast path of encode --

local core = require "orrery.json.core"

-- A random value for the encoder: nested tables of every shape the fast
-- path takes or gives up on (markers, holes, mixed keys, NaN, bad UTF-8,
-- __jsontype classes, functions), strings that need escapes.
local function gen_value(r, depth)
  local strings = { "", "ok", "a\"b", "back\\slash", "tab\tnl\n", "\0nul", "é ü 中",
    "\255bad", "\237\160\128", "long " .. ("x"):rep(100), "\127del", "ctl\1\31" }
  local k = r(depth > 3 and 9 or 14)
  if k == 0 then return r(2) == 0 end
  if k == 1 then return json.null end
  if k == 2 then
    local nums = { 0, -0, 1, -1, 123, 2 ^ 31, -2 ^ 31, 2 ^ 53, 2 ^ 53 + 2, 0.1, 1e300,
      5e-324, -1.5, 1 / 3, 0 / 0, 1 / 0, -1 / 0, 2147483647, -2147483647 }
    return nums[r(#nums) + 1]
  end
  if k <= 8 then return strings[r(#strings) + 1] end
  if k == 9 then return r(50) == 0 and print or r(1000) end
  local n = r(5)
  local t = {}
  if k == 10 or k == 11 then -- an array, maybe with a hole or marked
    for i = 1, n do t[i] = gen_value(r, depth + 1) end
    if r(4) == 0 then t[n + 2] = 1 end
    if r(3) == 0 then json.array(t) end
  elseif k == 12 or k == 13 then -- an object, maybe marked or mixed
    for _ = 1, n do t[strings[r(#strings) + 1] .. r(3)] = gen_value(r, depth + 1) end
    if r(6) == 0 then t[1] = true end
    if r(4) == 0 then json.object(t) end
    if r(20) == 0 then setmetatable(t, { __jsontype = "object" }) end
  end
  return t
end

T.test("the Lua fast path and the C encoder give the same bytes and errors", function()
  local r = rng(20261123)
  local fast_ok, fallback = 0, 0
  for _ = 1, 3000 do
    local v = gen_value(r, 0)
    local ok1, a = pcall(json.encode, v)
    local ok2, b = pcall(core.encode, v)
    -- Error messages carry the caller's position: compare what follows.
    if not ok1 then a = a:gsub("^.-orrery%.json%.encode", "orrery.json.encode") end
    if not ok2 then b = b:gsub("^.-orrery%.json%.encode", "orrery.json.encode") end
    T.eq({ ok1, a }, { ok2, b })
    if ok1 then fast_ok = fast_ok + 1 else fallback = fallback + 1 end
  end
  -- Both kinds of value were generated.
  T.ok(fast_ok > 500 and fallback > 200, ("%d encoded, %d raised"):format(fast_ok, fallback))
end)

T.test("encode keeps the caller's line in errors and tells encode() from encode(nil)", function()
  local ok, err = pcall(json.encode, { 0 / 0 })
  T.eq(ok, false)
  T.match(err, "orrery%.json%.encode: cannot encode NaN at %$%[1%]$")
  local line = debug.getinfo(1, "l").currentline + 1
  local ok2, err2 = pcall(function() local s = json.encode({ f = print }); return s end)
  T.eq(ok2, false)
  T.match(err2, "json_test%.lua:" .. line .. ": orrery%.json%.encode: cannot encode function at %$%.f$")
  T.eq(json.encode(nil), "null")
  T.raises(function() json.encode() end, "(value expected)")
end)

T.test("try_encode returns the error instead of raising", function()
  T.eq(json.try_encode({ a = { 1, 2 } }), '{"a":[1,2]}')
  T.eq(json.try_encode({ x = 1 }, { sort_keys = true }), '{"x":1}')
  local s, err = json.try_encode({ a = { 1, 0 / 0 } })
  T.eq(s, nil)
  T.match(err, "cannot encode NaN at %$%.a%[2%]")
  local s2, err2 = json.try_encode(json.array({ [1] = 1, [100] = 2 }))
  T.eq(s2, nil)
  T.match(err2, "array too sparse")
  local s3, err3 = json.try_encode(1, 5)
  T.eq(s3, nil)
  T.match(err3, "bad argument #2")
end)

T.test("a big document leaves no big buffer behind and encodes again", function()
  local big = {}
  for i = 1, 20000 do big[i] = "item " .. i end
  local s = json.encode(big)
  T.eq(#s, #table.concat(big, '","') + 4)
  T.eq(json.decode(s)[20000], "item 20000")
  T.eq(json.encode({ small = true }), '{"small":true}')
end)

T.test("encoding a typical object in a hot loop compiles without aborts in orrery.json", function()
  if not jit.status() then T.skip("the JIT is off") end
  local aborts = T.traced(function()
    local n = 0
    for i = 1, 3000 do
      local s = json.encode({ id = i, status = "ok", items = { 1, 2, 3 }, ok = true, none = json.null })
      n = n + #s
    end
    return n
  end, "orrery/json.lua")
  T.eq(aborts, {})
end)
