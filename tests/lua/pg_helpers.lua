-- SPDX-License-Identifier: MIT
-- pg_helpers.lua -- a throwaway PostgreSQL cluster for tests and
-- benchmarks: initdb in a temporary directory, the server on 127.0.0.1 on
-- a free port (its unix socket in the same directory), a database made
-- for the caller, and an immediate stop that removes it all.
--
--   local pgh = dofile(root .. "tests/lua/pg_helpers.lua")
--   local why = pgh.missing()            -- nil, or why there is no server
--   local cluster = assert(pgh.start())  -- { url, port, dir, ... }
--   ... pg.connect(cluster.url) ...
--   cluster.stop()
--
-- initdb and pg_ctl refuse to run as root: as root the server runs as an
-- unprivileged user (postgres when it exists, else nobody) that owns the
-- directory. The calls block the loop while they run (io.popen), which is
-- fine for a test. A watcher in the background stops the server and
-- removes the directory if this process dies without stopping it (a test
-- file killed by its time limit).
local M = {}

local function shquote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.shquote = shquote

-- sh(cmd) -> status, output (stdout and stderr)
local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, (out:gsub("rc=%d+%s*$", ""))
end
M.sh = sh

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- The directory of initdb, pg_ctl and postgres: $PG_BINDIR when set
-- (only there), else the newest /usr/lib/postgresql/N/bin (Debian), or
-- pg_config --bindir.
function M.bindir()
  local cands = {}
  local env = os.getenv("PG_BINDIR")
  if env and env ~= "" then
    local ok = exists(env .. "/initdb") and exists(env .. "/pg_ctl") and exists(env .. "/postgres")
    return ok and env or nil
  end
  local p = io.popen("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r")
  for line in p:lines() do cands[#cands + 1] = line end
  p:close()
  local _, out = sh("pg_config --bindir")
  cands[#cands + 1] = out:match("^(%S+)")
  for _, d in ipairs(cands) do
    if d and exists(d .. "/initdb") and exists(d .. "/pg_ctl") and exists(d .. "/postgres") then
      return d
    end
  end
end

-- missing() -> nil when a cluster can be started, else why not.
function M.missing()
  if not M.bindir() then
    return "PostgreSQL server binaries not found (install postgresql, or set PG_BINDIR to their directory)"
  end
end

local function is_root()
  local _, out = sh("id -u")
  return out:match("^%s*0%s*$") ~= nil
end

-- The user the server runs as when we are root.
local function server_user()
  local rc = sh("getent passwd postgres >/dev/null")
  if rc == 0 then return "postgres" end
  return "nobody"
end

-- How to run a command as that user.
local function as_user(user)
  if not user then return function(cmd) return cmd end end
  local rc = sh("command -v runuser >/dev/null")
  if rc == 0 then
    return function(cmd) return "runuser -u " .. user .. " -- sh -c " .. shquote(cmd) end
  end
  return function(cmd) return "su -s /bin/sh " .. user .. " -c " .. shquote(cmd) end
end


-- start([opts]) -> cluster | nil, err. opts.settings is a table of
-- server settings (-c name=value; e.g. { fsync = "off" }); opts.db the
-- database to create (default "orrery_test"). The cluster:
--   url, port, dir, bin, db   where it is
--   stop()                    stops the server at once and removes dir
--   down() / up()             stops the server (immediate) / starts it
--                             again on the same port and data
--   restart()                 down() then up()
--   psql(sql) -> out | nil, err   runs SQL with psql (tuples only)
function M.start(opts)
  opts = opts or {}
  local bin = M.bindir()
  if not bin then return nil, M.missing() end
  local user = is_root() and server_user() or nil
  local run = as_user(user)
  local rc, out = sh("mktemp -d /tmp/orrery-pg.XXXXXX")
  if rc ~= 0 then return nil, "mktemp: " .. out end
  local dir = out:match("(%S+)")
  if user then sh("chown " .. user .. " " .. shquote(dir)) end
  local c = { dir = dir, bin = bin, db = opts.db or "orrery_test", user = user }
  local data, log = dir .. "/data", dir .. "/log"
  local function fail(what, o)
    sh("rm -rf " .. shquote(dir))
    return nil, what .. ": " .. tostring(o):sub(-600)
  end
  rc, out = sh(run(("%s/initdb -D %s -A trust -U postgres -E UTF8 --no-sync --no-instructions")
    :format(shquote(bin), shquote(data))))
  if rc ~= 0 then return fail("initdb", out) end
  local settings = { listen_addresses = "'127.0.0.1'", unix_socket_directories = "'" .. dir .. "'",
    max_connections = "100", logging_collector = "off" }
  for k, v in pairs(opts.settings or {}) do settings[k] = tostring(v) end
  local f = assert(io.open(data .. "/postgresql.conf", "a"))
  for k, v in pairs(settings) do f:write(k, " = ", v, "\n") end
  f:close()
  local function up()
    local r, o = sh(run(("%s/pg_ctl -D %s -l %s -w -t 60 -o %s start")
      :format(shquote(bin), shquote(data), shquote(log), shquote("-p " .. c.port))))
    if r ~= 0 then
      local lf = io.open(log)
      local l = lf and lf:read("*a") or ""
      if lf then lf:close() end
      return nil, o .. l:sub(-400)
    end
    return true
  end
  local function down()
    sh(run(("%s/pg_ctl -D %s -m immediate -w -t 60 stop"):format(shquote(bin), shquote(data))))
  end
  -- A port taken between choosing it and the server binding it: try again.
  local ok, err
  for _ = 1, 3 do
    c.port = require("orrery.test").free_port()
    ok, err = up()
    if ok then break end
  end
  if not ok then return fail("pg_ctl start", err) end
  c.url = ("postgresql://postgres@127.0.0.1:%d/%s"):format(c.port, c.db)
  function c.psql(sql, db)
    local r, o = sh(("%s/psql -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p %d -U postgres -d %s -c %s")
      :format(shquote(bin), c.port, shquote(db or c.db), shquote(sql)))
    if r ~= 0 then return nil, o end
    return (o:gsub("%s+$", ""))
  end
  local _, cerr = c.psql("CREATE DATABASE " .. c.db, "postgres")
  if cerr then
    down()
    return fail("CREATE DATABASE", cerr)
  end
  local pid = require("orrery").pid()
  if pid then
    -- The watcher: once this process is gone, the cluster goes too.
    local stop_cmd = run(("%s/pg_ctl -D %s -m immediate stop"):format(shquote(bin), shquote(data)))
    sh(("setsid sh -c %s </dev/null >/dev/null 2>&1 &"):format(shquote(
      ("while kill -0 %s 2>/dev/null && [ -d %s ]; do sleep 1; done; %s; rm -rf %s")
        :format(pid, shquote(data), stop_cmd, shquote(dir)))))
  end
  c.down, c.up = down, up
  function c.restart()
    down()
    return up()
  end
  function c.stop()
    if not c.dir then return end
    down()
    sh("rm -rf " .. shquote(c.dir))
    c.dir = nil
  end
  return c
end

return M
