-- SPDX-License-Identifier: MIT
-- inproc.lua MODE ROUNDS WARMUP -- the instr section of
-- scripts/bench/trace.sh: a server and 50 keep-alive client connections
-- in one process, ROUNDS rounds of one GET / on each connection after
-- WARMUP rounds. MODE is "off" (trace.configure never called) or a
-- ratio; spans go to a sink in the same process. Run under callgrind
-- twice with different ROUNDS, the difference divided by the extra
-- requests is the instructions per request, client side included.
local trace = require "orrery.trace"
local http = require "orrery.http"
local net = require "orrery.net"

local mode, rounds, warmup = arg[1] or "off", tonumber(arg[2] or "100"), tonumber(arg[3] or "50")
local sink = assert(http.listen(function(req) req:body() return 200, "{}" end,
  { host = "127.0.0.1", port = 0, trace = false }))
if mode ~= "off" then
  trace.configure { endpoint = ("http://127.0.0.1:%d/v1/traces"):format(sink.port), ratio = tonumber(mode) }
end
local srv = assert(http.listen(function() return 200, "ok" end, { host = "127.0.0.1", port = 0 }))
local conns = {}
for i = 1, 50 do conns[i] = assert(net.connect(srv.host, srv.port, { timeout = 5 })) end
local raw = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
local function round()
  for i = 1, 50 do assert(conns[i]:write(raw)) end
  for i = 1, 50 do
    local c = conns[i]
    assert(c:read_until("\r\n\r\n", 65536, 5))
    assert(c:readn(2, 5)) -- "ok"
  end
end
for _ = 1, warmup + rounds do round() end
trace.flush()
