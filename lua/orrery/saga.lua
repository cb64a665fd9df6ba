-- SPDX-License-Identifier: MIT
-- orrery.saga -- durable sagas: steps with compensations, a journal that
-- records every transition before it is acted on, recovery after a crash
-- (docs/saga.md).
--
-- The journal (lua/orrery/saga_journal.lua: SQLite, or PostgreSQL shared
-- by several processes through leases) is written through its module's
-- group commit, which lets every instance in flight share each commit.
-- An instance writes one atomic batch at each boundary: "step k done +
-- step k+1 started" is one write, durable before step k+1 runs, so a saga
-- of n steps costs n + 1 durable writes.
local orrery = require "orrery"
local sj = require "orrery.saga_journal"
local json = require "orrery.json"
local retry = require "orrery.retry"
local context = require "orrery.context"
local sched = require "orrery.sched"
local check = require "orrery.check"

local M = {}

M.STATES = { "running", "compensating", "completed", "compensated", "compensation_failed" }
local FINAL = sj.FINAL

-- The definitions of this process, for saga.list() (console, metrics).
local defs = setmetatable({}, { __mode = "k" })

--- saga.list() -> the definitions made in this process (by name order)
function M.list()
  local out = {}
  for d in pairs(defs) do out[#out + 1] = d end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local now = require("orrery.ffi").orrery_ffi_wall_now

-- -- Identifiers --

local counter = 0
local seed
do
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(8) or tostring(os.time())
  if f then f:close() end
  seed = 0
  for i = 1, #b do seed = (seed * 31 + b:byte(i)) % 2 ^ 32 end
end
-- An id is the second it was made, this process's random seed and a
-- counter: unique across processes, and increasing within one, so that
-- the instances in flight and their events sit together at the end of
-- the journal's B-trees. (A scrambled middle part put each one on a page
-- of its own: 29 kB of SQLite WAL per saga against 11 kB, and commits
-- three times as long.)
local function new_id()
  counter = counter + 1
  return ("%08x%08x%06x"):format(os.time() % 2 ^ 32, seed, counter % 2 ^ 24)
end

-- -- The journal --

-- lua/orrery/saga_journal.lua: SQLite or PostgreSQL, chosen by the URL.
-- The engine hands it events and state changes; it never writes SQL.
local journals = {} -- by URL, so that definitions share one handle

local function is_journal(j)
  local mt = getmetatable(j)
  return mt == sj.Sqlite or mt == sj.Pg
end

--- saga.journal(url [, opts]) -> journal | nil, err: "sqlite:path" (or a
--- plain path), or "postgresql://..." / "postgres://..."
function M.journal(url, opts)
  if type(url) ~= "string" or url == "" then
    error("orrery.saga.journal: bad argument #1 (journal URL expected, got " .. check.show(url) .. ")", 2)
  end
  local j = journals[url]
  if j then
    if opts ~= nil then
      check.opts("orrery.saga.journal", opts, { lease = true, owner = true, pool = true }, 3, 2)
      if j.leased and ((opts.lease and opts.lease ~= j.lease) or (opts.owner and opts.owner ~= j.owner)) then
        error("orrery.saga.journal: " .. url .. " is already open with other options", 2)
      end
    end
    return j
  end
  local err
  j, err = sj.open(url, opts, true, new_id)
  if not j then return nil, err end
  journals[url] = j
  return j
end

local function ev(inst, kind, step, attempt, data)
  inst.seq = inst.seq + 1
  return { seq = inst.seq, kind = kind, step = step, attempt = attempt, at = now(), data = data }
end

local function set_state(inst, state, result, err)
  return { state = state, result = result, error = err, at = now() }
end

-- Writes the batch; it is durable when this returns.
local function write(inst, ops)
  local ok, err = inst.journal:write(inst, ops)
  if not ok then
    if inst.lost then error("saga: " .. tostring(err) .. "; stopped driving it", 0) end
    error("saga: journal write failed: " .. tostring(err), 0)
  end
end

-- -- Definitions --

local Def = {}
Def.__index = Def

local recover_pass -- below, with recovery

local STEP_OPTS = { name = true, action = true, compensate = true, retry = true, timeout = true,
  breaker = true, limiter = true, pivot = true, recovery = true, compensate_retry = true }
local DEF_OPTS = { name = true, version = true, steps = true, journal = true, recover = true,
  recover_interval = true, on_compensation_failed = true, resume_versions = true }

