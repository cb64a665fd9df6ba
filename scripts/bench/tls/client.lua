-- SPDX-License-Identifier: MIT
-- client.lua N CONNS URL CAFILE MODE -- the orrery side of
-- scripts/bench/tls.sh: N HTTPS GETs from CONNS coroutines through one
-- orrery.http client, verified against CAFILE. MODE: "keepalive",
-- "new" or "resume" (a new connection per request; whether the session
-- is resumed is the server's choice: orrery's client always offers the
-- peer's newest session, and tls.sh's "new" server takes none). Prints
-- "RESULT client requests N seconds S".
local orrery = require "orrery"
local http = require "orrery.http"
local n, conns, url, ca, mode = tonumber(arg[1]), tonumber(arg[2]), arg[3], arg[4], arg[5]
local c = http.client { max_conns_per_host = conns, max_idle_per_host = conns,
  idle_timeout = mode == "keepalive" and 60 or 0, tls = { ca_file = ca } }
local left = n
local g = orrery.group()
local t0 = orrery.now()
for _ = 1, conns do
  g:go(function()
    while left > 0 do
      left = left - 1
      local res, err = c:get(url)
      if not res then error("request failed: " .. tostring(err)) end
      if res.status ~= 200 or #res:body() ~= 12 then error("bad response") end
    end
  end)
end
local err = g:wait()
if err then error(err) end
print(("RESULT client requests %d seconds %.4f"):format(n, orrery.now() - t0))
