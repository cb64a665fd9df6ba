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

return M
