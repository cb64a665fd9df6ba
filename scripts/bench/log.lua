-- SPDX-License-Identifier: MIT
-- log.lua -- ns of the caller's time per orrery.log line (encoding it into
-- the buffer), ns per line of the hand-over to the writer thread that
-- follows on the next loop turn (the copy into its queue: the loop's
-- whole share of the write), and the writer thread's own ns per line
-- (write(2) to /dev/null), with lines dropped (none expected). Not a
-- test: the target (issue 11) is a 10-field line in under 500 ns of the
-- caller's time (zap: 862 ns).
-- Usage: orrery scripts/bench/log.lua [lines]  (default 2M)
local orrery = require "orrery"
local log = require "orrery.log"
local json = require "orrery.json"

local N = tonumber(arg and arg[1]) or 2000000
local BATCH = 1000 -- lines per timed batch; the flush after it is timed apart
local now = orrery.now

assert(log.open(os.getenv("LOG_PATH") or "/dev/null"))
log.configure { buffer_max = 64 * 1048576 }

local fields10 = { order_id = 123456, amount = 42.5, currency = "EUR", customer = "c-0042",
  region = "eu-west-1", retry = false, attempt = 3, path = "/orders/123456", status = 201,
  duration_ms = 12.375 }

local function bench(name, fn)
  local caller, handoff, wait = 0, 0, 0
  fn(BATCH) -- warm up and compile
  log.flush()
  local d0 = log.stats().dropped
  for _ = 1, N / BATCH do
    local t0 = now()
    fn(BATCH)
    local t1 = now()
    log.flush(0) -- the hand-over only
    local t2 = now()
    log.flush() -- waits for the writer: its time is the write's
    local t3 = now()
    caller, handoff, wait = caller + (t1 - t0), handoff + (t2 - t1), wait + (t3 - t2)
  end
  print(("%-40s %8.1f ns/line caller, %6.1f hand-over, %6.1f until written  (%d lines, %d dropped)"):format(name,
    caller / N * 1e9, handoff / N * 1e9, (handoff + wait) / N * 1e9, N, log.stats().dropped - d0))
end

print(("orrery %s, %s"):format(orrery.version or "?", jit and jit.version or "no JIT"))

do -- floor: the same table through orrery.json, no log line around it
  local t0 = now()
  for _ = 1, N / 10 do json.encode(fields10) end
  print(("%-40s %8.1f ns/op"):format("floor: json.encode(10 fields)", (now() - t0) / (N / 10) * 1e9))
end

bench("log.info(msg) (no fields)", function(n)
  for _ = 1, n do log.info("order created") end
end)

bench("log.info(msg, 10 fields)", function(n)
  for _ = 1, n do log.info("order created", fields10) end
end)

bench("log.info(msg, {10 fields built per call})", function(n)
  for i = 1, n do
    log.info("order created", { order_id = i, amount = 42.5, currency = "EUR", customer = "c-0042",
      region = "eu-west-1", retry = false, attempt = 3, path = "/orders/123456", status = 201,
      duration_ms = 12.375 })
  end
end)

local lg = log.with { service = "orders", version = "1.4.2", host = "web-3" }
bench("logger:info(msg, 10 fields) + 3 bound", function(n)
  for _ = 1, n do lg:info("order created", fields10) end
end)

bench("log.debug (below the level: skipped)", function(n)
  for _ = 1, n do log.debug("order created", fields10) end
end)

log.configure { dedup_level = "warn" }
bench("log.warn, identical (rate-limited)", function(n)
  for _ = 1, n do log.warn("upstream slow", fields10) end
end)

-- The HTTP server's access line (log.access, what access_log = true
-- writes per request), on a request-like table.
local req = { method = "GET", path = "/orders/123456", remote = "127.0.0.1" }
bench("log.access(req, status, bytes, dur)", function(n)
  for _ = 1, n do log.access(req, 200, 11, 0.000123) end
end)
