-- SPDX-License-Identifier: MIT
-- orrery.attach -- `orrery attach PATH`: the client of a service's console
-- (orrery.console), with the REPL's line editing. Ctrl-C interrupts the
-- command running in the service; Ctrl-D or `exit` detaches and leaves
-- the service running.
local orrery = require "orrery"
local core = require "orrery.core"
local net = require "orrery.net"
local sched = require "orrery.sched"

local function readline(prompt)
  return (sched.await(function(p) return core.readline(p) end, prompt))
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
  core.interactive(true)
  sched.handlers.interrupt = function() conn:write("i\n") end
  while true do
    local line = conn:read_until("\n", 1048576)
    if not line then break end
    local kind, text = line:sub(1, 1), line:sub(3, -2)
    if kind == "o" then
      io.stdout:write(text, "\n")
      io.stdout:flush()
    elseif kind == "p" then
      local input = readline(text)
      if not input then break end
      if not conn:write("l " .. input:gsub("\n", " ") .. "\n") then break end
    end
  end
  conn:close()
end