local function encode(v, what)
  if v == nil then return nil end
  local s, err = json.try_encode(v)
  if not s then error(("saga: %s cannot be journaled: %s"):format(what, tostring(err)), 0) end
  return s
end

--- saga.define{ name, version, steps = {...}, journal } -> definition
function M.define(spec)
  local F = "orrery.saga.define"
  spec = check.opts(F, spec, DEF_OPTS, 3)
  if type(spec.name) ~= "string" or spec.name == "" then check.bad_opt(F, "name", "string", spec.name, 3) end
  local version = spec.version or 1
  if type(version) ~= "number" then check.bad_opt(F, "version", "number", version, 3) end
  if type(spec.steps) ~= "table" or #spec.steps == 0 then
    check.bad_opt(F, "steps", "non-empty array of steps", spec.steps, 3)
  end
  local steps, by_name, pivot = {}, {}, nil
  for i, s in ipairs(spec.steps) do
    if type(s) ~= "table" then error(("%s: step #%d is not a table"):format(F, i), 2) end
    for k in pairs(s) do
      if not STEP_OPTS[k] then error(("%s: step #%d: unknown option '%s'"):format(F, i, tostring(k)), 2) end
    end
    if type(s.name) ~= "string" or s.name == "" then
      error(("%s: step #%d: bad option 'name' (string expected, got %s)"):format(F, i, check.show(s.name)), 2)
    end
    if by_name[s.name] then error(("%s: step #%d: duplicate step name '%s'"):format(F, i, s.name), 2) end
    if not check.callable(s.action) then
      error(("%s: step '%s': bad option 'action' (function expected, got %s)"):format(F, s.name, type(s.action)), 2)
    end
    if s.compensate ~= nil and not check.callable(s.compensate) then
      error(("%s: step '%s': bad option 'compensate' (function expected, got %s)"):format(F, s.name, type(s.compensate)), 2)
    end
    if s.timeout ~= nil and (type(s.timeout) ~= "number" or s.timeout <= 0) then
      error(("%s: step '%s': bad option 'timeout' (positive number of seconds expected, got %s)"):format(F, s.name, check.show(s.timeout)), 2)
    end
    if s.recovery ~= nil and s.recovery ~= "retry" and s.recovery ~= "compensate" then
      error(("%s: step '%s': bad option 'recovery' (\"retry\" or \"compensate\" expected)"):format(F, s.name), 2)
    end
    local st = {
      index = i, name = s.name, action = s.action, compensate = s.compensate,
      timeout = s.timeout, breaker = s.breaker, limiter = s.limiter, recovery = s.recovery or "retry",
      retry = retry.new(s.retry or { max_attempts = 1 }),
      compensate_retry = retry.new(s.compensate_retry or
        { max_attempts = 5, initial = 0.05, max_interval = 2 }),
    }
    if s.pivot then
      if pivot then error(("%s: step '%s': only one step can be the pivot"):format(F, s.name), 2) end
      pivot = i
    end
    steps[i] = st
    by_name[s.name] = st
  end
  -- Steps after the pivot only move forward: retried until they succeed.
  if pivot then
    for i = pivot + 1, #steps do
      steps[i].forward = true
      if not (spec.steps[i].retry) then
        steps[i].retry = retry.new { max_attempts = math.huge, initial = 0.05, max_interval = 5 }
      end
    end
  end
  local j, err = spec.journal
  if type(j) == "string" then
    j, err = M.journal(j)
    if not j then error(F .. ": " .. tostring(err), 2) end
  elseif not is_journal(j) then
    check.bad_opt(F, "journal", "journal URL or saga.journal()", j, 3)
  end
  -- The versions whose instances this definition resumes: its own, and
  -- those listed in resume_versions (see Versions in docs/saga.md).
  local versions = { [version] = true }
  local rv = spec.resume_versions
  if rv ~= nil then
    if type(rv) ~= "table" then check.bad_opt(F, "resume_versions", "array of versions", rv, 3) end
    for _, v in ipairs(rv) do
      if type(v) ~= "number" then check.bad_opt(F, "resume_versions", "array of numbers", rv, 3) end
      versions[v] = true
    end
  end
  local def = setmetatable({ name = spec.name, version = version, steps = steps, by_name = by_name,
    live = {}, finished = {},
    pivot = pivot, journal = j, inflight = {}, on_compensation_failed = spec.on_compensation_failed,
    versions = versions, reported = {} }, Def)
  local every = spec.recover_interval
  if every == nil then every = 10 end
  if every ~= false and (type(every) ~= "number" or every <= 0) then
    check.bad_opt(F, "recover_interval", "positive number of seconds or false", every, 3)
  end
  defs[def] = true
  if spec.recover ~= false then
    -- A pass at once, then one every `every` seconds: it takes up the
    -- instances that `orrery saga retry|skip` handed back and, on a
    -- shared journal, those whose owner's lease ran out. A pass does not
    -- wait for the instances it took up.
    orrery.go(function()
      repeat
        local ok, e = pcall(recover_pass, def, false)
        if not ok then io.stderr:write("orrery.saga: recovery of '", def.name, "' failed: ", tostring(e), "\n") end
      until not every or not orrery.sleep(every)
    end)
  end
  return def
