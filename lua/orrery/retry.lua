-- SPDX-License-Identifier: MIT
-- orrery.retry -- retries with exponential backoff and jitter, and a
-- timeout combinator over contexts.
--
-- A failure is an error raised by fn or fn returning nil/false plus a
-- non-nil error value, as for orrery.breaker and orrery.group. Backoff
-- sleeps park the coroutine and end early when its context does, which
-- stops the retries at once.
local orrery = require "orrery"
local check = require "orrery.check"
local context = require "orrery.context"

local type, error, pcall, select, getmetatable, setmetatable, tostring, unpack =
  type, error, pcall, select, getmetatable, setmetatable, tostring, unpack
local random, min = math.random, math.min

local INF = math.huge

local M = {}

-- Every live policy made with retry.new, for metrics and the console.
local live
-- list() -> every live retry policy, sorted by name.
live, M.list = check.registry()

local callable, show = check.callable, check.show

local function pack(...) return { n = select("#", ...), ... } end

-- -- Timeout combinator --

local function timed(ctx, cancel, ok, ...)
  local expired = ctx:err()
  cancel()
  if not ok then error((...), 0) end
  if expired then
    local r1, r2 = ...
    if r1 == nil or (r1 == false and r2 ~= nil) then return nil, expired end
  end
  return ...
end

-- timeout(s, fn, ...) -> fn's results, or nil, "timeout". Runs fn under a
-- child context that expires s seconds from now: every wait inside fn, and
-- in coroutines it starts, ends with nil, "timeout" at the deadline, and
-- the context is cancelled when fn returns, which also stops what fn left
-- running. When the deadline passed and fn failed (returned nil or
-- nil/false plus an error), the result is nil, "timeout" (or "canceled" if
-- an enclosing context was cancelled); a result fn produced anyway is kept.
function M.timeout(s, fn, ...)
  if type(s) ~= "number" or s ~= s or s < 0 then
    error("orrery.retry.timeout: bad argument #1 (non-negative seconds expected, got " .. show(s) .. ")", 2)
  end
  if not callable(fn) then
    error("orrery.retry.timeout: bad argument #2 (function expected, got " .. type(fn) .. ")", 2)
  end
  local ctx, cancel = context.with_timeout(s)
  return timed(ctx, cancel, pcall(orrery.with_context, ctx, fn, ...))
end

-- -- Backoff --

local JITTER = { full = true, equal = true, decorrelated = true, none = true }

local KNOWN = {
  max_attempts = true, initial = true, multiplier = true, max_interval = true, jitter = true,
  retry_on = true, on_retry = true, random = true, sleep = true, attempt_timeout = true,
  stats = true, name = true,
}

local Policy = {}
Policy.__index = Policy
M.Policy = Policy

local function num_opt(fname, opts, key, default, lo, how)
  local v = opts[key]
  if v == nil then return default end
  local ok = type(v) == "number" and v == v and v >= lo
  if ok and how.strict and v == lo then ok = false end
  if ok and how.int and v ~= INF and v % 1 ~= 0 then ok = false end
  if ok and not how.inf and v == INF then ok = false end
  if not ok then
    error(("%s: bad option '%s' (%s expected, got %s)"):format(fname, key, how.what, show(v)), 4)
  end
  return v
end

