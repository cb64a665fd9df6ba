-- SPDX-License-Identifier: MIT
-- orrery.limit -- token buckets (golang.org/x/time/rate), concurrency
-- limits (bulkheads) and an HTTP middleware that answers 429.
--
-- A token bucket holds up to `burst` tokens, starts full and refills at
-- `rate` tokens per second. Its state is updated lazily from the clock on
-- each use; allow() is table arithmetic plus one clock read, so loops over
-- it stay JIT-compiled. A concurrency limit is a buffered channel used as a
-- semaphore: waiters queue FIFO in the channel's send queue, and every wait
-- is cancellable by a context or a timeout.
local orrery = require "orrery"
local check = require "orrery.check"
local context = require "orrery.context"

local type, error, pcall, getmetatable, setmetatable, tostring =
  type, error, pcall, getmetatable, setmetatable, tostring
local floor, ceil = math.floor, math.ceil

local INF = math.huge

local M = { inf = INF }

-- Every live token bucket and concurrency limit, for metrics and the
-- console (weak: unreferenced limiters disappear).
local live
-- list() -> every live limiter, sorted by name.
live, M.list = check.registry()

-- -- Argument checking --

local callable, show = check.callable, check.show

local number_opt = check.number_opt

local function count_arg(fname, n)
  if type(n) ~= "number" or n ~= n or n < 0 or n % 1 ~= 0 or n == INF then
    error(("%s: bad argument #1 (non-negative integer expected, got %s)"):format(fname, show(n)), 3)
  end
end

local function ctx_arg(fname, argn, ctx)
  if ctx ~= nil and not context.is_ctx(ctx) then
    error(("%s: bad argument #%d (context expected, got %s)"):format(fname, argn, type(ctx)), 3)
  end
end

-- every(s) -> the rate of one event per s seconds (inf for s <= 0).
function M.every(s)
  if type(s) ~= "number" or s ~= s then
    error("orrery.limit.every: bad argument #1 (seconds expected, got " .. show(s) .. ")", 2)
  end
  if s <= 0 then return INF end
  return 1 / s
end

-- -- Token bucket --

local Bucket = {}
Bucket.__index = Bucket
M.Bucket = Bucket

-- Seconds needed to accumulate `tokens` at `limit` per second, truncated
-- to whole nanoseconds toward zero as Go's time.Duration does.
local function dur_from_tokens(limit, tokens)
  local s = tokens / limit
  if s >= 0 then return floor(s * 1e9) / 1e9 end
  return ceil(s * 1e9) / 1e9
end

local function tokens_from_dur(limit, d)
  if limit == 0 or d == 0 then return 0 end
  return d * limit
end

-- Tokens at time t, without changing the bucket. A clock that went
-- backwards counts as no time passing (and t becomes the new reference).
local function advance(self, t)
  local last = self.last
  if t < last then last = t end
  local tokens = self.tok + tokens_from_dur(self.limit, t - last)
  local burst = self.bst
  if tokens > burst then tokens = burst end
  return tokens
end

-- reserve_n(self, t, n, max_wait) -> time to act, or nil when the n tokens
-- cannot be had within max_wait seconds (or n exceeds the burst).
local function reserve_n(self, t, n, max_wait)
  local limit = self.limit
  if limit == INF then return t end
  local tokens = advance(self, t) - n
  local wait = 0
  if tokens < 0 then wait = dur_from_tokens(limit, -tokens) end
  if n <= self.bst and wait <= max_wait and wait < INF then
    local act = t + wait
    self.last = t
    self.tok = tokens
    self.last_event = act
    return act
  end
  return nil
end

-- Gives back what a reservation of n tokens made at `limit` and acting at
-- `act` can still return at time t: the tokens not already spoken for by
-- reservations made after it. Returns the number of tokens restored.
local function cancel_at(self, n, act, limit, t)
  if self.limit == INF or n == 0 or act < t then return 0 end
  local restore = n - tokens_from_dur(limit, self.last_event - act)
  if restore <= 0 then return 0 end
  local tokens = advance(self, t) + restore
  if tokens > self.bst then tokens = self.bst end
  self.last = t
  self.tok = tokens
  if act == self.last_event then
    local prev = act + (limit ~= 0 and dur_from_tokens(limit, -n) or -INF)
    if prev >= t then self.last_event = prev end
  end
  self.s_canceled = self.s_canceled + 1
  return restore
