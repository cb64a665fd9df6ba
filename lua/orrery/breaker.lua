-- SPDX-License-Identifier: MIT
-- orrery.breaker -- circuit breakers with the semantics of sony/gobreaker v2.
--
-- A breaker is a state machine (closed, half-open, open) over a window of
-- counts. Transitions are evaluated lazily whenever the breaker is read or
-- used; nothing runs in the background. Every state change starts a new
-- generation: the counts are cleared and results of calls admitted in an
-- earlier generation are ignored. With bucket_period the closed-state
-- window rolls bucket by bucket instead of being cleared at each interval.
--
-- The hot path (call/allow on a closed breaker) is plain table arithmetic
-- and one pcall, so loops over it stay JIT-compiled. The clock is read only
-- when a transition may depend on it.
local orrery = require "orrery"
local check = require "orrery.check"

local type, error, pcall, getmetatable, setmetatable, tostring =
  type, error, pcall, getmetatable, setmetatable, tostring
local floor, ceil, min = math.floor, math.ceil, math.min

local INF = math.huge
local CLOSED, HALF_OPEN, OPEN, FORCED_OPEN, DISABLED = 0, 1, 2, 3, 4
local NAMES = { [0] = "closed", "half-open", "open", "forced-open", "disabled" }
local MAX_BUCKETS = 10000

local M = { MAX_BUCKETS = MAX_BUCKETS }

-- Every live breaker, for metrics and the console (weak: a breaker that
-- is no longer referenced elsewhere disappears).
local live, list = check.registry()

local Breaker = {}
Breaker.__index = Breaker
M.Breaker = Breaker

-- -- Option checking --

local callable = check.callable

local function opt_number(fname, opts, key, strict)
  local v = check.number_opt(fname, opts, key, { strict = strict, inf = true,
    what = strict and "positive number" or "non-negative number" }, 4)
  return v -- not a tail call, which would drop a level from the error's
end

local KNOWN = {
  name = true, max_requests = true, interval = true, bucket_period = true, timeout = true,
  ready_to_trip = true, on_state_change = true, is_successful = true, is_excluded = true,
  clock = true, slow_call_duration = true,
}

-- -- Counts --
--
-- The window's totals live in the breaker's c_* fields. A rolling window
-- (nb >= 2 buckets) also keeps per-bucket counts in the b_* arrays,
-- indexed age % nb + 1, so that the oldest bucket can be subtracted when
-- the window moves on. A fixed window (nb == 1) needs no buckets.

local FIELDS = { "req", "ts", "tf", "te", "cs", "cf", "slow" }

local function clear_counts(self)
  self.c_req, self.c_ts, self.c_tf, self.c_te, self.c_cs, self.c_cf, self.c_slow = 0, 0, 0, 0, 0, 0, 0
  self.age = 0
  local bl = self.blist
  if bl then
    for k = 1, #bl do
      local b = bl[k]
      for i = 1, self.nb do b[i] = 0 end
    end
  end
end

local function counts_copy(self)
  return {
    requests = self.c_req,
    total_successes = self.c_ts,
    total_failures = self.c_tf,
    total_exclusions = self.c_te,
    consecutive_successes = self.c_cs,
    consecutive_failures = self.c_cf,
    slow_calls = self.c_slow,
  }
end

local function on_request(self)
  self.c_req = self.c_req + 1
  local nb = self.nb
  if nb > 1 then
    local i = self.age % nb + 1
    self.b_req[i] = self.b_req[i] + 1
  end
end

-- in_window(self, age) -> bucket index (or 0 for a fixed window) when a
-- result of a call admitted at `age` still belongs to the window, else nil.
local function in_window(self, age)
  local cur, nb = self.age, self.nb
  if age > cur or cur - age >= nb then return nil end
  if nb > 1 then return age % nb + 1 end
  return 0
end

