-- SPDX-License-Identifier: MIT
-- stream_test.lua -- host/stream.c: read buffers, and what closing costs.
local T = require "orrery.test"
local orrery = require "orrery"
local net = require "orrery.net"
local core = require "orrery.net.core"
local H = dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "http_helpers.lua")

local N = 300

-- Waits until the host has at most n live connections.
local function settle_conns(n)
  for _ = 1, 500 do
    if core.stats().conns <= n then return end
    orrery.sleep(0.005)
  end
  T.fail("connections did not close: " .. core.stats().conns .. " > " .. n)
end

-- The regression: when 10,000 idle kept-alive connections disconnected in
-- one turn, each took an 8 KB read buffer for the read that saw EOF, and
-- RSS went from 41 MB to 80-91 MB and stayed there.
T.test("idle connections closed in one turn allocate no read buffer", function()
  local base = core.stats().conns
  local l = assert(net.listen { host = "127.0.0.1", port = 0 })
  local clients, ids = {}, {}
  orrery.go(function()
    for _ = 1, N do
      local s = assert(l:accept())
      ids[#ids + 1] = orrery.go(function()
        local d, err = s:read()
        assert(d == nil and err == "eof", tostring(err))
        s:close()
      end)
    end
  end)
  for i = 1, N do clients[i] = assert(net.connect("127.0.0.1", l.port, { timeout = 2 })) end
  while #ids < N do orrery.sleep(0.001) end
  T.settle(ids)
  local before = core.stats().buffers_allocated
  for i = 1, N do clients[i]:close() end
  settle_conns(base)
  T.eq(core.stats().buffers_allocated - before, 0)
  l:close()
end)

T.test("kept-alive HTTP connections closed in one turn allocate no read buffer", function()
  local base = core.stats().conns
  local srv = H.start(function() return "ok" end)
  local clients = {}
  for i = 1, N do
    local c = H.connect(srv)
    assert(c:write("GET / HTTP/1.1\r\nHost: t\r\n\r\n"))
    clients[i] = c
  end
  for i = 1, N do T.eq(H.read_response(clients[i]).body, "ok") end
  orrery.sleep(0.02) -- every server coroutine parks for the next request
  local before = core.stats().buffers_allocated
  for i = 1, N do clients[i]:close() end
  settle_conns(base + 1) -- the server's own listener is not a connection
  T.eq(core.stats().buffers_allocated - before, 0)
  srv:close()
end)

T.test("bytes read into the scratch buffer reach the reader intact", function()
  local l = assert(net.listen { host = "127.0.0.1", port = 0 })
  local got = orrery.chan(1)
  orrery.go(function()
    local s = assert(l:accept())
    got:send(s:read_all(2))
    s:close()
  end)
  local c = assert(net.connect("127.0.0.1", l.port, { timeout = 2 }))
  local big = ("abcdefghij"):rep(5000)
  for _ = 1, 3 do
    assert(c:write("x"))
    orrery.sleep(0.005) -- an idle reader between writes holds no buffer
  end
  assert(c:write(big))
  c:close()
  T.eq(got:recv(), "xxx" .. big)
  l:close()
end)
