-- SPDX-License-Identifier: MIT
-- orrery.saga_cli -- `orrery saga ls|show|retry|skip JOURNAL ...`: the
-- operator's view of a saga journal (docs/saga.md). It works on the
-- journal directly (a SQLite file, or a PostgreSQL database), also while
-- the service runs (SQLite's WAL lets both in); retry and skip only mark
-- the instance, and the service that owns the saga (on PostgreSQL: any
-- process running it) carries it on at its next recovery pass.
local sj = require "orrery.saga_journal"
local json = require "orrery.json"

local USAGE = [[
usage: orrery saga ls JOURNAL [--state STATE] [--json]
       orrery saga show JOURNAL ID|KEY [--json]
       orrery saga retry JOURNAL ID|KEY
       orrery saga skip JOURNAL ID|KEY
]]

local function die(code, msg)
  io.stderr:write(msg, msg:sub(-1) == "\n" and "" or "\n")
  os.exit(code)
end

local function open(url)
  local where = url
  if not url:match("^%a[%w+.-]*://") then
    local path = url:match("^sqlite:(.+)$") or url
    local f = io.open(path, "rb")
    if not f then die(1, "orrery saga: no journal at " .. path) end
    f:close()
    where = path
  end
  local db, err = sj.open(url, nil, false)
  if not db then die(1, "orrery saga: " .. tostring(err)) end
  if db.kind == "pg" then where = db.db:url() end
  local ok = db:exec("SELECT 1 FROM saga_instances LIMIT 1")
  if not ok then die(1, "orrery saga: " .. where .. " is not a saga journal") end
  return db
end

local function stamp(t)
  if not t then return "-" end
  return os.date("!%Y-%m-%d %H:%M:%S", math.floor(t)) .. ("%.3f"):format(t % 1):sub(2)
end

local function errtext(e)
  if not e then return "" end
  local ok, v = pcall(json.decode, e)
  if not ok then return e end
  if type(v) == "table" then return v.error and tostring(v.error) .. (v.compensation and (" (compensation: " .. v.compensation .. ")") or "") or e end
  return tostring(v)
end

local function find(db, id)
  local row, err = db:find(id)
  if err then die(1, "orrery saga: " .. tostring(err)) end
  if not row then die(1, "orrery saga: no instance " .. id) end
  return row
end

local function ls(db, state, as_json)
  local rows = assert(db:list(state))
  if as_json then
    for _, r in ipairs(rows) do r.error = r.error and errtext(r.error) end
    print(json.encode(json.array(rows)))
    return
  end
  local counts = {}
  for _, r in ipairs(rows) do counts[r.state] = (counts[r.state] or 0) + 1 end
  print(("%-24s %-20s %-14s %-20s %-23s %s"):format("ID", "KEY", "SAGA", "STATE", "UPDATED", "ERROR"))
  for _, r in ipairs(rows) do
    print(("%-24s %-20s %-14s %-20s %-23s %s"):format(r.id, r.key or "-", r.name, r.state,
      stamp(r.updated), errtext(r.error)))
  end
  local parts = {}
  for _, s in ipairs { "running", "compensating", "completed", "compensated", "compensation_failed" } do
    if counts[s] then parts[#parts + 1] = counts[s] .. " " .. s end
  end
  print(("%d instances%s"):format(#rows, #parts > 0 and (": " .. table.concat(parts, ", ")) or ""))
end

local function show(db, id, as_json)
  local r = find(db, id)
  local evs = assert(db:exec("SELECT seq, kind, step, attempt, at, data FROM saga_events WHERE instance = ? ORDER BY seq", r.id))
  if as_json then
    for _, k in ipairs { "input", "result", "error" } do
      if r[k] then r[k] = json.decode(r[k]) end
    end
    for _, e in ipairs(evs) do if e.data then e.data = json.decode(e.data) end end
    r.history = json.array(evs)
    print(json.encode(r))
    return
  end
  print(("instance %s  saga %s v%d  key %s"):format(r.id, r.name, r.version, r.key or "-"))
  print(("state    %s%s"):format(r.state, r.error and ("  error: " .. errtext(r.error)) or ""))
  print(("input    %s"):format(r.input or "null"))
  if r.result then print(("result   %s"):format(r.result)) end
  print(("created  %s  updated %s"):format(stamp(r.created), stamp(r.updated)))
  if r.owner then print(("owner    %s  lease until %s"):format(r.owner, r.lease_until or "-")) end
  print()
  print(("%4s  %-23s  %-20s %-14s %7s %9s  %s"):format("SEQ", "AT", "EVENT", "STEP", "ATTEMPT", "DURATION", "DETAIL"))
  local began = {}
  for _, e in ipairs(evs) do
    local dur = ""
    if e.kind == "step_started" then began[e.step] = e.at end
    if (e.kind == "step_done" or e.kind == "step_failed") and began[e.step] then
      dur = ("%.1fms"):format((e.at - began[e.step]) * 1000)
    end
    local detail = ""
    if e.data and e.kind ~= "step_done" and e.kind ~= "started" then detail = errtext(e.data) end
    print(("%4d  %-23s  %-20s %-14s %7s %9s  %s"):format(e.seq, stamp(e.at), e.kind, e.step or "",
      e.attempt and tostring(e.attempt) or "", dur, detail))
  end
end

-- retry: the instance goes back to compensating; its owner's recovery
-- runs the compensations it still owes (the failed one first).
local function retry(db, id)
  local r = find(db, id)
  if r.state ~= "compensation_failed" then die(1, ("orrery saga: %s is %s, not compensation_failed"):format(r.id, r.state)) end
  assert(db:hand_back(r.id, "retry_requested", nil, nil))
  print(("%s: compensating again; the service takes it up at its next recovery pass"):format(r.id))
end

-- skip: the failed compensation is marked done by hand (the operator
-- undid it outside); the rest of the compensations then run.
local function skip(db, id)
  local r = find(db, id)
  if r.state ~= "compensation_failed" then die(1, ("orrery saga: %s is %s, not compensation_failed"):format(r.id, r.state)) end
  local ev = assert(db:exec("SELECT step FROM saga_events WHERE instance = ? AND kind = 'compensation_failed' ORDER BY seq DESC LIMIT 1", r.id))[1]
  if not ev then die(1, "orrery saga: " .. r.id .. " records no failed compensation") end
  assert(db:hand_back(r.id, "compensated", ev.step, json.encode { skipped = true }))
  print(("%s: compensation of '%s' skipped; the remaining ones run at the service's next recovery pass"):format(r.id, ev.step))
end

return function(...)
  local args, flags = {}, {}
  local argv = { ... }
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--json" then flags.json = true
    elseif a == "--state" then i = i + 1; flags.state = argv[i] or die(2, USAGE)
    elseif a == "-h" or a == "--help" then io.stdout:write(USAGE); os.exit(0)
    elseif a:sub(1, 2) == "--" then die(2, "orrery saga: unknown option '" .. a .. "'\n" .. USAGE)
    else args[#args + 1] = a end
    i = i + 1
  end
  local cmd, journal, id = args[1], args[2], args[3]
  if not cmd or not journal then die(2, USAGE) end
  if cmd == "ls" then
    if id then die(2, USAGE) end
    ls(open(journal), flags.state, flags.json)
  elseif cmd == "show" and id then show(open(journal), id, flags.json)
  elseif cmd == "retry" and id then retry(open(journal), id)
  elseif cmd == "skip" and id then skip(open(journal), id)
  else die(2, "orrery saga: unknown command '" .. tostring(cmd) .. "'\n" .. USAGE) end
end
