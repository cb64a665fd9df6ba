-- SPDX-License-Identifier: MIT
-- fault_proxy.lua -- a TCP proxy on the runtime that puts faults between a
-- client and a real upstream: delays, stalls, cuts and closes at chosen
-- points of either direction (loaded with dofile by the tests).
--
--   local FP = dofile(dir .. "fault_proxy.lua")
--   local px = FP.new { port = upstream_port }       -- host "127.0.0.1"
--   px.url                                            -- "http://127.0.0.1:<port>"
--   px:fault { dir = "down", after = 10, action = "close" }
--   px:kill()                                         -- ends every connection now
--   px:close()
--
-- A fault applies to the connections accepted after it is set (nil: none):
--   dir     "up" (client to upstream) or "down" (upstream to client)
--   after   bytes of that direction forwarded before the fault (default 0)
--   action  "close": close both sides there (the rest is not forwarded);
--           "stall": forward nothing more that way, keep both open;
--           "delay": wait `delay` seconds, then go on as usual
-- Counters: px.conns (accepted), px.up and px.down (bytes forwarded);
-- px.ended receives true each time a connection ends.
local orrery = require "orrery"
local net = require "orrery.net"

local M = {}

local Proxy = {}
Proxy.__index = Proxy

-- Copies from `from` to `to` until either ends, applying f (the fault of
-- this direction, or nil). Returns when the copy is over.
local function pump(px, pair, from, to, dir, f)
  local sent = 0
  local fired = false
  while not pair.done do
    local data = from:read(65536)
    if not data then break end
    if f and not fired and sent + #data >= (f.after or 0) then
      fired = true
      local keep = (f.after or 0) - sent
      if keep > 0 then
        to:write(data:sub(1, keep))
        px[dir] = px[dir] + keep
        sent = sent + keep
      end
      data = data:sub(keep + 1)
      if f.action == "close" then
        pair.kill()
        return
      elseif f.action == "stall" then
        while not pair.done do -- swallow, send nothing, until either side ends
          local _, rerr = from:read(65536, 0.05)
          if rerr and rerr ~= "timeout" then break end
        end
        pair.kill()
        return
      elseif f.action == "delay" then
        orrery.sleep(f.delay or 0)
      end
    end
    if #data > 0 then
      if not to:write(data) then break end
      px[dir] = px[dir] + #data
      sent = sent + #data
    end
  end
  pair.kill() -- one side ended: so does the other
end

--- new{ host=, port= } -> a proxy to that upstream, listening on a free
-- loopback port
function M.new(o)
  local l = assert(net.listen { host = "127.0.0.1", port = 0 })
  local px = setmetatable({ l = l, port = l.port, url = "http://127.0.0.1:" .. l.port,
    conns = 0, up = 0, down = 0, ended = orrery.chan(1000), live = {}, f = nil }, Proxy)
  orrery.go(function()
    while true do
      local c = l:accept()
      if not c then return end
      px.conns = px.conns + 1
      local f = px.f
      orrery.go(function()
        local u, err = net.connect { host = o.host or "127.0.0.1", port = o.port, timeout = 5 }
        if not u then
          c:close()
          px.ended:try_send(err)
          return
        end
        local pair = { done = false }
        function pair.kill()
          if pair.done then return end
          pair.done = true
          px.live[pair] = nil
          c:close()
          u:close()
          px.ended:try_send(true)
        end
        px.live[pair] = true
        orrery.go(pump, px, pair, u, c, "down", f and f.dir == "down" and f or nil)
        pump(px, pair, c, u, "up", f and f.dir == "up" and f or nil)
      end)
    end
  end)
  return px
end

--- px:fault(f): the fault for connections accepted from now on (nil: none)
function Proxy:fault(f) self.f = f end

--- px:kill(): closes both sides of every connection, at once (it does not
-- yield: the client's end has not seen it until the loop next polls)
function Proxy:kill()
  for pair in pairs(self.live) do pair.kill() end
end

function Proxy:close()
  self:kill()
  self.l:close()
end

return M
