-- SPDX-License-Identifier: MIT
-- net_test.lua -- orrery.net: TCP and unix streams between coroutines.
local T = require "orrery.test"
local orrery = require "orrery"
local net = require "orrery.net"

T.test("echo over TCP: read, read_until, readn, large writes, EOF", function()
  local l = assert(net.listen { host = "127.0.0.1", port = 0 })
  T.ok(l.port > 0)
  orrery.go(function()
    local c = assert(l:accept())
    while true do
      local d = c:read()
      if not d then break end
      assert(c:write(d))
    end
    c:close()
  end)
  local c = assert(net.connect("127.0.0.1", l.port, { timeout = 1 }))
  T.eq(select(1, c:peer()), "127.0.0.1")
  assert(c:write("line one\nline two\n"))
  T.eq(c:read_until("\n"), "line one\n")
  T.eq(c:read_until("\n"), "line two\n")
  local big = ("0123456789"):rep(300000)
  orrery.go(function() assert(c:write(big)) end)
  T.eq(c:readn(#big, 5), big)
  T.eq({ c:read(10, 0.05) }, { nil, "timeout" })
  c:shutdown()
  T.eq({ c:read() }, { nil, "eof" })
  c:close()
  T.eq({ c:read() }, { nil, "closed" })
  l:close()
end)

T.test("connect errors and cancellation", function()
  local l = assert(net.listen { host = "127.0.0.1", port = 0 })
  local port = l.port
  l:close()
  T.eq({ net.connect("127.0.0.1", port) }, { nil, "refused" })
  T.eq(net.resolve("127.0.0.1"), { "127.0.0.1" })
  local l2 = assert(net.listen { host = "127.0.0.1", port = 0 })
  local c = assert(net.connect("127.0.0.1", l2.port))
  local ctx, cancel = orrery.context.with_cancel()
  orrery.go(function() orrery.sleep(0.02); cancel() end)
  T.eq({ c:read(10, ctx) }, { nil, "canceled" })
  T.eq(select(2, c:read_until("\n", 4, 0.01)), "timeout")
  c:close()
  l2:close()
end)

T.test("unix sockets", function()
  local path = os.tmpname() .. ".sock"
  os.remove(path)
  local l = assert(net.listen { unix = path })
  T.eq(l:addr(), path)
  orrery.go(function()
    local s = assert(l:accept())
    s:write("hi there")
    s:close()
  end)
  local c = assert(net.connect { unix = path })
  T.eq(c:read_all(2), "hi there")
  c:close()
  l:close()
end)