local function build(fname, opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error(fname .. ": bad options (table expected, got " .. type(opts) .. ")", 3)
  end
  for k in pairs(opts) do
    if not KNOWN[k] then error(("%s: unknown option '%s'"):format(fname, tostring(k)), 3) end
  end
  local jitter = opts.jitter
  if jitter == nil then jitter = "full" end
  if not JITTER[jitter] then
    error(("%s: bad option 'jitter' (\"full\", \"equal\", \"decorrelated\" or \"none\" expected, got %s)")
      :format(fname, type(jitter) == "string" and ("%q"):format(jitter) or type(jitter)), 3)
  end
  local stats = opts.stats
  if stats ~= nil and type(stats) ~= "table" then
    error(fname .. ": bad option 'stats' (table expected, got " .. type(stats) .. ")", 3)
  end
  local name = opts.name
  if name ~= nil and type(name) ~= "string" then
    error(fname .. ": bad option 'name' (string expected, got " .. type(name) .. ")", 3)
  end
  local p = setmetatable({
    name = name or "retry",
    max_attempts = num_opt(fname, opts, "max_attempts", 3, 1,
      { int = true, inf = true, what = "positive integer" }),
    initial = num_opt(fname, opts, "initial", 0.1, 0, { what = "non-negative number of seconds" }),
    multiplier = num_opt(fname, opts, "multiplier", 2, 1, { what = "number >= 1" }),
    max_interval = num_opt(fname, opts, "max_interval", 10, 0,
      { inf = true, what = "non-negative number of seconds" }),
    attempt_timeout = num_opt(fname, opts, "attempt_timeout", false, 0,
      { strict = true, what = "positive number of seconds" }),
    jitter = jitter,
    retry_on = check.func_opt(fname, opts, "retry_on", 4) or false,
    on_retry = check.func_opt(fname, opts, "on_retry", 4) or false,
    random = check.func_opt(fname, opts, "random", 4) or random,
    sleep = check.func_opt(fname, opts, "sleep", 4) or orrery.sleep,
    st = stats or {},
  }, Policy)
  local st = p.st
  for _, k in ipairs { "calls", "attempts", "retries", "successes", "failures", "canceled" } do
    if st[k] == nil then st[k] = 0 end
  end
  return p
end

-- new{ max_attempts = 3, initial = 0.1, multiplier = 2, max_interval = 10,
--      jitter = "full", retry_on, on_retry, attempt_timeout, random, sleep,
--      stats, name } -> policy, reusable for many calls.
function M.new(opts)
  local p = build("orrery.retry.new", opts) -- not a tail call: error levels count this frame
  live[p] = true
  return p
end

-- p:delay(retry, prev) -> seconds to wait before retry number `retry`
-- (1 for the first retry); prev is the previous delay (decorrelated
-- jitter grows from it).
function Policy:delay(n, prev)
  local cap = self.max_interval
  local j = self.jitter
  if j == "decorrelated" then
    local lo = self.initial
    local hi = (prev or lo) * 3
    if hi < lo then hi = lo end
    return min(cap, lo + self.random() * (hi - lo))
  end
  local base = min(cap, self.initial * self.multiplier ^ (n - 1))
  if j == "full" then return self.random() * base end
  if j == "equal" then return base / 2 + self.random() * (base / 2) end
  return base
end

-- The outcome of one attempt: ok, results (a packed table) or the error
-- value, and whether it was raised.
local function attempt(self, fn, ...)
  local r
  if self.attempt_timeout then
    r = pack(pcall(M.timeout, self.attempt_timeout, fn, ...))
  else
    r = pack(pcall(fn, ...))
  end
  if not r[1] then return false, r[2], true end
  if not r[2] and r[3] ~= nil then return false, r[3], false end
  return true, r
end

-- p:call(fn, ...) -> fn's results; or nil, err with the last failure once
-- the attempts are used up or retry_on(err, attempt) says no (an error
-- raised by the last attempt is raised again); or nil, "canceled" |
-- "timeout", last_err when the context ends or its deadline would pass
-- during the next backoff.
function Policy:call(fn, ...)
  if getmetatable(self) ~= Policy then
    error("orrery.retry:call: bad self (retry policy expected, got " .. type(self) .. "; use p:call(fn))", 2)
  end
  if not callable(fn) then
    error("orrery.retry:call: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  local st = self.st
  st.calls = st.calls + 1
  local prev
  local n = 0
  while true do
    n = n + 1
    st.attempts = st.attempts + 1
    local ok, r, raised = attempt(self, fn, ...)
    if ok then
      st.successes = st.successes + 1
      return unpack(r, 2, r.n)
    end
    local err = r
    local give_up = n >= self.max_attempts
    if not give_up and self.retry_on then give_up = not self.retry_on(err, n) end
    local ctx = context.current()
    local cerr = ctx:err()
    if cerr and not give_up then
      st.canceled = st.canceled + 1
      return nil, cerr, err
    end
    if give_up then
      st.failures = st.failures + 1
      if raised then error(err, 0) end
      return nil, err
    end
    local d = self:delay(n, prev)
    prev = d
    local dl = ctx:deadline()
    if dl and orrery.now() + d >= dl then
      st.canceled = st.canceled + 1
      return nil, "timeout", err
    end
    st.retries = st.retries + 1
    if self.on_retry then self.on_retry(n, err, d, self.name) end
    local slept, serr = self.sleep(d)
    if not slept then
      st.canceled = st.canceled + 1
      return nil, serr or "canceled", err
    end
  end
end

-- p:stats() -> { calls, attempts, retries, successes, failures, canceled }
function Policy:stats()
  local st = self.st
  return { name = self.name, calls = st.calls, attempts = st.attempts, retries = st.retries,
    successes = st.successes, failures = st.failures, canceled = st.canceled }
end

-- call(fn, opts, ...) -> as p:call(fn, ...), with opts an options table
-- or a policy from retry.new.
function M.call(fn, opts, ...)
  if not callable(fn) then
    error("orrery.retry.call: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  local p = opts
  if getmetatable(p) ~= Policy then p = build("orrery.retry.call", opts) end
  return p:call(fn, ...)
end

return M
