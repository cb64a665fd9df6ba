-- SPDX-License-Identifier: MIT
-- orrery.repl -- `orrery repl`: read-eval-print inside the runtime.
--
-- Each input runs in the REPL's own coroutine, so ch:recv() or
-- orrery.sleep(1) work at the prompt while coroutines spawned earlier keep
-- running; reading a line parks the coroutine instead of blocking the
-- loop. An expression prints its values; incomplete input (an unfinished
-- block or string) continues on the next line.
local core = require "orrery.core"
local orrery = require "orrery"

local sched = require "orrery.sched"

-- core.readline parks the REPL's coroutine until a line is there.
local function readline(prompt)
  return (sched.await(function(p) return core.readline(p) end, prompt))
end

local function show(v)
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
local function compile(src)
  local f, err1 = loadstring("return " .. src, "=stdin")
  if f then return f end
  local stmt = src:gsub("^%s*local%s+function%s", "function "):gsub("^%s*local%s+", "")
  local g, err2 = loadstring(stmt, "=stdin")
  if g then return g end
  return nil, err2, incomplete(err2) or incomplete(err1)
end

return function()
  local tty = os.getenv("TERM") and io.stdin and os.execute("test -t 0") == 0
  if tty then
    print(("orrery %s -- Lua with channels; orrery is preloaded. Ctrl-D exits."):format(orrery.version))
  end
  local buf
  while true do
    local line = readline(buf and ">> " or "> ")
    if not line then break end
    buf = buf and (buf .. "\n" .. line) or line
    local f, err, more = compile(buf)
    if not f and more then
      -- keep reading
    else
      buf = nil
      if not f then
        print(err)
      else
        local r = { xpcall(f, debug.traceback) }
        if not r[1] then
          print(r[2])
        elseif table.maxn(r) > 1 then
          local out = {}
          for i = 2, table.maxn(r) do out[#out + 1] = show(r[i]) end
          print(table.concat(out, "\t"))
        end
        io.stdout:flush()
      end
    end
  end
end
