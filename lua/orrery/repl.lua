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

local eval = require "orrery.eval"
local show, compile, user_traceback = eval.show, eval.compile, eval.traceback

-- Reading a line parks the REPL's coroutine until it is there; Tab
-- completes the globals' names and fields (eval.complete).
local function readline(prompt)
  return eval.readline(prompt, eval.complete)
end

-- Each command runs under a context of its own, which Ctrl-C (SIGINT)
-- cancels: its waits end with "canceled" and the prompt comes back.
local current -- the cancel function of the running command
-- At the prompt, it drops the line being edited.
local function interrupted()
  io.stdout:write("(interrupted; Ctrl-D exits)\n")
  io.stdout:flush()
end

sched.handlers.interrupt = function()
  if current then
    current()
  elseif not eval.drop_line() then
    io.stdout:write("\n")
    interrupted()
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
    local line, dropped = readline(buf and ">> " or "> ")
    if not line then break end
    if dropped then
      buf = nil -- the lines of an unfinished statement go with it
      interrupted()
    else
      buf = buf and (buf .. "\n" .. line) or line
      local f, err, more = compile(buf)
      if f or not more then
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
end