end

-- -- Running --

-- What saga.refuse adds to an action's nil, err.
local REFUSED = setmetatable({}, { __tostring = function() return "saga.refused" end })

--- saga.refuse(err) -> nil, err, <mark>: what an action returns when it
--- knows it did not take effect and will not on a retry (a business
--- refusal: "out of stock"). The step is not retried and not compensated.
function M.refuse(err)
  if err == nil then err = "refused" end
  return nil, err, REFUSED
end

-- Runs fn(sc) for a step under its timeout, breaker and limiter. Returns
-- ok, result_or_err, maybe_applied (the call may have taken effect: every
-- failure but a refusal), refused.
local function call_step(st, fn, sc)
  local ctx, cancel
  if st.timeout then ctx, cancel = context.with_timeout(st.timeout) else ctx = context.current() end
  -- A span per attempt when orrery.trace is on (docs/tracing.md).
  local tr, span = package.loaded["orrery.trace"], nil
  if tr and tr.enabled() then
    span, ctx = tr.start(ctx, (fn == st.compensate and "saga compensate " or "saga step ") .. st.name,
      { attributes = { ["saga.name"] = sc.saga, ["saga.id"] = sc.id, ["saga.step"] = st.name,
        ["saga.attempt"] = sc.attempt } })
  end
  sc.ctx = ctx
  local function body()
    local f = fn
    if st.breaker then
      local b = st.breaker
      local g = f
      f = function(x) return b:call(g, x) end
    end
    if st.limiter then
      local l = st.limiter
      local g = f
      f = function(x) return l:call(g, x) end
    end
    return f(sc)
  end
  local r = sched.pack(pcall(sched.with_ctx, ctx, body))
  if span then
    if not r[1] or r[2] == nil then span:fail(r[1] and r[3] or r[2]) end
    span:finish()
  end
  local timed_out = ctx.e == "timeout" or (ctx.err and ctx:err() == "timeout")
  if cancel then cancel() end
  if not r[1] then return false, r[2], true end
  if r[2] == nil then
    if r[4] == REFUSED and not timed_out then return false, r[3], false, true end
    return false, r[3] == nil and "failed" or r[3], true
  end
  if timed_out then return false, "timeout", true end
  return true, r[2], false
end

local function step_ctx(inst, st, attempt)
  return { id = inst.id, step = st.name, attempt = attempt, key = inst.id .. ":" .. st.name,
    idempotency_key = inst.id .. ":" .. st.name, input = inst.input, results = inst.results,
    saga = inst.def.name }
end

local function finish(inst, state, result, err)
  inst.state = state
  inst.result, inst.error = result, err
  local def = inst.def
  if def.live[inst.id] == inst then def.live[inst.id] = nil end
  if FINAL[state] then def.finished[state] = (def.finished[state] or 0) + 1 end
  local w = inst.def.inflight[inst.id]
  inst.def.inflight[inst.id] = nil
  if w then
    for _, ch in ipairs(w) do ch:close() end
  end
  if FINAL[state] or inst.lost then
    inst.journal:untrack(inst.id)
  else
    -- left for recovery: handed back at once on a shared journal
    inst.journal:release(inst.id)
  end
end

