-- SPDX-License-Identifier: MIT
-- log_test.lua -- orrery.log: the JSON lines written to a file (parsed
-- back with orrery.json), levels, escaping, rate limiting on an injected
-- clock, buffering until the next loop turn, reopening after a rename
-- (by call and by SIGHUP), flushing at exit, and the HTTP hooks.
local T = require "orrery.test"
local orrery = require "orrery"
local log = require "orrery.log"
local json = require "orrery.json"
local metrics = require "orrery.metrics"
local http = require "orrery.http"

local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

local function slurp(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Every line of the file, decoded.
local function read_lines(path)
  local out = {}
  for l in (slurp(path) or ""):gmatch("([^\n]*)\n") do
    out[#out + 1] = json.decode(l)
  end
  return out
end

-- A fresh file and the default settings, with a clock the test moves.
local clock = 0
local function fresh()
  local path = os.tmpname()
  assert(log.open(path))
  clock = 1000
  log.configure { level = "info", dedup_window = 10, dedup_level = "warn", dedup_max = 1000,
    clock = function() return clock end }
  return path
end

T.test("a line is a JSON object: time, level, msg, co, fields", function()
  local path = fresh()
  log.info("order created", { order_id = 42, amount = 12.5, ok = true, tags = { "a", "b" },
    nested = { x = 1 } })
  log.flush()
  local l = read_lines(path)
  T.eq(#l, 1)
  local e = l[1]
  T.match(e.time, "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$")
  T.eq(e.level, "info")
  T.eq(e.msg, "order created")
  T.eq(e.co, orrery.id())
  T.eq(e.order_id, 42)
  T.eq(e.amount, 12.5)
  T.eq(e.ok, true)
  T.eq(e.tags, { "a", "b" })
  T.eq(e.nested, { x = 1 })
  -- The time is now, in UTC.
  local y, mo, d, h, mi, s = e.time:match("^(%d+)%-(%d+)%-(%d+)T(%d+):(%d+):(%d+)")
  local t = os.time { year = y, month = mo, day = d, hour = h, min = mi, sec = s }
  local utc_now = os.time(os.date("!*t"))
  T.ok(math.abs(t - utc_now) <= 2, "the time stamp is the current UTC time")
end)

T.test("escaping: quotes, newlines, control bytes, unicode, bad UTF-8, reserved keys", function()
  local path = fresh()
  local nasty = 'a "quoted" \\ back\nslash\ttab \1 ctrl é ✓'
  log.info(nasty, { [nasty] = nasty, bad = "\xff\xfe ok", time = "mine", level = 7, [3] = "three" })
  log.flush()
  local e = read_lines(path)[1]
  T.eq(e.msg, nasty)
  T.eq(e[nasty], nasty)
  T.eq(e.bad, "\xc3\xbf\xc3\xbe ok", "bytes of bad UTF-8 are written as the code points of their values")
  T.eq(e["fields.time"], "mine")
  T.eq(e["fields.level"], 7)
  T.eq(e.level, "info")
  T.eq(e["3"], "three")
end)

T.test("values: NaN and infinities as strings, errors and functions by tostring", function()
  local path = fresh()
  local err = setmetatable({}, { __tostring = function() return "custom error" end })
  log.info("values", { nan = 0 / 0, inf = math.huge, ninf = -math.huge, e = err, big = 2 ^ 53,
    frac = 0.1, neg = -3 })
  log.flush()
  local e = read_lines(path)[1]
  T.eq(e.nan, "NaN")
  T.eq(e.inf, "+Inf")
  T.eq(e.ninf, "-Inf")
  T.eq(e.e, "custom error")
  T.eq(e.big, 2 ^ 53)
  T.eq(e.frac, 0.1)
  T.eq(e.neg, -3)
end)

T.test("levels: set_level at run time; error lines are never skipped", function()
  local path = fresh()
  T.eq(log.level(), "info")
  log.debug("no")
  log.info("yes 1")
  log.set_level("warn")
  T.eq(log.level(), "warn")
  T.eq(log.enabled("info"), false)
  T.eq(log.enabled("error"), true)
  log.info("no")
  log.warn("yes 2")
  log.set_level("debug")
  log.debug("yes 3")
  log.log("info", "yes 4")
  log.set_level("error")
  log.error("yes 5")
  log.set_level("info")
  log.flush()
  local msgs = {}
  for _, e in ipairs(read_lines(path)) do msgs[#msgs + 1] = e.level .. ":" .. e.msg end
  T.eq(msgs, { "info:yes 1", "warn:yes 2", "debug:yes 3", "info:yes 4", "error:yes 5" })
  T.match(T.raises(function() log.set_level("verbose") end),
    "log_test.lua:%d+: orrery.log.set_level: bad argument #1 %(\"debug\", \"info\", \"warn\" or \"error\" expected, got \"verbose\"%)")
  T.raises(function() log.log("loud", "x") end, "orrery.log.log: bad argument #1")
  T.raises(function() log.info("x", "not a table") end, "orrery.log.info: bad argument #2")
  T.raises(function() log.configure { colour = true } end, "orrery.log.configure: unknown option 'colour'")
end)

T.test("lines wait for the next loop turn; error lines are handed over at once", function()
  local path = fresh()
  log.info("buffered")
  T.eq(slurp(path), "", "nothing written during the caller's turn")
  T.ok(log.stats().buffered_bytes > 0)
  -- Waiting for the hand-over: the timer it armed fires on the next turn.
  for _ = 1, 100 do
    if log.stats().buffered_bytes == 0 then break end
    orrery.sleep(0)
  end
  T.eq(log.stats().buffered_bytes, 0, "handed over to the writer on a later turn")
  T.ok(log.flush(), "the writer wrote it")
  T.eq(#read_lines(path), 1)
  log.info("before the error")
  log.error("the error")
  T.eq(log.stats().buffered_bytes, 0, "the error line and everything before it are handed over at once")
  T.ok(log.flush())
  local l = read_lines(path)
  T.eq(#l, 3, "the error line and everything before it, in order")
  T.eq(l[2].msg, "before the error")
  T.eq(l[3].msg, "the error")
  T.raises(function() log.flush(-1) end, "orrery.log.flush: bad argument #1")
end)

T.test("identical warnings and errors are rate-limited and summarised", function()
  local path = fresh()
  local supp0 = log.stats().suppressed.error
  for _ = 1, 5 do log.error("db down", { attempt = 1 }) end
  log.error("other error") -- a different message is its own line
  for _ = 1, 3 do log.info("info is not rate-limited") end
  clock = clock + 5
  log.error("db down")
  log.flush() -- the window has not passed: no summary yet
  local l = read_lines(path)
  T.eq(#l, 5)
  T.eq(log.stats().suppressed.error - supp0, 5)
  clock = clock + 6 -- 11 s after the first: the window is over
  log.flush()
  l = read_lines(path)
  T.eq(#l, 6)
  T.eq(l[6].level, "error")
  T.eq(l[6].msg, "db down ... repeated 5 times in the last 10 s")
  T.eq(l[6].repeated, 5)
  log.error("db down") -- a new window: written again
  log.flush()
  l = read_lines(path)
  T.eq(#l, 7)
  T.eq(l[7].msg, "db down")
end)

T.test("rate limiting: summary at the next occurrence, dedup_level, window 0", function()
  local path = fresh()
  log.warn("slow")
  log.warn("slow")
  clock = clock + 20
  log.warn("slow") -- after the window: its summary, then the line itself
  log.flush()
  local l = read_lines(path)
  T.eq(#l, 3)
  T.eq(l[2].msg, "slow ... repeated 1 times in the last 10 s")
  T.eq(l[3].msg, "slow")
  log.configure { dedup_level = "error" }
  log.warn("now free")
  log.warn("now free")
  log.configure { dedup_window = 0 }
  log.error("unlimited")
  log.error("unlimited")
  log.flush()
  T.eq(#read_lines(path), 7)
end)

T.test("the suppressed lines are a metric when orrery.metrics is loaded", function()
  fresh()
  log.warn("flapping")
  log.warn("flapping")
  log.warn("flapping")
  local text = metrics.expose()
  local n = tonumber(text:match('orrery_log_suppressed_total{level="warn"} (%d+)'))
  T.ok(n and n >= 2, text:match("orrery_log[^\n]*") or "no log metrics")
  T.ok(text:find('orrery_log_lines_total{level="warn"}', 1, true))
end)

T.test("reopen after a rename: later lines go to the new file", function()
  local path = fresh()
  log.info("one")
  log.flush()
  assert(os.rename(path, path .. ".1"))
  log.info("two") -- buffered: goes to the old file at the reopen
  T.ok(log.reopen())
  log.info("three")
  log.flush()
  local old, new = read_lines(path .. ".1"), read_lines(path)
  T.eq(#old, 2)
  T.eq(old[2].msg, "two")
  T.eq(#new, 1)
  T.eq(new[1].msg, "three")
  T.eq(log.path(), path)
  os.remove(path .. ".1")
  local ok, err = log.open("/nonexistent/dir/x.log")
  T.eq(ok, nil)
  T.match(err, "No such file")
  T.eq(log.path(), path, "a failed open keeps the current file")
end)

T.test("trace and span ids come from the context", function()
  local path = fresh()
  local ctx = orrery.context.with_value(log.TRACE_KEY, { trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
    span_id = "00f067aa0ba902b7" })
  orrery.with_context(ctx, function()
    log.info("inside")
    local done = orrery.chan(1)
    orrery.go(function() log.info("child coroutine"); done:send(true) end)
    done:recv()
  end)
  log.info("outside")
  log.flush()
  local l = read_lines(path)
  T.eq(l[1].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736")
  T.eq(l[1].span_id, "00f067aa0ba902b7")
  T.eq(l[2].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "inherited by coroutines it starts")
  T.ne(l[2].co, l[1].co)
  T.eq(l[3].trace_id, nil)
end)

T.test("with(fields): loggers that add their fields to every line", function()
  local path = fresh()
  local lg = log.with { component = "payments", region = "eu" }
  local sub = lg:with { attempt = 2 }
  lg:info("charged", { amount = 5 })
  sub:warn("retrying")
  log.flush()
  local l = read_lines(path)
  T.eq(l[1].component, "payments")
  T.eq(l[1].amount, 5)
  T.eq(l[2].attempt, 2)
  T.eq(l[2].region, "eu")
  T.eq(l[2].level, "warn")
  T.raises(function() lg.info("x") end, "call it with ':'")
end)

T.test("the HTTP hooks: access lines and handler errors, rate-limited", function()
  local path = fresh()
  local app = http.router()
  app:get("/ok", function() return 200, "fine" end)
  app:get("/boom", function() error("handler exploded") end)
  local srv = H.start(app, { access_log = log.http_access, log = log.http_log })
  T.eq(H.get(srv, "/ok").status, 200)
  T.eq(H.get(srv, "/boom").status, 500)
  T.eq(H.get(srv, "/boom").status, 500)
  srv:close()
  log.flush()
  local access, errors = {}, {}
  for _, e in ipairs(read_lines(path)) do
    if e.msg == "http request" then access[#access + 1] = e else errors[#errors + 1] = e end
  end
  T.eq(#access, 3)
  T.eq(access[1].method, "GET")
  T.eq(access[1].path, "/ok")
  T.eq(access[1].status, 200)
  T.eq(access[1].bytes, 4)
  T.eq(type(access[1].duration_ms), "number")
  T.eq(access[2].status, 500)
  T.eq(#errors, 1, "the second identical handler error is suppressed")
  T.eq(errors[1].level, "error")
  T.match(errors[1].msg, "handler exploded")
end)

-- -- Child processes: exit and signals --

local function child(src)
  local path = os.tmpname()
  local st, out, err = T.script(("local LOG = %q\n"):format(path) .. src, { timeout = 20 })
  return st, read_lines(path), out, err, path
end

T.test("buffered lines are written when the script ends, exits or panics", function()
  local st, l = child([[
    local log = require "orrery.log"
    assert(log.open(LOG))
    log.info("last words")
  ]])
  T.eq(st, 0)
  T.eq(#l, 1)
  T.eq(l[1].msg, "last words")
  st, l = child([[
    local log = require "orrery.log"
    local orrery = require "orrery"
    assert(log.open(LOG))
    log.warn("repeat"); log.warn("repeat"); log.warn("repeat")
    log.info("before exit")
    orrery.exit(3)
  ]])
  T.eq(st, 3)
  T.eq(#l, 3)
  T.eq(l[2].msg, "before exit")
  T.eq(l[3].msg, "repeat ... repeated 2 times in the last 10 s", "pending summaries are written at exit")
  st, l = child([[
    local log = require "orrery.log"
    local orrery = require "orrery"
    assert(log.open(LOG))
    log.info("before the panic")
    orrery.go(function() error("panic!") end)
    orrery.sleep(1)
  ]])
  T.eq(st, 2)
  T.eq(#l, 1)
  T.eq(l[1].msg, "before the panic")
end)

T.test("SIGHUP reopens the log file (logrotate's rename, then HUP)", function()
  local st, l, out, err, path = child([[
    local orrery = require "orrery"
    local log = require "orrery.log"
    local ffi = require "ffi"
    ffi.cdef "int kill(int pid, int sig);"
    local f = io.open("/proc/self/stat")
    local pid = tonumber(f:read("*l"):match("^(%d+)"))
    f:close()
    assert(log.open(LOG))
    log.info("before rotation")
    log.flush()
    assert(os.rename(LOG, LOG .. ".1"))
    -- Handlers run in the order they were registered: log's reopen
    -- first, then this one.
    local hup = orrery.chan(1)
    orrery.on_hup(function() hup:send(true) end)
    ffi.C.kill(pid, 1)
    hup:recv()
    log.info("after rotation")
    ffi.C.kill(pid, 1) -- a second one: still caught, not the default (exit)
    hup:recv()
    print("alive")
  ]])
  T.eq(st, 0, err)
  T.eq(out, "alive\n")
  T.eq(#l, 1)
  T.eq(l[1].msg, "after rotation")
  local old = read_lines(path .. ".1")
  T.eq(#old, 1)
  T.eq(old[1].msg, "before rotation")
  os.remove(path .. ".1")
  os.remove(path)
end)

T.test("without a log file, SIGHUP keeps its default and ends the process", function()
  local st = T.script([[
    local ffi = require "ffi"
    ffi.cdef "int kill(int pid, int sig);"
    local f = io.open("/proc/self/stat")
    local pid = tonumber(f:read("*l"):match("^(%d+)"))
    f:close()
    require "orrery.log".info("stderr only")
    ffi.C.kill(pid, 1)
    require("orrery").sleep(5)
  ]], { timeout = 20 })
  T.eq(st, 129)
end)
