-- client.lua N CONNS URL -- N keep-alive GETs from CONNS coroutines through
-- one orrery.http client; prints "RESULT client requests N seconds S".
local orrery = require "orrery"
local http = require "orrery.http"
local n, conns, url = tonumber(arg[1]), tonumber(arg[2]), arg[3]
local c = http.client { max_conns_per_host = conns, max_idle_per_host = conns }
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