local function on_success(self, age, slow)
  local i = in_window(self, age)
  if not i then return end
  self.c_ts = self.c_ts + 1
  self.c_cs = self.c_cs + 1
  self.c_cf = 0
  if slow then self.c_slow = self.c_slow + 1 end
  if i > 0 then
    self.b_ts[i] = self.b_ts[i] + 1
    self.b_cs[i] = self.b_cs[i] + 1
    self.b_cf[i] = 0
    if slow then self.b_slow[i] = self.b_slow[i] + 1 end
  end
end

local function on_failure(self, age, slow)
  local i = in_window(self, age)
  if not i then return end
  self.c_tf = self.c_tf + 1
  self.c_cf = self.c_cf + 1
  self.c_cs = 0
  if slow then self.c_slow = self.c_slow + 1 end
  if i > 0 then
    self.b_tf[i] = self.b_tf[i] + 1
    self.b_cf[i] = self.b_cf[i] + 1
    self.b_cs[i] = 0
    if slow then self.b_slow[i] = self.b_slow[i] + 1 end
  end
end

local function on_exclusion(self, age)
  local i = in_window(self, age)
  if not i then return end
  self.c_te = self.c_te + 1
  if i > 0 then self.b_te[i] = self.b_te[i] + 1 end
end

-- Removes bucket i (the oldest) from the window totals. A consecutive run
-- is shortened only when it reaches back into that bucket, i.e. when it
-- equals the bucket's trailing run plus every later bucket's total.
local function subtract(self, i)
  local nb = self.nb
  local bcs, bcf = self.b_cs[i], self.b_cf[i]
  local ts, tf = bcs, bcf
  local b_ts, b_tf = self.b_ts, self.b_tf
  for j = 1, nb do
    if j ~= i then
      ts = ts + b_ts[j]
      tf = tf + b_tf[j]
    end
  end
  if self.c_cs == ts then self.c_cs = self.c_cs - min(self.c_cs, bcs) end
  if self.c_cf == tf then self.c_cf = self.c_cf - min(self.c_cf, bcf) end
  self.c_req = self.c_req - min(self.c_req, self.b_req[i])
  self.c_ts = self.c_ts - min(self.c_ts, b_ts[i])
  self.c_tf = self.c_tf - min(self.c_tf, b_tf[i])
  self.c_te = self.c_te - min(self.c_te, self.b_te[i])
  self.c_slow = self.c_slow - min(self.c_slow, self.b_slow[i])
  local bl = self.blist
  for k = 1, #bl do bl[k][i] = 0 end
end

-- Moves the rolling window forward to bucket age `a`.
local function grow(self, a)
  local cur = self.age
  if a <= cur then return end
  if a - cur >= self.nb then
    clear_counts(self)
    self.age = a
    return
  end
  for _ = 1, a - cur do
    self.age = self.age + 1
    subtract(self, self.age % self.nb + 1)
  end
end

-- -- State machine --

local function new_generation(self, now)
  self.generation = self.generation + 1
  self.start = now
  clear_counts(self)
  local st = self.st
  if st == CLOSED then
    if self.interval == 0 or self.nb > 1 then
      self.expiry = INF
    else
      self.expiry = now + self.interval
    end
  elseif st == OPEN then
    self.expiry = now + self.timeout
  else
    self.expiry = INF
  end
end

local function set_state(self, to, now)
  local from = self.st
  if from == to then return end
  self.st = to
  new_generation(self, now)
  self.s_changes = self.s_changes + 1
  self.since = now
  local cb = self.on_state_change
  if cb then cb(self.name, NAMES[from], NAMES[to], self) end
end

-- Applies the transitions that depend on time; returns the clock reading
-- when it needed one (nil otherwise, so the closed fast path skips it).
local function refresh(self)
  local st = self.st
  if st == CLOSED then
    local exp = self.expiry
    if exp ~= INF then
      local now = self.clock()
      if exp < now then new_generation(self, now) end
      return now
    elseif self.nb > 1 then
      local now = self.clock()
      local a = floor((now - self.start) / self.bucket_period)
      if a > 0 then grow(self, a) end
      return now
    end
  elseif st == OPEN then
    local now = self.clock()
    if self.expiry < now then set_state(self, HALF_OPEN, now) end
    return now
  end
  return nil