-- Compensates the steps in `todo` (indices, last first), whose
-- compensation events were planned in the batch that started this.
local function compensate(inst, todo, cause)
  local def = inst.def
  for _, i in ipairs(todo) do
    local st = def.steps[i]
    if st.compensate then
      local attempt = 0
      local ok, r = st.compensate_retry:call(function()
        attempt = attempt + 1
        local sc = step_ctx(inst, st, attempt)
        sc.error = cause
        sc.result = inst.results[st.name]
        local good, res = call_step(st, st.compensate, sc)
        if good then return true end
        return nil, res
      end)
      if not ok and context.current():err() then
        if inst.lost then error("saga: lease lost: " .. inst.lost .. "; stopped driving it", 0) end
        error("saga: " .. tostring(context.current():err()) .. "; the instance is left for recovery", 0)
      end
      if not ok then
        local e = tostring(r)
        write(inst, { ev(inst, "compensation_failed", st.name, attempt, encode({ error = e }, "error")),
          set_state(inst, "compensation_failed", nil, encode({ error = cause, compensation = e }, "error")) })
        finish(inst, "compensation_failed", nil, cause)
        if def.on_compensation_failed then pcall(def.on_compensation_failed, inst.id, st.name, e) end
        io.stderr:write(("orrery.saga: %s %s: compensation of '%s' failed: %s\n"):format(def.name, inst.id, st.name, e))
        return nil, cause
      end
    end
    write(inst, { ev(inst, "compensated", st.name, nil, nil) })
  end
  write(inst, { ev(inst, "finished", nil, nil, encode({ state = "compensated" }, "state")),
    set_state(inst, "compensated", nil, encode(cause, "error")) })
  finish(inst, "compensated", nil, cause)
  return nil, cause
end

