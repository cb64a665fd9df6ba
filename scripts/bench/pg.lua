-- SPDX-License-Identifier: MIT
-- pg.lua -- INSERT throughput of orrery.pg on a throwaway local cluster
-- (tests/lua/pg_helpers.lua) with synchronous_commit = on and fsync = on,
-- so that every commit waits for its WAL flush: one coroutine (one
-- transaction per statement), 256 coroutines through group commit, the
-- same 256 with one transaction each (db:transaction, no grouping), and
-- pgbench running the same INSERT as its peer (libpq, one connection per
-- client, one transaction per statement). Not a test.
-- Usage: orrery scripts/bench/pg.lua [seconds per case]  (default 3)
local orrery = require "orrery"
local pg = require "orrery.pg"

local root = (debug.getinfo(1, "S").source:match("^@(.*)scripts/bench/pg%.lua$") or "")
local pgh = dofile(root .. "tests/lua/pg_helpers.lua")
local SECS = tonumber(arg and arg[1]) or 3
local now = orrery.now

local why = pgh.missing()
if why then
  print("pg bench skipped: " .. why)
  return
end
local cluster = assert(pgh.start { settings = { fsync = "on", synchronous_commit = "on",
  shared_buffers = "'128MB'" } })

local INSERT = "INSERT INTO b (worker, v) VALUES ($1, $2)"

local function reset(db)
  assert(db:exec("DROP TABLE IF EXISTS b"))
  assert(db:exec("CREATE TABLE b (id bigserial PRIMARY KEY, worker int, v int)"))
end

local function exec(db, w, i) assert(db:exec(INSERT, w, i)) end
local function tx(db, w, i)
  assert(db:transaction(function(t) return assert(t:exec(INSERT, w, i)) end))
end

-- Runs `workers` coroutines for SECS seconds, each calling step(db, w, i)
-- in a loop; prints statements/s.
local function run(name, db, workers, step)
  reset(db)
  local s0 = db:stats()
  local done = orrery.chan(workers)
  local t0 = now()
  local deadline = t0 + SECS
  for w = 1, workers do
    orrery.go(function()
      local n = 0
      while now() < deadline do
        n = n + 1
        step(db, w, n)
      end
      done:send(n)
    end)
  end
  local total = 0
  for _ = 1, workers do total = total + done:recv() end
  local dt = now() - t0
  local s1 = db:stats()
  local rows = assert(db:exec("SELECT count(*) AS n FROM b"))[1].n
  assert(rows == total, ("%d rows for %d statements"):format(rows, total))
  -- A transaction of its own commits alone; groups are counted by the pool.
  local groups = step == exec and s1.batches - s0.batches or total
  print(("%-48s %9.0f stmt/s  %7.1f stmts per commit"):format(name, total / dt, total / groups))
end


print(("orrery.pg, libpq %s, %s; %g s per case; fsync = on, synchronous_commit = on")
  :format(pg.version, jit and jit.version or "no JIT", SECS))
print(cluster.psql("SELECT version()"))

local db = assert(pg.connect(cluster.url))
run("1 coroutine, db:exec", db, 1, exec)
run("256 coroutines, db:exec (group commit, pool 4)", db, 256, exec)
db:close()
db = assert(pg.connect(cluster.url, { pool = 1 }))
run("256 coroutines, db:exec (group commit, pool 1)", db, 256, exec)
db:close()
db = assert(pg.connect(cluster.url))
run("256 coroutines, one db:transaction each (pool 4)", db, 256, tx)
db:close()
db = assert(pg.connect(cluster.url, { pool = 32 }))
run("256 coroutines, one db:transaction each (pool 32)", db, 256, tx)

-- The peer: pgbench, the same INSERT, one transaction per statement.
reset(db)
db:close()
local script = os.tmpname()
local f = assert(io.open(script, "w"))
f:write("INSERT INTO b (worker, v) VALUES (:client_id, 1);\n")
f:close()
os.execute("chmod 644 " .. script)
for _, c in ipairs { 1, 32 } do
  local _, out = pgh.sh(("%s/pgbench -n -M extended -h 127.0.0.1 -p %d -U postgres -c %d -j 2 -T %d -f %s %s")
    :format(pgh.shquote(cluster.bin), cluster.port, c, math.ceil(SECS), pgh.shquote(script), cluster.db))
  local tps = out:match("tps = ([%d.]+)")
  print(("%-48s %9.0f stmt/s  %7.1f stmts per commit"):format(("pgbench, %d client%s"):format(c, c > 1 and "s" or ""),
    tonumber(tps) or 0, 1))
end
os.remove(script)
cluster.stop()
