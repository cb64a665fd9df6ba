-- SPDX-License-Identifier: MIT
-- orrery.eval -- what `orrery repl` and the console share: compiling a
-- line of input (an expression or a statement, possibly incomplete),
-- showing values, and tracebacks without the runtime's own frames.
local M = {}

function M.show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" and getmetatable(v) == nil then
    local ok, json = pcall(require, "orrery.test")
    if ok then return json.show(v) end
  end
  return tostring(v)
end

-- As lua.c does: input is incomplete when the parser stopped at its end.
local function incomplete(err)
  return err ~= nil and err:sub(-7) == "'<eof>'"
end

-- Returns the compiled chunk, or nil and an error, and whether the input
-- is merely incomplete. A leading `local` is dropped so that names
-- defined at the prompt outlive their line, as users expect.
function M.compile(src, chunkname)
  src = src:gsub("^%s*=", "", 1) -- `=expr`, as in the Lua REPL
  -- An expression's values are passed through a call rather than
  -- returned directly: `return f()` would be a tail call, and an error
  -- raised in f would lose its position (`stdin:1: boom`).
  local f, err1 = loadstring("local function v(...) return ... end return v(" .. src .. "\n)", chunkname or "=stdin")
  if f then return f end
  local stmt = src:gsub("^%s*local%s+function%s", "function "):gsub("^%s*local%s+", "")
  local g, err2 = loadstring(stmt, chunkname or "=stdin")
  if g then return g end
  return nil, err2, incomplete(err2) or incomplete(err1)
end

-- An error's traceback without the REPL's own frames (and those of the
-- runtime's modules): only what the typed code called.
function M.traceback(err)
  local tb = debug.traceback(tostring(err), 2)
  local out = {}
  for line in tb:gmatch("[^\n]+") do
    if not line:find("[orrery]", 1, true) and not line:find("%[C%]: in function 'xpcall'")
        and not line:find("%(tail call%)") and not line:find("^%s*%[C%]: %?$")
        and not line:find("%[builtin#%d+%]") then
      out[#out + 1] = line
    end
  end
  if out[#out] == "stack traceback:" then out[#out] = nil end
  return table.concat(out, "\n")
end

-- -- Completion --

local KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for", "function",
  "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until",
  "while" }

-- The string keys of v, its own and those its metatables' __index tables
-- lend it, without calling a metamethod (completion must not run code):
-- fn(key, value) for each.
local function each_field(v, fn, depth)
  depth = depth or 0
  if depth > 8 then return end
  if type(v) == "table" then
    for k, x in next, v do
      if type(k) == "string" then fn(k, x) end
    end
  end
  local mt = debug.getmetatable(v)
  local idx = type(mt) == "table" and rawget(mt, "__index")
  if type(idx) == "table" then each_field(idx, fn, depth + 1) end
end

-- The field name of v, found as each_field does.
local function field(v, name)
  for _ = 1, 8 do
    if type(v) == "table" then
      local x = rawget(v, name)
      if x ~= nil then return x end
    end
    local mt = debug.getmetatable(v)
    v = type(mt) == "table" and rawget(mt, "__index")
    if type(v) ~= "table" then return nil end
  end
end

--- complete(line [, env]) -> sorted list of candidates: what Tab offers
-- for the end of line. A name completes from env's globals (default _G,
-- and what env's __index table lends it) and the keywords; a.b.c from the
-- fields of a.b; a:m from the functions of a (a string's methods too).
-- Each candidate replaces the whole trailing a.b.c.
function M.complete(line, env)
  env = env or _G
  local tok = line:match("[%w_.:]*$")
  if tok:find("^%d") then return {} end
  local path, sep, part = tok:match("^(.-)([.:]?)([%w_]*)$")
  local found, out = {}, {}
  local function offer(k, x)
    if k:find("^[%a_][%w_]*$") and k:sub(1, #part) == part and not found[k]
        and (sep ~= ":" or type(x) == "function") then
      found[k] = true
      out[#out + 1] = path .. sep .. k
    end
  end
  if sep == "" then
    if path ~= "" then return {} end
    each_field(env, offer)
    for _, k in ipairs(KEYWORDS) do offer(k, true) end
  else
    if path == "" or path:find(":", 1, true) then return {} end
    local v = env
    for name in (path .. "."):gmatch("([^.]*)%.") do
      if not name:find("^[%a_][%w_]*$") then return {} end
      v = field(v, name)
      if v == nil then return {} end
    end
    each_field(v, offer)
  end
  table.sort(out)
  return out
end

--- readline(prompt [, complete]) -> line | nil at the end of input |
-- "", true when Ctrl-C dropped the line (M.drop_line): reads a line with
-- core.readline, parking the calling coroutine; Tab asks complete(text
-- before the cursor) for the candidates (default: the globals, as
-- complete does).
function M.readline(prompt, complete)
  local core = require "orrery.core"
  local sched = require "orrery.sched"
  complete = complete or M.complete
  local answer
  while true do
    local line, req = sched.await(function(p, _, a) return core.readline(p, a) end, prompt, nil, nil,
      answer)
    if line == true then return "", true end
    if line ~= false then return line end
    local ok, list = pcall(complete, req)
    answer = ok and type(list) == "table" and list or {}
  end
end

--- drop_line() -> true when a line was being edited at the terminal: it
-- is dropped, and the readline that reads it returns "", true.
function M.drop_line()
  return require("orrery.core").readline(false)
end

return M
