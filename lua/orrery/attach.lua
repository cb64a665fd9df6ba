-- SPDX-License-Identifier: MIT
-- orrery.attach -- `orrery attach PATH` (or tcp://host:port with a token):
-- the client of a service's console (orrery.console), with the REPL's
-- line editing and Tab completion from the service. Ctrl-C interrupts the
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

local USAGE = "usage: orrery attach SOCKET\n       orrery attach tcp://HOST:PORT [--token-file FILE]\n"

-- The token for a TCP console: the first line of the token file, else
-- ORRERY_CONSOLE_TOKEN.
local function token_of(file)
  if file then
    local f, err = io.open(file)
    if not f then return nil, err end
    local t = f:read("*l")
    f:close()
    t = t and t:match("^%s*(.-)%s*$")
    if t and t ~= "" then return t end
    return nil, file .. ": no token in it"
  end
  local t = os.getenv("ORRERY_CONSOLE_TOKEN")
  if t and t ~= "" then return t end
  return nil, "a TCP console needs --token-file FILE or ORRERY_CONSOLE_TOKEN"
end

local function fail(status, fmt, ...)
  io.stderr:write(("orrery attach: " .. fmt .. "\n"):format(...))
  os.exit(status)
end

return function(...)
  local path, token_file = ...
  local nargs = select("#", ...)
  if nargs == 3 and select(2, ...) == "--token-file" then
    token_file = select(3, ...)
  elseif nargs ~= 1 then
    path = nil
  end
  if type(path) ~= "string" then
    io.stderr:write(USAGE)
    os.exit(2)
  end
  local conn, err
  local rest = path:match("^tcp://(.*)$")
  if rest then
    local host, port = rest:match("^%[([^%]]+)%]:(%d+)$")
    if not host then host, port = rest:match("^([^:/]+):(%d+)$") end
    if not host then fail(2, "bad address %s (tcp://host:port expected)", path) end
    local token, terr = token_of(token_file)
    if not token then fail(1, "%s", terr) end
    conn, err = net.connect(host, tonumber(port), { timeout = 5 })
    if conn and not conn:write("t " .. token .. "\n") then conn, err = nil, "closed" end
  elseif token_file then
    io.stderr:write(USAGE)
    os.exit(2)
  else
    conn, err = net.connect { unix = path, timeout = 5 }
  end
  if not conn then fail(1, "cannot connect to %s: %s", path, tostring(err)) end
  local complete = completer(conn)
  core.interactive(true)
  -- Ctrl-C: the service interrupts the running command; at the prompt the
  -- line being edited is dropped, here and in the service ("a").
  sched.handlers.interrupt = function()
    conn:write("i\n")
    eval.drop_line()
  end
  local prompted = false -- a session was opened (not refused)
  while true do
    local line = conn:read_until("\n", 1048576)
    if not line then break end
    local kind, text = line:sub(1, 1), line:sub(3, -2)
    if kind == "o" then
      io.stdout:write(text, "\n")
      io.stdout:flush()
    elseif kind == "p" then
      prompted = true
      local input, dropped = eval.readline(text, complete)
      if not input then break end
      local msg = dropped and "a\n" or ("l " .. input:gsub("\n", " ") .. "\n")
      if not conn:write(msg) then break end
    end
  end
  conn:close()
  if not prompted then os.exit(1) end
end