end

local function default_sleep(s, ctx)
  if ctx == nil or ctx == context.current() then return orrery.sleep(s) end
  -- An explicit context that is not the coroutine's own: wait on a timer
  -- channel, which honours both contexts.
  local tm = orrery.timer(s)
  local _, ok, err = tm.c:recv(ctx)
  tm:stop()
  if ok then return true end
  return nil, err
end

local BUCKET_OPTS = { rate = true, burst = true, clock = true, sleep = true, name = true }

-- token_bucket{ rate, burst, clock, sleep, name }: rate tokens per second
-- (inf: no limit; 0: only the initial burst), burst the bucket size.
function M.token_bucket(opts)
  local F = "orrery.limit.token_bucket"
  opts = check.opts(F, opts, BUCKET_OPTS, 3)
  local rate = number_opt(F, opts, "rate", { inf = true, what = "non-negative number (tokens per second)" }, 3)
  if rate == nil then error(F .. ": missing option 'rate' (tokens per second)", 2) end
  local burst = number_opt(F, opts, "burst", { int = true, what = "non-negative integer" }, 3)
  if burst == nil then
    if rate ~= INF then error(F .. ": missing option 'burst' (bucket size)", 2) end
    burst = 0
  end
  local name = check.type_opt(F, opts, "name", "string", 3)
  local self = setmetatable({
    name = name or "token_bucket",
    limit = rate,
    bst = burst,
    tok = burst,
    last = -INF,
    last_event = -INF,
    clock = check.func_opt(F, opts, "clock", 3) or orrery.now,
    sleep = check.func_opt(F, opts, "sleep", 3) or default_sleep,
    s_allowed = 0, s_rejected = 0, s_reserved = 0, s_waited = 0,
    s_wait_failed = 0, s_canceled = 0,
  }, Bucket)
  live[self] = true
  return self
end
M.new = M.token_bucket

local function check_bucket(self, fname)
  if getmetatable(self) ~= Bucket then
    error(("orrery.limit:%s: bad self (token bucket expected, got %s; use lim:%s(...))")
      :format(fname, type(self), fname), 3)
  end
end

-- lim:allow([n]) -> true, or nil, "too_many_requests": takes n tokens
-- (default 1) if they are there now.
function Bucket:allow(n)
  if getmetatable(self) ~= Bucket then check_bucket(self, "allow") end
  if n == nil then
    n = 1
  elseif type(n) ~= "number" or not (n >= 0) or n % 1 ~= 0 then
    count_arg("orrery.limit:allow", n)
  end
  local limit = self.limit
  if limit == INF then
    self.s_allowed = self.s_allowed + 1
    return true
  end
  local t = self.clock()
  local tokens = advance(self, t) - n
  -- Go truncates the wait to whole nanoseconds: a deficit worth less than
  -- 1 ns counts as no wait.
  if n <= self.bst and (tokens >= 0 or -tokens / limit < 1e-9) then
    self.last = t
    self.tok = tokens
    self.last_event = t
    self.s_allowed = self.s_allowed + 1
    return true
  end
  self.s_rejected = self.s_rejected + 1
  return nil, "too_many_requests"
end

local Reservation = {}
Reservation.__index = Reservation
M.Reservation = Reservation