end

local function should_trip(self)
  local rt = self.ready_to_trip
  if rt then return rt(counts_copy(self)) end
  return self.c_cf > 5
end

-- before(self) -> generation, age; or nil, "open" | "too_many_requests".
-- A disabled breaker admits everything with generation -1 (not counted).
local function before(self)
  refresh(self)
  local st = self.st
  if st == CLOSED then
    on_request(self)
    self.s_calls = self.s_calls + 1
    return self.generation, self.age
  elseif st == HALF_OPEN then
    local valid = self.c_req - self.c_te
    if valid >= self.max_requests then
      self.s_rej_many = self.s_rej_many + 1
      return nil, "too_many_requests"
    end
    on_request(self)
    self.s_calls = self.s_calls + 1
    return self.generation, self.age
  elseif st == DISABLED then
    self.s_calls = self.s_calls + 1
    return -1, 0
  end
  self.s_rej_open = self.s_rej_open + 1
  return nil, "open"
end

-- record(self, gen, age, err, t0): the outcome of a call admitted with
-- (gen, age); err is nil for a plain success. t0 is the clock reading at
-- admission when slow calls are measured, false otherwise.
local function record(self, gen, age, err, t0)
  if gen < 0 then return end
  local now = refresh(self)
  if self.generation ~= gen then
    self.s_ignored = self.s_ignored + 1
    return
  end
  local ex = self.is_excluded
  if ex and ex(err) then
    self.s_excl = self.s_excl + 1
    on_exclusion(self, age)
    return
  end
  local success
  local is = self.is_successful
  if is then success = is(err) else success = err == nil end
  local slow = false
  if t0 then
    now = now or self.clock()
    slow = now - t0 > self.slow
    if slow then self.s_slow = self.s_slow + 1 end
  end
  local st = self.st
  if success then
    self.s_succ = self.s_succ + 1
    if st == CLOSED then
      on_success(self, age, slow)
      if slow and should_trip(self) then set_state(self, OPEN, now or self.clock()) end
    elseif st == HALF_OPEN then
      on_success(self, age, slow)
      if self.c_cs >= self.max_requests then set_state(self, CLOSED, now or self.clock()) end
    end
  else
    self.s_fail = self.s_fail + 1
    if st == CLOSED then
      on_failure(self, age, slow)
      if should_trip(self) then set_state(self, OPEN, now or self.clock()) end
    elseif st == HALF_OPEN then
      set_state(self, OPEN, now or self.clock())
    end
  end
end

-- -- Construction --

