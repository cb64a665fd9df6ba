-- SPDX-License-Identifier: MIT
-- metrics.lua -- ns per metric update (orrery.metrics), each beside its
-- floor (the same loop adding to a plain table field), and the cost of
-- an exposition. Not a test: the target (issue 11) is at most 15 ns per
-- counter increment; client_golang measures 12-15 ns.
-- Usage: orrery scripts/bench/metrics.lua [iterations]  (default 20M)
local orrery = require "orrery"
local metrics = require "orrery.metrics"

local N = tonumber(arg and arg[1]) or 20000000
local now = orrery.now

local function bench(name, fn, n)
  n = n or N
  fn(math.max(1, math.floor(n / 100))) -- warm up and compile
  local t = now()
  fn(n)
  local dt = now() - t
  print(("%-48s %8.2f ns/op  (%d ops, %.3f s)"):format(name, dt / n * 1e9, n, dt))
end

print(("orrery %s, %s"):format(orrery.version or "?", jit and jit.version or "no JIT"))

local r = metrics.registry()
local plain = { v = 0 }
bench("floor: t.v = t.v + 1", function(n)
  for _ = 1, n do plain.v = plain.v + 1 end
end)

local u = r:counter { name = "bench_plain_total", help = "b" }
bench("counter:inc() (no labels)", function(n)
  for _ = 1, n do u:inc() end
end)

local c = r:counter { name = "bench_total", help = "b", labels = { "result" } }
bench("counter:inc(1, \"ok\") (one label)", function(n)
  for _ = 1, n do c:inc(1, "ok") end
end)

local ok = c:with("ok")
bench("child = counter:with(\"ok\"); child:inc()", function(n)
  for _ = 1, n do ok:inc() end
end)

local c3 = r:counter { name = "bench3_total", help = "b", labels = { "method", "route", "class" } }
bench("counter:inc(1, \"GET\", \"/orders/:id\", \"2xx\")", function(n)
  for _ = 1, n do c3:inc(1, "GET", "/orders/:id", "2xx") end
end)

local codes = { "ok", "failed", "timeout", "canceled" }
bench("counter:inc(1, codes[i % 4 + 1]) (4 series)", function(n)
  for i = 1, n do c:inc(1, codes[i % 4 + 1]) end
end)

local g = r:gauge { name = "bench_gauge", help = "b", labels = { "q" } }
bench("gauge:set(i, \"jobs\")", function(n)
  for i = 1, n do g:set(i, "jobs") end
end)

local h = r:histogram { name = "bench_seconds", help = "b" }
bench("histogram:observe(v) (11 default buckets)", function(n)
  for i = 1, n do h:observe((i % 128) * 0.01) end
end)

local hl = r:histogram { name = "bench_route_seconds", help = "b", labels = { "route" } }
local hc = hl:with("/orders")
bench("histogram child:observe(v)", function(n)
  for i = 1, n do hc:observe((i % 128) * 0.01) end
end)

-- An exposition of the default registry plus 100 series of each kind.
local big = metrics.registry { runtime = true }
local bc = big:counter { name = "big_total", help = "b", labels = { "k" } }
local bh = big:histogram { name = "big_seconds", help = "b", labels = { "k" } }
for i = 1, 100 do
  bc:inc(i, "k" .. i)
  bh:observe(i / 100, "k" .. i)
end
bench("expose() (100 counters + 100 histograms)", function(n)
  for _ = 1, n do big:expose() end
end, 2000)
