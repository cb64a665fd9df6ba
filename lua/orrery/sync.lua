-- SPDX-License-Identifier: MIT
-- orrery.sync -- waitgroup, mutex, semaphore and errgroup on channels.
--
-- Each primitive is a channel underneath, so waiting is FIFO and accepts a
-- timeout or context like any channel operation. The channel carries the
-- primitive's role, so that the coroutine dump says "mutex lock" rather
-- than "chan send".
local chan = require "orrery.chan"
local sched = require "orrery.sched"
local context = require "orrery.context"
local check = require "orrery.check"

local wait_opt = sched.wait_opt

local M = {}

local WaitGroup = {}
WaitGroup.__index = WaitGroup

function M.waitgroup()
  return setmetatable({ n = 0 }, WaitGroup)
end

-- Errors are raised at `level` so that they name the caller of add or
-- done, not this file.
local function wg_add(self, d, fname, level)
  if type(self) ~= "table" or getmetatable(self) ~= WaitGroup then
    error(("orrery.waitgroup:%s: bad self (waitgroup expected, got %s)"):format(fname, type(self)), level)
  end
  if type(d) ~= "number" or d % 1 ~= 0 then
    error("orrery.waitgroup:add: bad argument #1 (integer expected)", level)
  end
  local n = self.n + d
  if n < 0 then error(("orrery.waitgroup:%s: negative counter"):format(fname), level) end
  self.n = n
  if n == 0 and self.ch then
    self.ch:close()
    self.ch = nil
  end
end

function WaitGroup:add(d)
  if d == nil then d = 1 end
  wg_add(self, d, "add", 3)
end

function WaitGroup:done() wg_add(self, -1, "done", 3) end
function WaitGroup:count()
  check.self(self, WaitGroup, "orrery.waitgroup:count", "waitgroup")
  return self.n
end

-- wait([timeout | ctx]) -> true, or nil, "timeout" | "canceled"
function WaitGroup:wait(opt)
  check.self(self, WaitGroup, "orrery.waitgroup:wait", "waitgroup")
  if opt ~= nil then wait_opt("orrery.waitgroup:wait", 1, opt) end
  if self.n == 0 then return true end
  local ch = self.ch
  if not ch then
    ch = chan.internal(0, self.role or "waitgroup")
    self.ch = ch
  end
  local _, _, err = ch:recv(opt)
  if err == "closed" then return true end
  return nil, err
end

local Mutex = {}
Mutex.__index = Mutex

function M.mutex()
  return setmetatable({ ch = chan.internal(1, "mutex") }, Mutex)
end

-- lock([timeout | ctx]) -> true, or nil, "timeout" | "canceled"
function Mutex:lock(opt)
  check.self(self, Mutex, "orrery.mutex:lock", "mutex")
  if opt ~= nil then wait_opt("orrery.mutex:lock", 1, opt) end
  return self.ch:send(true, opt)
end
function Mutex:try_lock()
  check.self(self, Mutex, "orrery.mutex:try_lock", "mutex")
  return (self.ch:try_send(true))
end

function Mutex:unlock()
  check.self(self, Mutex, "orrery.mutex:unlock", "mutex")
  local _, ok = self.ch:try_recv()
  if not ok then error("orrery.mutex:unlock: unlock of unlocked mutex", 2) end
end

local Sem = {}
Sem.__index = Sem

function M.semaphore(n)
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then
    error("orrery.semaphore: bad argument #1 (positive integer expected)", 2)
  end
  return setmetatable({ ch = chan.internal(n, "semaphore"), size = n }, Sem)
end

function Sem:acquire(opt)
  check.self(self, Sem, "orrery.semaphore:acquire", "semaphore")
  if opt ~= nil then wait_opt("orrery.semaphore:acquire", 1, opt) end
  return self.ch:send(true, opt)
end
function Sem:try_acquire()
  check.self(self, Sem, "orrery.semaphore:try_acquire", "semaphore")
  return (self.ch:try_send(true))
end
function Sem:available()
  check.self(self, Sem, "orrery.semaphore:available", "semaphore")
  return self.size - self.ch:len()
end

function Sem:release()
  check.self(self, Sem, "orrery.semaphore:release", "semaphore")
  local _, ok = self.ch:try_recv()
  if not ok then error("orrery.semaphore:release: release without acquire", 2) end
end

-- group([ctx]): errgroup. g:go(fn, ...) runs fn in a coroutine under the
-- group's context; the first failure (an error raised, or fn returning
-- nil/false plus an error value) cancels the context, and g:wait()
-- returns that error once every coroutine of the group has ended.
local Group = {}
Group.__index = Group

function M.group(parent)
  if parent ~= nil and not context.is_ctx(parent) then
    error("orrery.group: bad argument #1 (context expected, got " .. type(parent) .. ")", 2)
  end
  local ctx, cancel = context.with_cancel(parent)
  local wg = M.waitgroup()
  wg.role = "errgroup" -- so that the dump says "errgroup wait"
  return setmetatable({ ctx = ctx, cancel = cancel, wg = wg }, Group)
end

function Group:go(fn, ...)
  check.self(self, Group, "orrery.group:go", "group")
  if type(fn) ~= "function" then
    error("orrery.group:go: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  self.wg:add(1)
  sched.spawn(self.ctx, function(...)
    local ok, r1, r2 = xpcall(fn, debug.traceback, ...)
    local err
    if not ok then err = r1 elseif not r1 and r2 ~= nil then err = r2 end
    if err ~= nil and self.err == nil then
      self.err = err
      self.cancel()
    end
    self.wg:done()
  end, ...)
end

-- Like errgroup.Wait, wait() does not give up when the caller's own
-- context ends: the group's coroutines are woken by that cancellation too
-- (their context derives from it) and wait() returns only once they have
-- ended. It therefore waits under the root context, where a cancellation
-- cannot cut the wait short.
function Group:wait()
  check.self(self, Group, "orrery.group:wait", "group")
  local wg = self.wg
  if wg.n > 0 then
    sched.with_ctx(context.root, function()
      while wg.n > 0 do wg:wait() end
    end)
  end
  self.cancel()
  return self.err
end

return M