-- new{ name, max_requests, interval, bucket_period, timeout, ready_to_trip,
--      on_state_change, is_successful, is_excluded, slow_call_duration, clock }
function M.new(opts)
  local F = "orrery.breaker.new"
  opts = check.opts(F, opts, KNOWN, 3)
  local name = check.type_opt(F, opts, "name", "string", 3)
  local max_requests = opt_number(F, opts, "max_requests") or 0
  if max_requests % 1 ~= 0 then
    error(F .. ": bad option 'max_requests' (integer expected, got " .. max_requests .. ")", 2)
  end
  if max_requests == 0 then max_requests = 1 end
  local interval = opt_number(F, opts, "interval") or 0
  local bucket_period = opt_number(F, opts, "bucket_period") or 0
  local timeout = opt_number(F, opts, "timeout") or 0
  if timeout == 0 then timeout = 60 end
  local slow = opt_number(F, opts, "slow_call_duration", true) or false
  local clock = check.func_opt(F, opts, "clock", 3) or orrery.now

  -- As in gobreaker: no interval means one bucket that is never cleared;
  -- a bucket period rounds the interval up to a whole number of buckets.
  if interval == INF then interval = 0 end -- never cleared either way
  local nb = 1
  if interval > 0 and bucket_period > 0 then
    nb = ceil(interval / bucket_period - 1e-9)
    if nb < 1 then nb = 1 end
    if nb > MAX_BUCKETS then
      error(("%s: bad option 'bucket_period' (interval/bucket_period is %d buckets, at most %d)")
        :format(F, nb, MAX_BUCKETS), 2)
    end
    interval = nb * bucket_period
  else
    bucket_period = interval
  end

  local self = setmetatable({
    name = name or "breaker",
    max_requests = max_requests,
    interval = interval,
    bucket_period = bucket_period,
    nb = nb,
    timeout = timeout,
    ready_to_trip = check.func_opt(F, opts, "ready_to_trip", 3) or false,
    on_state_change = check.func_opt(F, opts, "on_state_change", 3) or false,
    is_successful = check.func_opt(F, opts, "is_successful", 3) or false,
    is_excluded = check.func_opt(F, opts, "is_excluded", 3) or false,
    slow = slow,
    clock = clock,
    st = CLOSED,
    generation = 0,
    start = 0,
    expiry = INF,
    since = 0,
    age = 0,
    c_req = 0, c_ts = 0, c_tf = 0, c_te = 0, c_cs = 0, c_cf = 0, c_slow = 0,
    s_calls = 0, s_succ = 0, s_fail = 0, s_excl = 0, s_slow = 0,
    s_rej_open = 0, s_rej_many = 0, s_ignored = 0, s_changes = 0,
  }, Breaker)
  if nb > 1 then
    local bl = {}
    for k, f in ipairs(FIELDS) do
      bl[k] = {}
      self["b_" .. f] = bl[k]
    end
    self.blist = bl
  end
  local now = clock()
  if type(now) ~= "number" then
    error(F .. ": bad option 'clock' (it returned " .. type(now) .. ", number expected)", 2)
  end
  new_generation(self, now)
  self.since = now
  live[self] = true
  return self
end

-- list() -> every live breaker, sorted by name.
M.list = list

-- -- Methods --

local function check_self(self, fname)
  if getmetatable(self) ~= Breaker then
    error(("orrery.breaker:%s: bad self (breaker expected, got %s; use cb:%s(...))")
      :format(fname, type(self), fname), 3)
  end
end

local function finish(self, gen, age, t0, ok, ...)
  if ok then
    local r1, r2 = ...
    if not r1 and r2 ~= nil then
      record(self, gen, age, r2, t0)
    else
      record(self, gen, age, nil, t0)
    end
    return ...
  end
  local e = ...
  record(self, gen, age, e == nil and "error" or e, t0)
  error(e, 0)
end

