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
  src = src:gsub("^%s*=", "", 1) -- `=expr`, as in the Lua REPL
  -- An expression's values are passed through a call rather than
  -- returned directly: `return f()` would be a tail call, and an error
  -- raised in f would lose its position (`stdin:1: boom`).
  local f, err1 = loadstring("local function v(...) return ... end return v(" .. src .. "\n)", "=stdin")
  if f then return f end
  local stmt = src:gsub("^%s*local%s+function%s", "function "):gsub("^%s*local%s+", "")
  local g, err2 = loadstring(stmt, "=stdin")
  if g then return g end
  return nil, err2, incomplete(err2) or incomplete(err1)
end

-- An error's traceback without the REPL's own frames (and those of the
-- runtime's modules): only what the typed code called.
local function user_traceback(err)
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

-- Each command runs under a context of its own, which Ctrl-C (SIGINT)
-- cancels: its waits end with "canceled" and the prompt comes back.
local current -- the cancel function of the running command
sched.handlers.interrupt = function()
  if current then
    current()
  else
    io.stdout:write("\n(interrupted; Ctrl-D exits)\n")
    io.stdout:flush()
  end
end

local function run(f)
  local ctx, cancel = orrery.context.with_cancel(orrery.context.background())
  local slot = require("orrery.ffi").orrery_ffi_co_slot()
  current = cancel
  local old = sched.bind(slot, ctx)
  local r = sched.pack(xpcall(f, user_traceback))
  sched.bind(slot, old)
  current = nil
  cancel()
  return r
end

return function(...)
  if select("#", ...) > 0 then
    io.stderr:write(("orrery repl: unexpected argument '%s'\nusage: orrery repl\n"):format(tostring((...))))
    os.exit(2)
  end
  -- A panic in a coroutine started at the prompt is printed and the
  -- session goes on; SIGINT interrupts the command instead of ending the
  -- process.
  core.interactive(true)
  local tty = os.getenv("TERM") and io.stdin and os.execute("test -t 0") == 0
  if tty then
    print(("orrery %s -- Lua with channels; orrery is preloaded. Ctrl-C interrupts, Ctrl-D exits."):format(orrery.version))
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
        local r = run(f)
        if not r[1] then
          print(r[2])
        elseif r.n > 1 then
          local out = {}
          for i = 2, r.n do out[#out + 1] = show(r[i]) end
          print(table.concat(out, "\t"))
        end
        io.stdout:flush()
      end
    end
  end
end
