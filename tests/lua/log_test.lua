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

T.test("handler errors and access lines go through orrery.log by default", function()
  local path = fresh()
  local supp0 = log.stats().suppressed.error
  local app = http.router()
  app:get("/orders/:id", function(req)
    -- The same failure, with request data in its message.
    error("order " .. req.params.id .. " not found in the ledger")
  end)
  app:get("/ok", function() return 200, "fine" end)
  local srv = assert(http.listen(app, { host = "127.0.0.1", port = 0 }))
  T.eq(H.get(srv, "/ok").status, 200)
  for i = 1, 20 do T.eq(H.get(srv, "/orders/" .. i).status, 500) end
  srv:close()
  log.flush()
  local access, errors = {}, {}
  for _, e in ipairs(read_lines(path)) do
    if e.msg == "http request" then access[#access + 1] = e else errors[#errors + 1] = e end
  end
  T.eq(#access, 21, "one access line per request")
  T.eq(access[1].path, "/ok")
  T.eq(access[1].status, 200)
  T.eq(access[1].remote, "127.0.0.1")
  T.eq(type(access[1].duration_ms), "number")
  T.eq(access[2].status, 500)
  T.eq(#errors, 1, "20 failures on 20 paths with 20 messages: one line, the rest counted")
  local e = errors[1]
  T.eq(e.level, "error")
  T.match(e.msg, "^http: handler error: .*log_test%.lua:%d+: order 1 not found in the ledger$")
  T.eq(e.method, "GET")
  T.eq(e.path, "/orders/1")
  T.eq(e.route, "/orders/:id")
  T.match(e.traceback, "^stack traceback:")
  T.eq(log.stats().suppressed.error - supp0, 19)
  clock = clock + 11
  log.flush()
  local last = read_lines(path)
  T.match(last[#last].msg, "order 1 not found in the ledger ... repeated 19 times in the last 10 s$")
  -- access_log = false turns the lines off; a function still gets them.
  local seen = {}
  local srv2 = assert(http.listen(app, { host = "127.0.0.1", port = 0,
    access_log = function(line, req, status) seen[#seen + 1] = { line = line, status = status } end }))
  T.eq(H.get(srv2, "/ok").status, 200)
  srv2:close()
  local srv3 = assert(http.listen(app, { host = "127.0.0.1", port = 0, access_log = false }))
  T.eq(H.get(srv3, "/ok").status, 200)
  srv3:close()
  log.flush()
  T.eq(#seen, 1)
  T.eq(seen[1].status, 200)
  T.match(seen[1].line, '"path":"/ok"')
  T.eq(#read_lines(path), #last, "no orrery.log line from either server")
end)

-- -- The writer thread --

local ffi = require "ffi"
ffi.cdef [[
  int mkfifo(const char *path, unsigned int mode);
  int open(const char *path, int flags, ...);
  long read(int fd, void *buf, size_t n);
  int close(int fd);
]]
local O_RDONLY, O_NONBLOCK = 0, 2048

T.test("a stalled output does not stall the loop: lines are dropped and counted", function()
  local fifo = os.tmpname()
  os.remove(fifo)
  T.eq(ffi.C.mkfifo(fifo, 384), 0)
  -- Our end of the pipe is open, so the log's open does not wait, but
  -- nobody reads it until the end: once the pipe's buffer is full the
  -- writer thread blocks in write(2).
  local rfd = ffi.C.open(fifo, O_RDONLY + O_NONBLOCK)
  T.ok(rfd >= 0)
  log.configure { queue_max = 262144 }
  assert(log.open(fifo))
  local app = http.router()
  app:get("/ping", function() return 200, "pong" end)
  local srv = assert(http.listen(app, { host = "127.0.0.1", port = 0, access_log = false }))
  local line = ("x"):rep(200)
  local function logged()
    local l = log.stats().lines
    return l.debug + l.info + l.warn + l.error
  end
  local logged0, dropped0 = logged(), log.stats().dropped
  local ticks, served = 0, 0
  for _ = 1, 30 do
    for i = 1, 300 do log.info(line, { i = i }) end -- 70 kB a turn
    orrery.sleep(0.001) -- the loop turns: timers fire
    ticks = ticks + 1
    if H.get(srv, "/ping").status == 200 then served = served + 1 end
  end
  local st = log.stats()
  T.eq(ticks, 30)
  T.eq(served, 30, "requests are served while the output is stalled")
  T.ok(st.dropped > dropped0, "lines were dropped: " .. st.dropped)
  T.ok(st.queued_bytes <= 262144, "the queue stays within queue_max: " .. st.queued_bytes)
  T.ok(st.queued_bytes > 0, "the writer is stuck with a full queue: " .. require("orrery.json").encode(st))
  T.ok(not log.flush(0), "flush(0) says the writer is behind")
  local text = metrics.expose()
  T.eq(tonumber(text:match("\norrery_log_dropped_total (%d+)")), st.dropped)
  -- The reader comes back: everything queued is written, then a line
  -- says how many were lost.
  srv:close()
  local buf = ffi.new("char[65536]")
  local got = {}
  local function drain()
    while true do
      local n = tonumber(ffi.C.read(rfd, buf, 65536))
      if n <= 0 then return end
      got[#got + 1] = ffi.string(buf, n)
    end
  end
  while not log.flush(0) do
    drain()
    orrery.sleep(0.001)
  end
  log.info("after the stall")
  while not log.flush(0) do
    drain()
    orrery.sleep(0.001)
  end
  drain()
  log.close()
  ffi.C.close(rfd)
  os.remove(fifo)
  log.configure { queue_max = 8388608 }
  local all = table.concat(got)
  local n, notices, reported, last = 0, 0, 0, nil
  for l in all:gmatch("([^\n]*)\n") do
    local e = json.decode(l)
    n = n + 1
    if e.msg:find("lines dropped", 1, true) then
      notices = notices + 1
      reported = reported + e.dropped
      T.eq(e.level, "warn")
    end
    last = e
  end
  local dropped = log.stats().dropped - dropped0
  T.eq(n + dropped, logged() - logged0, "every line was either written whole or counted as dropped")
  T.ok(notices > 0, "a line says lines were dropped")
  T.eq(reported, dropped, "the warnings count every line lost before them")
  T.eq(last.msg, "after the stall")
end)

-- -- Child processes: exit and signals --

local function child(src, env)
  local path = os.tmpname()
  local st, out, err = T.script(("local LOG = %q\n"):format(path) .. src, { timeout = 20, env = env })
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

T.test("nothing is lost at exit: the writer's queue is drained, os.exit included", function()
  local st, l = child([[
    local log = require "orrery.log"
    assert(log.open(LOG))
    for i = 1, 100000 do log.info("line", { i = i }) end
  ]])
  T.eq(st, 0)
  T.eq(#l, 100000)
  T.eq(l[100000].i, 100000)
  st, l = child([[
    local log = require "orrery.log"
    assert(log.open(LOG))
    for i = 1, 100000 do log.info("line", { i = i }) end
    log.error("fatal: cannot continue")
    os.exit(4) -- no loop exit: the atexit handler drains the writer
  ]], { ASAN_OPTIONS = "detect_leaks=0" }) -- os.exit leaves the Lua state open
  T.eq(st, 4)
  T.eq(#l, 100001)
  T.eq(l[100001].msg, "fatal: cannot continue")
end)

T.test("on stderr, lines are whole and in order among the process's other output", function()
  local st, out, err = T.script([[
    local log = require "orrery.log"
    for i = 1, 2000 do
      log.info("line", { i = i })
      -- One write(2): a line written in pieces (io.stderr:write("a", i,
      -- "\n") is three) may have a batch of the log's lines between them.
      if i % 500 == 0 then io.stderr:write(("plain stderr %d\n"):format(i)) end
      if i % 100 == 0 then require("orrery").sleep(0) end
    end
  ]], { timeout = 20 })
  T.eq(st, 0)
  local n, plain = 0, 0
  for l in err:gmatch("([^\n]*)\n") do
    if l:find("^plain stderr") then
      plain = plain + 1
    else
      local e = json.decode(l)
      n = n + 1
      T.eq(e.i, n, "the log's lines keep their order")
    end
  end
  T.eq(n, 2000)
  T.eq(plain, 4)
end)

T.test("SIGHUP reopens the log file (logrotate's rename, then HUP)", function()
  local st, l, out, err, path = child([[
    local orrery = require "orrery"
    local log = require "orrery.log"
    local ffi = require "ffi"
    ffi.cdef "int kill(int pid, int sig);"
    local pid = require("orrery").pid()
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
    local pid = require("orrery").pid()
    require "orrery.log".info("stderr only")
    ffi.C.kill(pid, 1)
    require("orrery").sleep(5)
  ]], { timeout = 20 })
  T.eq(st, 129)
end)