-- Starts compensating: done (and possibly applied) steps before `upto`,
-- plus `upto` itself when `applied`.
local function begin_compensation(inst, upto, applied, cause, pre)
  local todo = {}
  local last = applied and upto or upto - 1
  for i = last, 1, -1 do
    if inst.done[i] or i == upto then todo[#todo + 1] = i end
  end
  local names = {}
  for k, i in ipairs(todo) do names[k] = inst.def.steps[i].name end
  local b = pre or {}
  b[#b + 1] = ev(inst, "compensating", nil, nil, encode({ error = cause, steps = names }, "plan"))
  b[#b + 1] = set_state(inst, "compensating", nil, encode(cause, "error"))
  write(inst, b)
  inst.state = "compensating"
  return compensate(inst, todo, cause)
end

-- Runs steps from index `from`; the start of attempt 1 of step `from` is
-- already durable.
local function forward(inst, from)
  local def, steps = inst.def, inst.def.steps
  local i = from
  while i <= #steps do
    local st = steps[i]
    local attempt = 0
    -- A step interrupted by a crash may have taken effect: whatever its
    -- later attempts say, it is compensated if the saga turns back.
    local applied = inst.interrupted == i
    -- A refusal ends the retries (steps after the pivot only move
    -- forward: there it is retried as any failure).
    local refusal
    local final = not def.pivot or i <= def.pivot
    local ok, r = st.retry:call(function()
      attempt = attempt + 1
      if attempt > 1 then write(inst, { ev(inst, "step_started", st.name, attempt, nil) }) end
      local good, res, maybe, refused = call_step(st, st.action, step_ctx(inst, st, attempt))
      if good then return res end
      if refused and final then
        refusal = tostring(res)
        return REFUSED
      end
      applied = applied or maybe
      if attempt >= 1 then
        -- the failure is recorded with the next start (or the end)
        inst.last_err = tostring(res)
      end
      return nil, tostring(res)
    end)
    if ok == REFUSED then ok, r = nil, refusal end
    if ok == nil and context.current():err() then
      if inst.lost then error("saga: lease lost: " .. inst.lost .. "; stopped driving it", 0) end
      -- a shutdown, not the step's failure: left as recorded, for recovery
      error("saga: " .. tostring(context.current():err()) .. "; the instance is left for recovery", 0)
    end
    if ok == nil then
      local cause = tostring(r or inst.last_err)
      local pre = { ev(inst, "step_failed", st.name, attempt, encode({ error = cause, applied = applied }, "error")) }
      return begin_compensation(inst, i, applied, cause, pre)
    end
    inst.results[st.name] = ok
    inst.done[i] = true
    local data = encode(ok, "the result of step '" .. st.name .. "'")
    if i == #steps then
      write(inst, { ev(inst, "step_done", st.name, attempt, data),
        ev(inst, "finished", nil, nil, encode({ state = "completed" }, "state")),
        set_state(inst, "completed", data, nil) })
      finish(inst, "completed", ok, nil)
      return ok
    end
    write(inst, { ev(inst, "step_done", st.name, attempt, data),
      ev(inst, "step_started", steps[i + 1].name, 1, nil) })
    i = i + 1
  end
end

local function new_inst(def, id, key, input, parent)
  local inst = { def = def, journal = def.journal, id = id, key = key, input = input, seq = 0,
    results = {}, done = {}, state = "running" }
  def.live[id] = inst
  -- The instance's own context: cancelled when its lease is lost, which
  -- ends the step's waits; the instance is then no longer driven here.
  local ctx, cancel = context.with_cancel(parent)
  inst.ctx = ctx
  inst.lose = function(why)
    inst.lost = why
    cancel()
  end
  def.journal:track(inst)
  return inst
end

local function run_inst(inst, from)
  local ok, r, e = pcall(sched.with_ctx, inst.ctx, forward, inst, from)
  if not ok then
    -- a journal failure: the instance stays as recorded, to be recovered
    io.stderr:write(("orrery.saga: %s %s: %s\n"):format(inst.def.name, inst.id, tostring(r)))
    finish(inst, "running", nil, tostring(r))
    return nil, tostring(r)
  end
  return r, e
end

-- Whether a recorded input (JSON text) is the input given now. Text
-- equality is the quick answer; otherwise both are compared with their
-- keys sorted, since a table's member order (and so its JSON text) can
-- differ between processes: LuaJIT seeds its string hashes per process.
local function same(recorded, inp)
  if recorded == inp then return true end
  if type(recorded) ~= "string" or type(inp) ~= "string" then return false end
  local a, b = json.decode(recorded), json.decode(inp)
  if a == nil or b == nil then return false end
  local sa = json.try_encode(a, { sort_keys = true })
  return sa ~= nil and sa == json.try_encode(b, { sort_keys = true })
end

-- Creates the instance (or finds the one with its key). Returns inst, nil
-- for a new one; nil, row for an existing one; nil, nil, err.
local function create(def, input, key, parent)
  local id = new_id()
  local inp = encode(input, "the saga input")
  local inst = new_inst(def, id, key, input, parent)
  local ok, err = def.journal:insert(inst, { name = def.name, version = def.version, input = inp, at = now() }, {
    ev(inst, "started", nil, nil, inp),
    ev(inst, "step_started", def.steps[1].name, 1, nil),
  })
  if ok then return inst end
  def.journal:untrack(id)
  if key and err == "duplicate" then
    local row = def.journal:by_key(key)
    if row then
      if row.name ~= def.name or not same(row.input, inp) then return nil, nil, "key_conflict" end
      return nil, row
    end
  end
  return nil, nil, err
end

local function wait_existing(def, row)
  while not FINAL[row.state] do
    local w = def.inflight[row.id]
    if not w then break end -- running in another process, or recovering later
    local ch = orrery.chan()
    w[#w + 1] = ch
    ch:recv()
    row = def.journal:row(row.id)
  end
  if row.state == "completed" then return row.result and json.decode(row.result) end
  if FINAL[row.state] then return nil, row.error and json.decode(row.error) or row.state end
  return nil, row.state, row.id
end

local RUN_OPTS = { key = true }

--- def:run(input [, { key }]) -> result | nil, err
function Def:run(input, opts)
  if getmetatable(self) ~= Def then error("orrery.saga.run: bad self (call it as def:run(...))", 2) end
  opts = check.opts("orrery.saga.run", opts, RUN_OPTS, 3, 2)
  local key = opts.key
  if key ~= nil and type(key) ~= "string" then check.bad_opt("orrery.saga.run", "key", "string", key, 3) end
  local inst, row, err = create(self, input, key)
  if not inst then
    if row then return wait_existing(self, row) end
    return nil, err
  end
  self.inflight[inst.id] = {}
  return run_inst(inst, 1)
end

--- def:start(input [, { key }]) -> id | nil, err
function Def:start(input, opts)
  if getmetatable(self) ~= Def then error("orrery.saga.start: bad self (call it as def:start(...))", 2) end
  opts = check.opts("orrery.saga.start", opts, RUN_OPTS, 3, 2)
  local key = opts.key
  if key ~= nil and type(key) ~= "string" then check.bad_opt("orrery.saga.start", "key", "string", key, 3) end
  -- Under the root context: the instance outlives the caller (a request
  -- handler whose context ends with its response).
  local inst, row, err = create(self, input, key, sched.root)
  if not inst then
    if row then return row.id end
    return nil, err
  end
  self.inflight[inst.id] = {}
  sched.spawn(sched.root, run_inst, inst, 1)
  return inst.id
end

--- def:wait(id) -> as def:run's result, once the instance has finished
function Def:wait(id)
  local row, err = self.journal:find(id)
  if not row then return nil, err or "not_found" end
  return wait_existing(self, row)
end

--- def:stats() -> { name, version, running, compensating, completed,
--- compensated, compensation_failed }: the instances this process drives
--- now, by state, and those it finished since it started, by end state.
function Def:stats()
  if getmetatable(self) ~= Def then error("orrery.saga.stats: bad self (call it as def:stats())", 2) end
  local st = { name = self.name, version = self.version, running = 0, compensating = 0 }
  for _, inst in pairs(self.live) do
    if st[inst.state] then st[inst.state] = st[inst.state] + 1 end
  end
  for _, k in ipairs { "completed", "compensated", "compensation_failed" } do st[k] = self.finished[k] or 0 end
  return st
end

--- def:get(key_or_id) -> { id, key, state, input, result, error, history } | nil, "not_found"
function Def:get(key_or_id)
  return self.journal:get(key_or_id)
end

-- The steps an instance's history names that this definition lacks
-- (an instance of another version): nil when every one exists.
local function missing_step(def, evs)
  for _, e in ipairs(evs) do
    if e.step and not def.by_name[e.step] then return e.step end
    if e.kind == "compensating" and e.data then
      local d = json.decode(e.data)
      for _, name in ipairs(d.steps or {}) do
        if not def.by_name[name] then return name end
      end
    end
  end
end

-- Rebuilds an instance from its journal and carries it on. Returns
-- "skipped", reason when the definition cannot resume it.
local function resume(def, row)
  local evs = def.journal:events(row.id)
  if row.version ~= def.version then
    local gone = missing_step(def, evs)
    if gone then
      return "skipped", ("recorded under version %s with step '%s', which version %s does not define")
        :format(tostring(row.version), gone, tostring(def.version))
    end
  end
  local inst = new_inst(def, row.id, row.key, row.input and json.decode(row.input))
  inst.seq = #evs > 0 and evs[#evs].seq or 0
  local started, plan, comp_done, cause = {}, nil, {}, nil
  for _, e in ipairs(evs) do
    local st = e.step and def.by_name[e.step]
    if e.kind == "step_started" and st then started[st.index] = true
    elseif e.kind == "step_done" and st then
      inst.done[st.index] = true
      inst.results[st.name] = e.data and json.decode(e.data)
    elseif e.kind == "compensating" then
      local d = json.decode(e.data)
      plan, cause = d.steps, d.error
    elseif e.kind == "compensated" and st then comp_done[st.name] = true
    elseif e.kind == "finished" then
      def.journal:untrack(inst.id)
      return "finished"
    end
  end
  def.inflight[inst.id] = def.inflight[inst.id] or {}
  return sched.with_ctx(inst.ctx, function()
    if plan then
      inst.state = "compensating"
      local todo = {}
      for _, name in ipairs(plan) do
        if not comp_done[name] and def.by_name[name] then todo[#todo + 1] = def.by_name[name].index end
      end
      local ok, e = pcall(function()
        write(inst, { ev(inst, "recovered", nil, nil, encode({ state = "compensating" }, "state")) })
        return compensate(inst, todo, cause)
      end)
      if not ok then
        io.stderr:write(("orrery.saga: %s %s: %s\n"):format(def.name, inst.id, tostring(e)))
        finish(inst, "compensating", nil, tostring(e))
      end
      return ok, e
    end
    -- Running: the first step not done.
    local next_i = 1
    while inst.done[next_i] do next_i = next_i + 1 end
    if next_i > #def.steps then
      -- every step done but the end not recorded
      local last = def.steps[#def.steps]
      local ok, e = pcall(write, inst, { ev(inst, "finished", nil, nil, encode({ state = "completed" }, "state")),
        set_state(inst, "completed", encode(inst.results[last.name], "result"), nil) })
      if not ok then
        finish(inst, "running", nil, tostring(e))
        return false, e
      end
      finish(inst, "completed", inst.results[last.name])
      return true
    end
    local st = def.steps[next_i]
    if started[next_i] and st.recovery == "compensate" and not st.forward then
      local ok, e = pcall(begin_compensation, inst, next_i, true, "recovered: step '" .. st.name .. "' was interrupted",
        { ev(inst, "recovered", nil, nil, encode({ state = "running" }, "state")) })
      if not ok then
        io.stderr:write(("orrery.saga: %s %s: %s\n"):format(def.name, inst.id, tostring(e)))
        finish(inst, "running", nil, tostring(e))
      end
      return ok, e
    end
    if started[next_i] then inst.interrupted = next_i end
    local ok, e = pcall(write, inst, { ev(inst, "recovered", nil, nil, encode({ state = "running" }, "state")),
      ev(inst, "step_started", st.name, 1, nil) })
    if not ok then
      io.stderr:write(("orrery.saga: %s %s: %s\n"):format(def.name, inst.id, tostring(e)))
      finish(inst, "running", nil, tostring(e))
      return false, e
    end
    return run_inst(inst, next_i)
  end)
end

-- One recovery pass: claims this saga's instances that recovery may take
-- up (on PostgreSQL: unowned or with an expired lease; every version this
-- definition resumes) and resumes each in a coroutine of its own; waits
-- for them when `wait`. Returns n, skipped.
recover_pass = function(self, wait)
  local j = self.journal
  local n, outs, skipped = 0, {}, {}
  local function report(id, version, reason)
    skipped[#skipped + 1] = { id = id, version = version, reason = reason }
    if not self.reported[id] then
      self.reported[id] = true
      io.stderr:write(("orrery.saga: %s %s: not resumed: %s\n"):format(self.name, id, reason))
    end
  end
  while true do
    local rows = j:claim(self.name, self.versions)
    local fresh = 0
    for _, row in ipairs(rows) do
      if not self.inflight[row.id] then
        fresh = fresh + 1
        self.inflight[row.id] = {}
        local ch = orrery.chan(1)
        outs[#outs + 1] = ch
        -- Under the root context, as def:start: the instance outlives
        -- the caller of recover().
        sched.spawn(sched.root, function()
          local ok, e, why = pcall(resume, self, row)
          if ok and e == "skipped" then
            self.inflight[row.id] = nil
            j:release(row.id)
            report(row.id, row.version, why)
          else
            n = n + 1
            if not ok then io.stderr:write("orrery.saga: recovering ", row.id, ": ", tostring(e), "\n") end
          end
          if self.inflight[row.id] and e == "finished" then self.inflight[row.id] = nil end
          ch:send(true)
        end)
      end
    end
    -- SQLite returns every live instance at once; PostgreSQL claims a
    -- bounded number per statement.
    if j.kind ~= "pg" or #rows < 256 or fresh == 0 then break end
  end
  for _, r in ipairs(j:other_versions(self.name, self.versions)) do
    report(r.id, r.version, ("recorded under version %s; this is version %s"):format(tostring(r.version), tostring(self.version)))
  end
  if not wait then return #outs, skipped end
  for _, ch in ipairs(outs) do ch:recv() end
  return n, skipped
end

--- def:recover() -> n, skipped: takes up this saga's unfinished instances
--- and waits until they have run; n is how many were taken up, skipped
--- the instances left in place ({ id, version, reason }). Safe to run
--- twice: an instance already running in this process (or, on a shared
--- journal, owned by a live process) is left alone.
function Def:recover()
  if getmetatable(self) ~= Def then error("orrery.saga.recover: bad self (call it as def:recover())", 2) end
  return recover_pass(self, true)
end

--- def:retry(id) -> result | nil, err: runs the compensations still owed
--- by an instance in compensation_failed again.
function Def:retry(id)
  local row, err = self.journal:find(id)
  if not row then return nil, err or "not_found" end
  if row.state ~= "compensation_failed" or not self.journal:reopen(row.id) then return nil, "not_failed" end
  row.state = "compensating"
  self.inflight[row.id] = {}
  local ok, r, why = pcall(resume, self, row)
  if not ok or r == "skipped" then
    -- not resumed here: compensating, for a process of its version
    self.inflight[row.id] = nil
    self.journal:release(row.id)
    return nil, ok and why or r
  end
  return wait_existing(self, self.journal:row(row.id))
end

return M
