-- SPDX-License-Identifier: MIT
-- bench.lua DIR -- the saga benchmark (scripts/bench/saga.sh): a 3-step
-- saga with local actions on the SQLite journal (WAL, synchronous=FULL)
-- and, in the same run, on a PostgreSQL journal (a throwaway local
-- cluster from tests/lua/pg_helpers.lua with the durable defaults:
-- fsync = on, synchronous_commit = on). Prints the disk's fsync floor,
-- then for each journal a naive run (one instance at a time, every
-- transition its own commit), throughput with many instances in flight,
-- latency at a fixed rate, and journal bytes per saga.
-- Environment: SAGAS (20000), INFLIGHT (1024), RATE (sagas/s for the
-- latency case, 1000), JOURNALS ("sqlite pg"), PG_POOL (connections of
-- the PostgreSQL journal, 4).
local orrery = require "orrery"
local saga = require "orrery.saga"
local sqlite = require "orrery.sqlite"
local pg = require "orrery.pg"

local dir = assert(..., "usage: bench.lua DIR")
local N = tonumber(os.getenv("SAGAS") or "20000")
local INFLIGHT = tonumber(os.getenv("INFLIGHT") or "1024")
local RATE = tonumber(os.getenv("RATE") or "1000")
local JOURNALS = os.getenv("JOURNALS") or "sqlite pg"
local PG_POOL = tonumber(os.getenv("PG_POOL") or "4")

local root = (debug.getinfo(1, "S").source:match("^@(.*)scripts/bench/saga/bench%.lua$") or "")

local function steps()
  local noop = function() return true end
  return {
    { name = "create", action = function(sc) return sc.input.i end, compensate = noop },
    { name = "charge", action = function(sc) return sc.results.create * 2 end, compensate = noop },
    { name = "ship", action = function(sc) return sc.results.charge + 1 end, compensate = noop },
  }
end

local function size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

-- 1. The floor: write + fsync of one small record, back to back;
-- python3's os.fsync measures the disk alone.
local p = io.popen(([[python3 -c '
import os, time
fd = os.open("%s/fsync.bin", os.O_WRONLY | os.O_CREAT, 0o600)
n, t0 = 0, time.time()
while time.time() - t0 < 2:
    os.write(fd, b"x" * 100); os.fsync(fd); n += 1
print(n / (time.time() - t0))' 2>/dev/null]]):format(dir))
local fsyncs = tonumber(p:read("*a"))
p:close()
print(("fsync floor:               %8.0f write+fsync/s"):format(fsyncs or 0))

-- 2. Naive: one instance at a time, each batch its own commit.
local function naive(url)
  local def = saga.define { name = "naive", journal = url, recover = false, steps = steps() }
  local n = 300
  local t0 = orrery.now()
  for i = 1, n do assert(def:run({ i = i })) end
  local dt = orrery.now() - t0
  print(("  naive (1 in flight):     %8.0f sagas/s  %6.2f ms/saga"):format(n / dt, dt / n * 1000))
end

-- 3. Throughput with INFLIGHT instances at a time.
local function throughput(def)
  local work = orrery.chan(INFLIGHT)
  local done = orrery.chan(INFLIGHT)
  for _ = 1, INFLIGHT do
    orrery.go(function()
      for i in work:iter() do
        local r, err = def:run({ i = i })
        if r ~= i * 2 + 1 then error("saga failed: " .. tostring(err)) end
      end
      done:send(true)
    end)
  end
  local t0 = orrery.now()
  for i = 1, N do work:send(i) end
  work:close()
  for _ = 1, INFLIGHT do done:recv() end
  local dt = orrery.now() - t0
  print(("  throughput (%d in flight): %8.0f sagas/s"):format(INFLIGHT, N / dt))
end

-- 4. Latency at a fixed rate: RATE sagas/s started each millisecond.
local function latency(def)
  local SECS = 2
  local total = RATE * SECS
  local lat = {}
  local done = orrery.chan(total)
  local t0 = orrery.now()
  local started = 0
  while started < total do
    local due = math.floor((orrery.now() - t0) * RATE)
    while started < due and started < total do
      started = started + 1
      local i = started
      orrery.go(function()
        local s = orrery.now()
        assert(def:run({ i = i }))
        lat[#lat + 1] = orrery.now() - s
        done:send(true)
      end)
    end
    orrery.sleep(0.001)
  end
  for _ = 1, total do done:recv() end
  table.sort(lat)
  local function q(x) return lat[math.max(1, math.floor(#lat * x))] * 1000 end
  print(("  latency at %d/s:        p50 %.2f ms  p99 %.2f ms  max %.2f ms"):format(RATE, q(0.5), q(0.99), q(1)))
end

if JOURNALS:match("sqlite") then
  print("SQLite journal (WAL, synchronous=FULL):")
  naive("sqlite:" .. dir .. "/naive.db")
  local path = dir .. "/bench.db"
  local def = saga.define { name = "bench", journal = "sqlite:" .. path, recover = false, steps = steps() }
  throughput(def)
  latency(def)
  -- Journal bytes per saga, after a checkpoint folds the WAL in.
  local db = assert(sqlite.open(path))
  local rows = assert(db:exec("SELECT count(*) AS n FROM saga_instances"))
  assert(db:exec("PRAGMA wal_checkpoint(TRUNCATE)"))
  local bytes = size(path) + size(path .. "-wal")
  print(("  journal:                 %8.0f bytes/saga (%d sagas, %d bytes)"):format(bytes / rows[1].n, rows[1].n, bytes))
  db:close()
end

if JOURNALS:match("pg") then
  local pgh = dofile(root .. "tests/lua/pg_helpers.lua")
  local why = pgh.missing()
  if why then
    print("PostgreSQL journal skipped: " .. why)
  else
    local cluster = assert(pgh.start { db = "saga", settings = { fsync = "on", synchronous_commit = "on",
      shared_buffers = "'128MB'" } })
    local ok, err = pcall(function()
      print(("PostgreSQL journal (%s, fsync=on, synchronous_commit=on, pool %d):"):format(
        cluster.psql("SHOW server_version"), PG_POOL))
      local url = cluster.url
      assert(saga.journal(url, { pool = PG_POOL }))
      naive(url)
      local db = assert(pg.connect(url))
      assert(db:exec("TRUNCATE saga_instances, saga_events"))
      local def = saga.define { name = "bench", journal = url, recover = false, steps = steps() }
      local wal0 = assert(db:exec("SELECT pg_current_wal_lsn()::text AS l"))[1].l
      throughput(def)
      local w = assert(db:exec("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1) AS d", wal0))[1].d
      print(("  WAL written:             %8.0f bytes/saga"):format(w / N))
      latency(def)
      assert(db:exec("VACUUM saga_instances"))
      assert(db:exec("VACUUM saga_events"))
      local r = assert(db:exec([[SELECT (SELECT count(*) FROM saga_instances) AS n,
        pg_total_relation_size('saga_instances') + pg_total_relation_size('saga_events') AS bytes]]))[1]
      print(("  journal:                 %8.0f bytes/saga (%d sagas, %d bytes of tables and indexes)")
        :format(r.bytes / r.n, r.n, r.bytes))
      db:close()
      local js = saga.journal(url).db:stats()
      print(("  group commit:            %8.1f units per transaction (%d units, %d transactions)")
        :format(js.ops / math.max(1, js.batches), js.ops, js.batches))
    end)
    cluster.stop()
    if not ok then error(err, 0) end
  end
end