-- lim:reserve([n]) -> reservation, or nil, "exceeds_burst" when n is more
-- than the bucket holds, nil, "too_many_requests" when the rate is 0 and
-- the tokens will never come. The reservation takes the tokens now; the
-- caller must wait r:delay() seconds before acting, or r:cancel().
function Bucket:reserve(n)
  check_bucket(self, "reserve")
  if n == nil then n = 1 else count_arg("orrery.limit:reserve", n) end
  local t = self.clock()
  local act = reserve_n(self, t, n, INF)
  if not act then
    self.s_rejected = self.s_rejected + 1
    if n > self.bst then return nil, "exceeds_burst" end
    return nil, "too_many_requests"
  end
  self.s_reserved = self.s_reserved + 1
  return setmetatable({ lim = self, tokens = n, time_to_act = act,
    limit = self.limit == INF and 0 or self.limit }, Reservation)
end

-- r:delay() -> seconds to wait from now before acting (0: act now).
function Reservation:delay()
  local d = self.time_to_act - self.lim.clock()
  if d < 0 then return 0 end
  return d
end

-- r:cancel() -> tokens given back. Reverses the reservation as far as
-- later reservations allow; a second cancel does nothing.
function Reservation:cancel()
  if self.canceled then return 0 end
  self.canceled = true
  local lim = self.lim
  return cancel_at(lim, self.tokens, self.time_to_act, self.limit, lim.clock())
end

-- lim:wait([n] [, ctx]) -> true, or nil, err. Parks the coroutine until n
-- tokens are available. err: "exceeds_burst" (n > burst), "canceled" or
-- "timeout" when the coroutine's context or ctx ends first, and "timeout"
-- at once when a deadline comes before the tokens could. A wait that ends
-- early gives its tokens back.
function Bucket:wait(n, ctx)
  check_bucket(self, "wait")
  if n == nil then n = 1 else count_arg("orrery.limit:wait", n) end
  ctx_arg("orrery.limit:wait", 2, ctx)
  local limit = self.limit
  if n > self.bst and limit ~= INF then
    self.s_wait_failed = self.s_wait_failed + 1
    return nil, "exceeds_burst"
  end
  local cur = context.current()
  local err = (ctx and ctx:err()) or cur:err()
  if err then
    self.s_wait_failed = self.s_wait_failed + 1
    return nil, err
  end
  local max_wait = INF
  local dl = cur:deadline()
  local xdl = ctx and ctx:deadline()
  if xdl and (not dl or xdl < dl) then dl = xdl end
  if dl then max_wait = dl - orrery.now() end
  local t = self.clock()
  local act = reserve_n(self, t, n, max_wait)
  if not act then
    self.s_wait_failed = self.s_wait_failed + 1
    return nil, (max_wait < INF) and "timeout" or "too_many_requests"
  end
  self.s_waited = self.s_waited + 1
  local delay = act - t
  if delay <= 0 then return true end
  local ok, werr = self.sleep(delay, ctx)
  if ok then return true end
  cancel_at(self, n, act, limit == INF and 0 or limit, self.clock())
  self.s_wait_failed = self.s_wait_failed + 1
  return nil, werr or "canceled"
end

-- lim:tokens() -> tokens available now (negative while reservations are
-- outstanding).
function Bucket:tokens()
  check_bucket(self, "tokens")
  return advance(self, self.clock())
end

-- lim:delay([n]) -> seconds until n tokens will be available, without
-- taking them (0: now; inf: never).
function Bucket:delay(n)
  check_bucket(self, "delay")
  if n == nil then n = 1 else count_arg("orrery.limit:delay", n) end
  local limit = self.limit
  if limit == INF then return 0 end
  if n > self.bst then return INF end
  local missing = n - advance(self, self.clock())
  if missing <= 0 then return 0 end
  if limit == 0 then return INF end
  return dur_from_tokens(limit, missing)
end

function Bucket:rate() check_bucket(self, "rate") return self.limit end
function Bucket:burst() check_bucket(self, "burst") return self.bst end

-- lim:set_rate(r), lim:set_burst(b): take effect from now; tokens accrued
-- so far are kept (capped by the burst).
function Bucket:set_rate(r)
  check_bucket(self, "set_rate")
  if type(r) ~= "number" or r ~= r or r < 0 then
    error("orrery.limit:set_rate: bad argument #1 (non-negative number expected, got " .. show(r) .. ")", 2)
  end
  local t = self.clock()
  self.tok = advance(self, t)
  self.last = t
  self.limit = r