-- cb:call(fn, ...) -> fn's results; or nil, "open" | "too_many_requests"
-- when rejected. fn fails when it raises (re-raised after counting) or
-- returns nil/false plus a non-nil error value (returned as is).
function Breaker:call(fn, ...)
  if getmetatable(self) ~= Breaker then check_self(self, "call") end
  if type(fn) ~= "function" and not callable(fn) then
    error("orrery.breaker:call: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  local gen, age = before(self)
  if not gen then return nil, age end
  if self.slow then return finish(self, gen, age, self.clock(), pcall(fn, ...)) end
  return finish(self, gen, age, false, pcall(fn, ...))
end

-- cb:allow() -> done; or nil, "open" | "too_many_requests". done(ok [, err])
-- reports the outcome exactly once: ok true is a success; otherwise err
-- (default "failed") goes through is_excluded and is_successful.
function Breaker:allow()
  check_self(self, "allow")
  local gen, age = before(self)
  if not gen then return nil, age end
  local t0 = self.slow and self.clock() or false
  local used = false
  return function(ok, err)
    if used then error("orrery.breaker:allow: done called twice", 2) end
    used = true
    if ok then err = nil elseif err == nil then err = "failed" end
    record(self, gen, age, err, t0)
  end
end

function Breaker:state()
  check_self(self, "state")
  refresh(self)
  return NAMES[self.st]
end

-- cb:counts() -> { requests, total_successes, total_failures,
-- total_exclusions, consecutive_successes, consecutive_failures,
-- slow_calls }: the current window, after pending transitions.
function Breaker:counts()
  check_self(self, "counts")
  refresh(self)
  return counts_copy(self)
end

-- cb:stats() -> lifetime counters (never cleared) plus state and counts.
function Breaker:stats()
  check_self(self, "stats")
  refresh(self)
  return {
    name = self.name,
    state = NAMES[self.st],
    generation = self.generation,
    since = self.since,
    counts = counts_copy(self),
    calls = self.s_calls,
    successes = self.s_succ,
    failures = self.s_fail,
    exclusions = self.s_excl,
    slow_calls = self.s_slow,
    rejected = self.s_rej_open + self.s_rej_many,
    rejected_open = self.s_rej_open,
    rejected_too_many = self.s_rej_many,
    ignored = self.s_ignored,
    state_changes = self.s_changes,
  }
end

-- Manual overrides. Each is a state change: a new generation, and
-- on_state_change is called.
local function override(self, fname, to)
  check_self(self, fname)
  local now = self.clock()
  if to == CLOSED and self.st == CLOSED then
    new_generation(self, now)
  else
    set_state(self, to, now)
  end
end

function Breaker:trip() override(self, "trip", OPEN) end
function Breaker:force_open() override(self, "force_open", FORCED_OPEN) end
function Breaker:disable() override(self, "disable", DISABLED) end
function Breaker:reset() override(self, "reset", CLOSED) end

function Breaker:__tostring()
  return ("breaker %q (%s)"):format(self.name, NAMES[self.st])
end

-- -- ready_to_trip helpers (resilience4j style) --

local RATE_OPTS = { threshold = true, min_calls = true }

local function rate_opts(fname, opts, default_threshold)
  opts = check.opts(fname, opts, RATE_OPTS, 4)
  local th = check.number_opt(fname, opts, "threshold",
    { strict = true, max = 1, what = "number in (0, 1]" }, 4) or default_threshold
  local mc = check.number_opt(fname, opts, "min_calls",
    { min = 1, int = true, what = "positive integer" }, 4) or 100
  return th, mc
end

-- failure_rate{ threshold = 0.5, min_calls = 100 }: trips once at least
-- min_calls calls completed in the window and failures/calls >= threshold.
function M.failure_rate(opts)
  local th, mc = rate_opts("orrery.breaker.failure_rate", opts, 0.5)
  return function(c)
    local calls = c.total_successes + c.total_failures
    return calls >= mc and c.total_failures >= th * calls
  end
end

-- slow_call_rate{ threshold = 1, min_calls = 100 }: the same over calls
-- slower than the breaker's slow_call_duration.
function M.slow_call_rate(opts)
  local th, mc = rate_opts("orrery.breaker.slow_call_rate", opts, 1)
  return function(c)
    local calls = c.total_successes + c.total_failures
    return calls >= mc and c.slow_calls >= th * calls
  end
end

-- consecutive_failures(n): trips after n consecutive failures.
function M.consecutive_failures(n)
  if type(n) ~= "number" or n ~= n or n < 1 or n % 1 ~= 0 then
    error("orrery.breaker.consecutive_failures: bad argument #1 (positive integer expected, got "
      .. (type(n) == "number" and tostring(n) or type(n)) .. ")", 2)
  end
  return function(c) return c.consecutive_failures >= n end
end

-- any(f1, f2, ...): trips when any of the predicates does.
function M.any(...)
  local fs = { ... }
  if #fs == 0 then error("orrery.breaker.any: bad argument #1 (function expected, got no value)", 2) end
  for i = 1, select("#", ...) do
    if not callable(fs[i]) then
      error(("orrery.breaker.any: bad argument #%d (function expected, got %s)"):format(i, type(fs[i])), 2)
    end
  end
  return function(c)
    for i = 1, #fs do
      if fs[i](c) then return true end
    end
    return false
  end
end

M.STATES = { closed = "closed", half_open = "half-open", open = "open",
  forced_open = "forced-open", disabled = "disabled" }

return M
