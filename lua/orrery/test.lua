-- SPDX-License-Identifier: MIT
-- orrery.test -- test cases and assertions for `orrery test`.
--
-- A *_test.lua file registers cases with test(name, fn); the runner runs
-- each in its own coroutine under its own context, so a case may spawn,
-- block and select. Assertions raise errors that carry the caller's
-- file:line and show the expected and the actual value.
local M = { cases = {} }

local function show(v, depth)
  depth = depth or 0
  local t = type(v)
  if t == "string" then
    -- %q writes a newline as a backslash and a real newline; spell it \n
    -- so that a failure message stays on one line.
    return (string.format("%q", v):gsub("\\\n", "\\n"))
  end
  if t ~= "table" or depth > 3 then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  local parts, n = {}, #v
  for _, k in ipairs(keys) do
    if type(k) == "number" and k >= 1 and k <= n and k % 1 == 0 then
      parts[#parts + 1] = show(v[k], depth + 1)
    else
      local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[" .. show(k, depth + 1) .. "]")
      parts[#parts + 1] = ks .. " = " .. show(v[k], depth + 1)
    end
    if #parts > 40 then parts[#parts + 1] = "..."; break end
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end
M.show = show

local function deep_eq(a, b, seen)
  if a == b then return true end
  if a ~= a and b ~= b then return true end -- NaN
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do
    if not deep_eq(v, b[k], seen) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end
M.deep_eq = deep_eq

local function fail(msg, level)
  error(msg, (level or 1) + 2)
end

function M.fail(msg) fail(msg or "failed") end

function M.ok(v, msg)
  if not v then fail((msg and msg .. ": " or "") .. "expected a true value, got " .. show(v)) end
  return v
end

function M.eq(actual, expected, msg)
  if not deep_eq(actual, expected) then
    fail(("%sexpected %s, got %s"):format(msg and msg .. ": " or "", show(expected), show(actual)))
  end
end

function M.ne(actual, unexpected, msg)
  if deep_eq(actual, unexpected) then
    fail(("%sexpected anything but %s"):format(msg and msg .. ": " or "", show(unexpected)))
  end
end

function M.near(actual, expected, eps, msg)
  eps = eps or 1e-9
  if type(actual) ~= "number" or math.abs(actual - expected) > eps then
    fail(("%sexpected %s +/- %s, got %s"):format(msg and msg .. ": " or "", show(expected), eps, show(actual)))
  end
end

function M.match(s, pattern, msg)
  if type(s) ~= "string" or not s:find(pattern) then
    fail(("%sexpected a string matching %s, got %s"):format(msg and msg .. ": " or "", show(pattern), show(s)))
  end
end

-- raises(fn, pattern) -> the error message; fails unless fn raises an
-- error whose message contains pattern (a plain substring).
function M.raises(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then fail((msg and msg .. ": " or "") .. "expected an error" .. (pattern and (" matching " .. show(pattern)) or "") .. ", got none") end
  if pattern and not tostring(err):find(pattern, 1, true) then
    fail(("%sexpected an error containing %s, got %s"):format(msg and msg .. ": " or "", show(pattern), show(err)))
  end
  return err
end

function M.skip(reason)
  error({ skip = reason or "skipped" }, 2)
end

-- test(name, fn [, opts]): registers a case; opts.timeout (seconds,
-- default 60) fails the case if it has not finished by then.
function M.test(name, fn, opts)
  if type(name) ~= "string" then error("orrery.test.test: bad argument #1 (name expected)", 2) end
  if type(fn) ~= "function" then error("orrery.test.test: bad argument #2 (function expected)", 2) end
  local info = debug.getinfo(2, "Sl")
  M.cases[#M.cases + 1] = { name = name, fn = fn, opts = opts or {},
    where = info.short_src .. ":" .. info.currentline }
end
setmetatable(M, { __call = function(_, ...) return M.test(...) end })

-- free_port() -> a TCP port on 127.0.0.1 that was free a moment ago, for
-- a server of another program (nginx, PostgreSQL, Prometheus) that a test
-- starts: listened on with port 0, then closed.
function M.free_port()
  local l = assert(require("orrery.net").listen { host = "127.0.0.1", port = 0 })
  local port = l.port
  l:close()
  return port
end

-- The orrery executable, for tests that run a child process.
M.exe = (function()
  local p = io.popen("readlink /proc/" .. "self/exe 2>/dev/null")
  local s = p and p:read("*l")
  if p then p:close() end
  return s
end)()
do -- /proc/self in popen is the shell; ask for our own pid instead
  local pid = require("orrery").pid()
  if pid then
    local p = io.popen("readlink /proc/" .. pid .. "/exe")
    M.exe = p:read("*l") or M.exe
    p:close()
  end
end

local function shquote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.shquote = shquote

-- run(args [, opts]) -> status, stdout, stderr: runs the orrery binary
-- with the given argument list; opts.stdin feeds its standard input and
-- opts.env is a table of extra environment variables. The child is
-- killed after opts.timeout seconds (default 30; status 137), so that a
-- hung child fails the test instead of hanging the suite. Blocks the loop
-- while the child runs, which is fine for a test.
function M.run(args, opts)
  opts = opts or {}
  local out, err = os.tmpname(), os.tmpname()
  local cmd = { }
  for k, v in pairs(opts.env or {}) do cmd[#cmd + 1] = k .. "=" .. shquote(v) end
  local limit = opts.timeout == nil and 30 or opts.timeout
  if limit then cmd[#cmd + 1] = "timeout -s KILL " .. tostring(limit) end
  cmd[#cmd + 1] = shquote(opts.exe or M.exe)
  for _, a in ipairs(args) do cmd[#cmd + 1] = shquote(a) end
  local inf
  if opts.stdin then
    inf = os.tmpname()
    local f = io.open(inf, "w"); f:write(opts.stdin); f:close()
    cmd[#cmd + 1] = "<" .. inf
  else
    cmd[#cmd + 1] = "</dev/null"
  end
  cmd[#cmd + 1] = ">" .. out .. " 2>" .. err
  local line = table.concat(cmd, " ") .. "; echo $?"
  local p = io.popen(line)
  local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  local function slurp(f) local h = io.open(f); local s = h:read("*a"); h:close(); os.remove(f); return s end
  local so, se = slurp(out), slurp(err)
  if inf then os.remove(inf) end
  return status, so, se
end

-- script(src [, opts]) -> status, stdout, stderr: writes src to a temporary
-- file and runs it with the orrery binary (opts.args are its arguments).
function M.script(src, opts)
  opts = opts or {}
  local f = os.tmpname() .. ".lua"
  local h = io.open(f, "w"); h:write(src); h:close()
  local args = { f }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local st, so, se = M.run(args, opts)
  os.remove(f)
  return st, so, se
end

-- settle(ids): yields until every coroutine whose id is listed is parked
-- (state "waiting"), so that a test can act once its coroutines have
-- reached their wait; fails the test if they never get there.
function M.settle(ids)
  local orrery = require "orrery"
  for _ = 1, 10000 do
    local state = {}
    for _, c in ipairs(orrery.coroutines()) do state[c.id] = c.state end
    local all = true
    for _, id in ipairs(ids) do
      if state[id] ~= "waiting" then all = false end
    end
    if all then return end
    orrery.yield()
  end
  fail("coroutines never parked")
end

-- spawn(fn, ...) -> out, id: runs fn(...) in a new coroutine; out (a
-- channel) then delivers { pcall(fn, ...) }.
function M.spawn(fn, ...)
  local orrery = require "orrery"
  local out = orrery.chan(1)
  local id = orrery.go(function(...) out:send({ pcall(fn, ...) }) end, ...)
  return out, id
end

-- Trace aborts that only say where a recording started, not that the code
-- cannot be compiled: when a hot counter (LuaJIT hashes them by address)
-- starts a recording next to a loop or inside a callee instead of at the
-- loop, the recorder gives up and the loop gets its own trace later.
-- They depend on address layout, so JIT tests do not count them.
M.BENIGN_ABORTS = {
  ["leaving loop in root trace"] = true,
  ["inner loop in root trace"] = true,
  ["loop unroll limit reached"] = true,
  ["NYI: return to lower frame"] = true,
  -- a finalizer or a hook ran while a trace was recorded: GC timing,
  -- not the code; the trace is recorded again on the next pass
  ["error thrown or hook called during recording"] = true,
}

-- traced(fn, module) -> aborts, stops: runs the loop fn with a JIT trace
-- listener; returns the trace aborts (but the positional BENIGN_ABORTS)
-- that happened in fn itself or in the module under test (source names containing `module`), as "where: why",
-- and the number of traces completed. Other aborts are not the loop's:
-- LuaJIT's hot counters are hashed, so a callee may start (and abort) a
-- trace of its own before the loop gets hot; the loop still compiles with
-- it inlined.
function M.traced(fn, module)
  local loop_def = debug.getinfo(fn, "S").linedefined
  local loop_src = debug.getinfo(fn, "S").source
  local okv, vmdef = pcall(require, "jit.vmdef")
  local jutil = require "jit.util"
  local aborts, stops = {}, 0
  local function listener(what, _, func, pc, code, arg)
    if what == "stop" then
      stops = stops + 1
    elseif what == "abort" then
      local fi = jutil.funcinfo(func, pc)
      local why = okv and vmdef.traceerr[code] or tostring(code)
      if type(arg) == "number" and why:find("%%d") then why = why:format(arg) end
      local src = fi.source or ""
      -- Positional aborts (M.BENIGN_ABORTS) say where a recording began,
      -- not that the code cannot compile: left out.
      if not M.BENIGN_ABORTS[why] and
          (src:find(module, 1, true) or (src == loop_src and fi.linedefined == loop_def)) then
        aborts[#aborts + 1] = ("%s: %s"):format(fi.loc or "?", why)
      end
    end
  end
  jit.flush()
  jit.attach(listener, "trace")
  local ok, err = pcall(fn)
  jit.attach(listener)
  if not ok then error(err, 0) end
  return aborts, stops
end

return M