end

function Bucket:set_burst(b)
  check_bucket(self, "set_burst")
  if type(b) ~= "number" or b ~= b or b < 0 or b % 1 ~= 0 or b == INF then
    error("orrery.limit:set_burst: bad argument #1 (non-negative integer expected, got " .. show(b) .. ")", 2)
  end
  local t = self.clock()
  self.tok = advance(self, t)
  self.last = t
  self.bst = b
end

function Bucket:stats()
  check_bucket(self, "stats")
  return {
    name = self.name,
    kind = "token_bucket",
    rate = self.limit,
    burst = self.bst,
    tokens = self:tokens(),
    allowed = self.s_allowed,
    rejected = self.s_rejected,
    reserved = self.s_reserved,
    waited = self.s_waited,
    wait_failed = self.s_wait_failed,
    canceled = self.s_canceled,
  }
end

function Bucket:__tostring()
  return ("token bucket %q (rate %s, burst %d)"):format(self.name, tostring(self.limit), self.bst)
end

-- -- Concurrency limit (bulkhead) --

local Bulkhead = {}
Bulkhead.__index = Bulkhead
M.Bulkhead = Bulkhead

local BULKHEAD_OPTS = { max = true, queue = true, timeout = true, name = true }

-- concurrency{ max, queue = 0, timeout, name }: at most max holders; up to
-- queue callers wait (FIFO) for a slot, each for at most timeout seconds
-- (default: as long as its context allows).
function M.concurrency(opts)
  local F = "orrery.limit.concurrency"
  opts = check.opts(F, opts, BULKHEAD_OPTS, 3)
  local max = number_opt(F, opts, "max", { int = true, strict = true, what = "positive integer" }, 3)
  if max == nil then error(F .. ": missing option 'max' (concurrent holders)", 2) end
  if max > 0x7fffffff then error(F .. ": bad option 'max' (at most 2^31-1)", 2) end
  local queue = number_opt(F, opts, "queue", { int = true, inf = true, what = "non-negative integer" }, 3) or 0
  local timeout = number_opt(F, opts, "timeout", { what = "non-negative number of seconds" }, 3)
  local name = check.type_opt(F, opts, "name", "string", 3)
  local ch = orrery.chan(max, "bulkhead")
  local self = setmetatable({
    name = name or "bulkhead",
    max = max, queue = queue, timeout = timeout,
    ch = ch, sc = ch:send_case(true),
    waiting = 0,
    s_admitted = 0, s_rejected = 0, s_timeouts = 0, s_canceled = 0, s_queued = 0,
  }, Bulkhead)
  live[self] = true
  return self
end

local function check_bulkhead(self, fname)
  if getmetatable(self) ~= Bulkhead then
    error(("orrery.limit:%s: bad self (concurrency limit expected, got %s; use lim:%s(...))")
      :format(fname, type(self), fname), 3)
  end
end

-- lim:acquire([ctx]) -> true, or nil, err. err: "too_many_requests" when
-- every slot is taken and the queue is full or the wait timeout passed;
-- "canceled" or "timeout" when the coroutine's context or ctx ends first.
function Bulkhead:acquire(ctx)
  check_bulkhead(self, "acquire")
  ctx_arg("orrery.limit:acquire", 1, ctx)
  local ch = self.ch
  if ch:try_send(true) then
    self.s_admitted = self.s_admitted + 1
    return true
  end
  local timeout = self.timeout
  if self.waiting >= self.queue or timeout == 0 then
    self.s_rejected = self.s_rejected + 1
    return nil, "too_many_requests"
  end
  local cur = context.current()
  local e = (ctx and ctx:err()) or cur:err()
  if e then
    self.s_canceled = self.s_canceled + 1
    return nil, e
  end
  self.waiting = self.waiting + 1
  self.s_queued = self.s_queued + 1
  local ok, err
  if timeout and ctx then
    local i
    i, err = orrery.select { self.sc, timeout = timeout, ctx = ctx }
    ok = i ~= nil
  elseif timeout then
    ok, err = ch:send(true, timeout)
  else
    ok, err = ch:send(true, ctx)
  end
  self.waiting = self.waiting - 1
  if ok then
    self.s_admitted = self.s_admitted + 1
    return true
  end
  e = (ctx and ctx:err()) or cur:err()
  if e then
    self.s_canceled = self.s_canceled + 1
    return nil, e
  end
  self.s_timeouts = self.s_timeouts + 1
  self.s_rejected = self.s_rejected + 1
  return nil, "too_many_requests"
