-- SPDX-License-Identifier: MIT
-- orrery.attach -- `orrery attach PATH`: the client of a service's console
-- (orrery.console), with the REPL's line editing. Ctrl-C interrupts the
-- command running in the service; Ctrl-D or `exit` detaches and leaves
-- the service running.
local orrery = require "orrery"
local core = require "orrery.core"
local net = require "orrery.net"
local sched = require "orrery.sched"

local eval = require "orrery.eval"

-- Tab asks the service: "c <text>" is answered by one line "c " and the
-- candidates, separated by tabs. Output that arrives meanwhile (a print
-- from a coroutine the session started) is shown; no answer within a few
-- seconds (a service that does not complete) offers nothing.
local function completer(conn)
  return function(text)
    if not conn:write("c " .. text:gsub("[\r\n]", " ") .. "\n") then return {} end
    while true do
      local line = conn:read_until("\n", 1048576, 5)
      if not line then return {} end
      local kind, rest = line:sub(1, 1), line:sub(3, -2)
      if kind == "c" then
        local out = {}
        for cand in rest:gmatch("[^\t]+") do out[#out + 1] = cand end
        return out
      elseif kind == "o" then
        io.stdout:write("\n", rest, "\n")
        io.stdout:flush()
      end
    end
  end
end

return function(path, ...)
  if type(path) ~= "string" or select("#", ...) > 0 then
    io.stderr:write("usage: orrery attach SOCKET\n")
    os.exit(2)
  end
  local conn, err = net.connect { unix = path, timeout = 5 }
  if not conn then
    io.stderr:write(("orrery attach: cannot connect to %s: %s\n"):format(path, tostring(err)))
    os.exit(1)
  end
  local complete = completer(conn)
  core.interactive(true)
  -- Ctrl-C: the service interrupts the running command; at the prompt the
  -- line being edited is dropped, here and in the service ("a").
  sched.handlers.interrupt = function()
    conn:write("i\n")
    eval.drop_line()
  end
  while true do
    local line = conn:read_until("\n", 1048576)
    if not line then break end
    local kind, text = line:sub(1, 1), line:sub(3, -2)
    if kind == "o" then
      io.stdout:write(text, "\n")
      io.stdout:flush()
    elseif kind == "p" then
      local input, dropped = eval.readline(text, complete)
      if not input then break end
      local msg = dropped and "a\n" or ("l " .. input:gsub("\n", " ") .. "\n")
      if not conn:write(msg) then break end
    end
  end
  conn:close()
end