end

-- lim:try_acquire() -> true, or nil, "too_many_requests" (never waits).
function Bulkhead:try_acquire()
  check_bulkhead(self, "try_acquire")
  if self.ch:try_send(true) then
    self.s_admitted = self.s_admitted + 1
    return true
  end
  self.s_rejected = self.s_rejected + 1
  return nil, "too_many_requests"
end

-- lim:release(): frees a slot; the longest waiter (if any) takes it.
function Bulkhead:release()
  check_bulkhead(self, "release")
  local _, ok = self.ch:try_recv()
  if not ok then error("orrery.limit:release: release without acquire", 2) end
end

local function release_after(self, ok, ...)
  self.ch:try_recv()
  if not ok then error((...), 0) end
  return ...
end

-- lim:call(fn, ...) -> fn's results, or nil, err when no slot could be
-- had (see acquire). The slot is released when fn returns or raises.
function Bulkhead:call(fn, ...)
  check_bulkhead(self, "call")
  if not callable(fn) then
    error("orrery.limit:call: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  local ok, err = self:acquire()
  if not ok then return nil, err end
  return release_after(self, pcall(fn, ...))
end

function Bulkhead:in_flight() check_bulkhead(self, "in_flight") return self.ch:len() end

function Bulkhead:stats()
  check_bulkhead(self, "stats")
  return {
    name = self.name,
    kind = "concurrency",
    max = self.max,
    queue = self.queue,
    in_flight = self.ch:len(),
    waiting = self.waiting,
    admitted = self.s_admitted,
    queued = self.s_queued,
    rejected = self.s_rejected,
    timeouts = self.s_timeouts,
    canceled = self.s_canceled,
  }
end

function Bulkhead:__tostring()
  return ("concurrency limit %q (%d/%d in flight, %d waiting)"):format(self.name,
    self.ch:len(), self.max, self.waiting)
end

-- -- HTTP middleware --

-- Key functions for per_key.
function M.by_remote(req) return req.remote end
function M.by_route(req) return req.method .. " " .. req.path end
function M.by_header(name)
  if type(name) ~= "string" then
    error("orrery.limit.by_header: bad argument #1 (header name expected, got " .. type(name) .. ")", 2)
  end
  return function(req) return req:header(name) end
end

local MW_OPTS = { limiter = true, per_key = true, new = true, max_keys = true, status = true,
  body = true, retry_after = true, on_reject = true, cost = true }

local function limiter_kind(l)
  local t = type(l)
  if t ~= "table" and t ~= "userdata" then return nil end
  if l.allow then return "rate" end
  if l.acquire and l.release then return "concurrency" end
  return nil
end

local function mw_release(lim, ok, ...)
  lim:release()
  if not ok then error((...), 0) end
  return ...
end

-- middleware{ limiter = l | per_key = fn(req) -> key, new = fn(key) -> l,
--             max_keys = 10000, status = 429, body, retry_after, on_reject,
--             cost = 1 } -> function(req, next), control
-- A rejected request gets status 429 and a Retry-After header (whole
-- seconds: for a token bucket, until the tokens are back; for a
-- concurrency limit, retry_after, default 1). A nil key is not limited.
-- Per-key limiters are kept in two generations of at most max_keys each,
-- so memory stays bounded; an evicted key starts again with a new limiter.
function M.middleware(opts)
  local F = "orrery.limit.middleware"
  opts = check.opts(F, opts, MW_OPTS, 3)
  local shared, per_key, new = opts.limiter, opts.per_key, opts.new
  if shared ~= nil then
    if per_key ~= nil or new ~= nil then
      error(F .. ": options 'limiter' and 'per_key'/'new' are exclusive", 2)
    end
    if not limiter_kind(shared) then
      error(F .. ": bad option 'limiter' (token bucket or concurrency limit expected, got " .. type(shared) .. ")", 2)
    end
  else
    if per_key == nil then error(F .. ": missing option 'limiter' or 'per_key'", 2) end
    if not callable(per_key) then
      error(F .. ": bad option 'per_key' (function expected, got " .. type(per_key) .. ")", 2)
    end
    if not callable(new) then
      error(F .. ": bad option 'new' (function expected, got " .. type(new) .. ")", 2)
    end
  end
  local max_keys = number_opt(F, opts, "max_keys", { int = true, strict = true, what = "positive integer" }, 3) or 10000
  local status = number_opt(F, opts, "status", { int = true, what = "HTTP status" }, 3) or 429
  if status < 100 or status > 599 then error(F .. ": bad option 'status' (HTTP status expected, got " .. status .. ")", 2) end
  local retry_after = number_opt(F, opts, "retry_after", { what = "non-negative number of seconds" }, 3) or 1
  local body = opts.body
  if body == nil then body = "too many requests\n" end
  if type(body) ~= "string" then error(F .. ": bad option 'body' (string expected, got " .. type(body) .. ")", 2) end
  local on_reject = check.func_opt(F, opts, "on_reject", 3)
  local cost = opts.cost
  if cost == nil then
    cost = 1
  elseif not callable(cost) then
    cost = number_opt(F, opts, "cost", { int = true, what = "non-negative integer or function" }, 3)
  end

  local cur, old, ncur, nold = {}, {}, 0, 0
  local ctl = { allowed = 0, rejected = 0, evictions = 0 }

  local function lookup(key)
    local l = cur[key]
    if l ~= nil then return l end
    l = old[key]
    if l ~= nil then
      old[key] = nil
      nold = nold - 1
    else
      l = new(key)
      if not limiter_kind(l) then
        error(F .. ": option 'new' returned " .. type(l) .. ", a limiter expected", 0)
      end
    end
    if ncur >= max_keys then
      old, cur, nold, ncur = cur, {}, ncur, 0
      ctl.evictions = ctl.evictions + 1
    end
    cur[key] = l
    ncur = ncur + 1
    return l
  end

  local function reject(req, key, secs)
    ctl.rejected = ctl.rejected + 1
    if on_reject then on_reject(req, key) end
    local headers = { ["Content-Type"] = "text/plain; charset=utf-8" }
    if secs < INF then
      local s = ceil(secs)
      if s < 1 then s = 1 end
      headers["Retry-After"] = ("%d"):format(s)
    end
    return status, body, headers
  end

  local function handler(req, nxt)
    local lim, key = shared, nil
    if not lim then
      key = per_key(req)
      if key == nil then return nxt(req) end
      lim = lookup(key)
    end
    local n = cost
    if type(n) ~= "number" then n = n(req) end
    if lim.allow then
      if lim:allow(n) then
        ctl.allowed = ctl.allowed + 1
        return nxt(req)
      end
      return reject(req, key, lim.delay and lim:delay(n) or retry_after)
    end
    if not lim:acquire() then return reject(req, key, retry_after) end
    ctl.allowed = ctl.allowed + 1
    return mw_release(lim, pcall(nxt, req))
  end

  -- The control object: ctl:stats(), ctl:keys(), ctl:limiter(key).
  function ctl.keys() return ncur + nold end
  function ctl.limiter(_, key) return cur[key] or old[key] end
  function ctl.stats()
    return { allowed = ctl.allowed, rejected = ctl.rejected, evictions = ctl.evictions, keys = ncur + nold }
  end
  return handler, ctl
end

return M
