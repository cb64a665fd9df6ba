-- SPDX-License-Identifier: MIT
-- orrery.log -- structured logs: one JSON object per line, levels set at
-- run time, to stderr or a file reopened on SIGHUP, identical warnings
-- and errors rate-limited (docs/log.md).
--
-- The caller only encodes its line into a buffer: a 0-second timer hands
-- the buffer over on the next loop turn, one hand-over for every line of
-- the turn, to the log writer (host/logw.c), a thread that writes it with
-- writev(2). The loop never waits for the output: when the writer's queue
-- is past queue_max bytes (a pipe nobody reads, a disk that hangs), the
-- lines are dropped and counted. Error lines are handed over at once
-- (with everything buffered before them, in order), so that the last
-- words of a process that then hangs are written by the writer even if
-- the loop never turns again. At exit (through the loop, or exit(3) and
-- os.exit through an atexit handler) the queue is drained before the
-- process ends, for at most drain_timeout seconds.
local ffi = require "ffi"
local C = require "orrery.ffi"
local buffer = require "string.buffer"
local sched = require "orrery.sched"
local json = require "orrery.json"
local NUMBER_BUF = require("orrery.json.core").number_buf

local type, tostring, pairs, error, floor, getmetatable =
  type, tostring, pairs, error, math.floor, getmetatable
local json_number = C.orrery_ffi_json_number
local wall_now, co_id, co_slot = C.orrery_ffi_wall_now, C.orrery_ffi_co_id, C.orrery_ffi_co_slot

local M = {}

-- The context value under this key, a table { trace_id = "...",
-- span_id = "..." }, is written into every line logged inside it.
M.TRACE_KEY = "orrery.trace"

local DEBUG, INFO, WARN, ERROR = 1, 2, 3, 4
local NAMES = { "debug", "info", "warn", "error" }
local LEVELS = { debug = DEBUG, info = INFO, warn = WARN, error = ERROR }

-- -- State --

local cfg = {
  level = INFO,
  dedup_window = 10,    -- seconds; 0 turns rate limiting off
  dedup_level = WARN,   -- levels at and above it are rate-limited
  dedup_max = 1000,     -- distinct (level, msg) pairs tracked at once
  buffer_max = 1048576, -- bytes buffered before a hand-over at once
  queue_max = 8388608,  -- bytes the writer may hold before lines are dropped
  drain_timeout = 5,    -- seconds the exit waits for the writer
  flush_timeout = 5,    -- seconds log.flush() waits for the writer
  clock = function() return C.orrery_ffi_now() end,
}

local out = buffer.new(65536)
local pending = false -- the flush timer is armed
local closing = false -- the Lua state is closing: no more timers
local nbuf = 0 -- lines in out
local urgent = 0 -- 1: out holds an error line (the writer writes it at once)
local sink = { path = nil }
local lines, suppressed = { 0, 0, 0, 0 }, { 0, 0, 0, 0 }
local dropped, unreported = 0, 0 -- lines dropped; not yet said so in a line
local W = nil -- the writer (created on first use), false once closed
local wstats = ffi.new("orrery_logw_stats")
local flush_timer -- created on first use (sched's timers need the host)

-- -- Encoding --

local put_str = json.put_text

-- Quoted keys with their colon, cached as orrery.json does (field names
-- repeat from line to line). Keys that collide with the line's own
-- (time, level, ...) are written as "fields.<key>".
local RESERVED = { time = true, level = true, msg = true, co = true, trace_id = true, span_id = true }
local KEY_CACHE_MAX = 2048
local keys, nkeys = {}, 0
local key_buf = buffer.new(64)

local function key_text(k)
  local q = keys[k]
  if q then return q end
  local ks = type(k) == "string" and k or tostring(k)
  if RESERVED[ks] then ks = "fields." .. ks end
  local b = key_buf:reset()
  b:put(",")
  put_str(b, ks)
  b:put(":")
  q = b:tostring()
  if nkeys >= KEY_CACHE_MAX then keys, nkeys = {}, 0 end
  keys[k] = q
  nkeys = nkeys + 1
  return q
end

local function put_value(b, v)
  local t = type(v)
  if t == "string" then
    put_str(b, v)
  elseif t == "number" then
    if v == floor(v) or v ~= v then
      -- Integers exactly (C's int32 path is 8 ns); NaN and the
      -- infinities, which JSON has no numbers for, as strings.
      local p = b:reserve(NUMBER_BUF)
      local n = json_number(p, v)
      if n == 0 then
        b:put(v ~= v and '"NaN"' or v > 0 and '"+Inf"' or '"-Inf"')
      else
        b:commit(n)
      end
    else
      -- Fractions with 15 significant digits, in LuaJIT's own formatter:
      -- 40 ns, where the shortest form that reads back exactly (C's
      -- snprintf and strtod, as orrery.json writes it) takes 275 ns and
      -- was half the cost of a 10-field line. A value that needs 16 or 17
      -- digits (0.1 + 0.2) is rounded to 15.
      b:putf("%.15g", v)
    end
  elseif t == "boolean" then
    b:put(v and "true" or "false")
  elseif t == "table" and (getmetatable(v) == nil or json.is_array(v) or json.is_object(v)) then
    local s = json.try_encode(v)
    if s then b:put(s) else put_str(b, tostring(v)) end
  else
    put_str(b, tostring(v)) -- errors with __tostring, functions, cdata
  end
end

local function put_fields(b, fields)
  for k, v in pairs(fields) do
    b:put(key_text(k))
    put_value(b, v)
  end
end

-- The wall clock's second, formatted once per second; milliseconds from
-- a table of their 1000 spellings.
local MS = {}
for i = 0, 999 do MS[i] = ('.%03dZ"'):format(i) end
local cached_sec, cached_prefix = -1, ""

local LEVEL_TEXT = {}
for i, name in ipairs(NAMES) do LEVEL_TEXT[i] = (',"level":"%s","msg":'):format(name) end

-- -- Writing --

local logw_put = C.orrery_ffi_logw_put

local function close_writer(w)
  C.orrery_ffi_logw_close(w, cfg.drain_timeout)
end

local function writer()
  local w = C.orrery_ffi_logw_new(2, 0, cfg.queue_max)
  if w == nil then return nil end
  W = ffi.gc(w, close_writer)
  return W
end

-- Without a writer (it could not start, or it is closed: the Lua state
-- is closing) lines are written here, on the loop thread.
local function write_sync(s)
  local f = sink.path and io.open(sink.path, "a") or io.stderr
  f:write(s)
  if f ~= io.stderr then f:close() else f:flush() end
end

local sweep
local emit

-- Hands what is buffered to the writer (the summaries of rate-limited
-- lines whose window has passed included). When the writer's queue is
-- full the batch is dropped, and the next batch starts with a warning
-- that counts the lines lost since the last such warning was written.
local notice_queued = false -- out starts with that warning
local function handoff()
  if cfg.dedup_window > 0 then sweep(false) end
  if #out == 0 then return end
  local w = W
  if w == nil then w = writer() end
  local p, len = out:ref()
  if not w then
    write_sync(out:tostring())
  elseif logw_put(w, p, len, nbuf, urgent) ~= 0 then
    dropped, unreported = dropped + nbuf, unreported + nbuf
    out:reset()
    nbuf, urgent = 0, 0
    emit(WARN, "orrery.log: lines dropped: the output did not keep up", { dropped = unreported }, nil, false)
    notice_queued = true
    return
  end
  out:reset()
  nbuf, urgent = 0, 0
  if notice_queued then unreported, notice_queued = 0, false end
end

-- flush([timeout]) -> true | false: hands what is buffered to the writer
-- and waits (blocking the caller) until it is written, for at most
-- timeout seconds (flush_timeout, 5); false when it was not.
function M.flush(timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then
    error(("orrery.log.flush: bad argument #1 (seconds expected, got %s)"):format(
      type(timeout) == "number" and tostring(timeout) or type(timeout)), 2)
  end
  handoff()
  if not W then return true end
  return C.orrery_ffi_logw_sync(W, timeout or cfg.flush_timeout) == 1
end
local flush = handoff

local function on_timer()
  pending = false
  handoff()
end

local function schedule()
  pending = true
  if flush_timer == nil then flush_timer = sched.new_timer(on_timer) end
  sched.timer_start(flush_timer, 0)
end

-- At exit: the loop's last call into Lua ("exit", before the Lua state
-- closes) hands over what is buffered, pending summaries included, and
-- waits for the writer to write it. (A __gc finalizer would not do: once
-- lua_close starts, the buffer's own finalizer may already have freed
-- it.)
do
  local prev = sched.handlers.exit
  sched.handlers.exit = function(code)
    closing = true
    pcall(function()
      if cfg.dedup_window > 0 then sweep(true) end
      handoff()
      local w = W
      if w then
        W = false
        ffi.gc(w, nil)
        close_writer(w)
      end
    end)
    if prev then prev(code) end
  end
end

-- -- Rate limiting --
--
-- Per level, key -> { t0 = window start, n = suppressed in it, msg = the
-- first line's message }. The key is the message, or what the caller
-- names instead (the HTTP server's handler errors: the error's location
-- or first line, not the traceback, method or path). The first line of a
-- window is written; the identical ones after it within dedup_window
-- seconds only count. When the window has passed (at the
-- next identical line, at a flush, or from the sweep timer armed when
-- the first repeat was counted), a summary line "<msg> ... repeated N
-- times in the last W s" with the field repeated = N is written.
local seen = { {}, {}, {}, {} }
local nseen = 0
local sweep_timer, sweep_armed = nil, false

local emit_summary

local function arm_sweep()
  if sweep_armed then return end
  sweep_armed = true
  if sweep_timer == nil then
    sweep_timer = sched.new_timer(function()
      sweep_armed = false
      handoff()
    end)
  end
  sched.timer_start(sweep_timer, cfg.dedup_window)
end

-- Writes the summaries of the windows that have passed (all of them when
-- final) and forgets those windows; re-arms the timer for the others.
local sweeping = false
function sweep(final)
  if nseen == 0 or sweeping then return end
  sweeping = true
  local now = cfg.clock()
  local window = cfg.dedup_window
  local waiting = false
  for lvl = 1, 4 do
    for key, e in pairs(seen[lvl]) do
      if final or now - e.t0 >= window then
        if e.n > 0 then emit_summary(lvl, e.msg, e.n) end
        seen[lvl][key] = nil
        nseen = nseen - 1
      elseif e.n > 0 then
        waiting = true
      end
    end
  end
  sweeping = false
  if waiting and not final and not closing then arm_sweep() end
end

-- true when this line is a repeat to suppress.
local function repeated(lvl, key, msg)
  local tbl = seen[lvl]
  local e = tbl[key]
  local now = cfg.clock()
  if e then
    if now - e.t0 < cfg.dedup_window then
      e.n = e.n + 1
      suppressed[lvl] = suppressed[lvl] + 1
      if e.n == 1 then arm_sweep() end
      return true
    end
    if e.n > 0 then emit_summary(lvl, e.msg, e.n) end
    e.t0, e.n, e.msg = now, 0, msg
  elseif nseen < cfg.dedup_max then
    tbl[key] = { t0 = now, n = 0, msg = msg }
    nseen = nseen + 1
  end
  return false
end

-- -- Lines --

local function trace_in(ctx)
  local v = ctx.values
  while v do
    if v.key == M.TRACE_KEY then return v.value end
    v = v.up
  end
  return nil
end

local function trace_of(slot)
  local ctx = slot ~= 0 and sched.ctxs[slot]
  if not ctx then return nil end
  return trace_in(ctx)
end

-- A line up to its fields: time, level, msg, co, the trace's ids.
-- ctx, when given, is the context whose trace the line belongs to (a
-- request's, for the lines the server writes after its handler).
local function line_head(b, lvl, msg, ctx)
  local t = wall_now()
  local sec = floor(t)
  if sec ~= cached_sec then
    cached_sec = sec
    cached_prefix = os.date('!{"time":"%Y-%m-%dT%H:%M:%S', sec)
  end
  local ms = floor((t - sec) * 1000)
  if ms > 999 then ms = 999 end
  b:put(cached_prefix, MS[ms], LEVEL_TEXT[lvl])
  put_str(b, msg)
  local slot = co_slot()
  if slot ~= 0 then
    b:put(',"co":', tonumber(co_id()))
    local tr = ctx and trace_in(ctx) or trace_of(slot)
    if tr then
      if tr.trace_id then b:put(',"trace_id":'); put_str(b, tostring(tr.trace_id)) end
      if tr.span_id then b:put(',"span_id":'); put_str(b, tostring(tr.span_id)) end
    end
  end
end

-- Ends the line; hands the buffer over when it must, else arms the timer.
local function line_tail(b, lvl)
  b:put("}\n")
  nbuf = nbuf + 1
  lines[lvl] = lines[lvl] + 1
  if lvl == ERROR then
    urgent = 1
    handoff()
  elseif #b > cfg.buffer_max then
    handoff()
  elseif not pending and not closing then
    schedule()
  end
end

-- Appends one line; extra is a logger's pre-encoded fields; key the
-- rate limiting's key (the message when nil; false: never limited).
function emit(lvl, msg, fields, extra, key, ctx)
  if type(msg) ~= "string" then msg = tostring(msg) end
  if key ~= false and lvl >= cfg.dedup_level and cfg.dedup_window > 0
      and repeated(lvl, key or msg, msg) then
    return
  end
  local b = out
  line_head(b, lvl, msg, ctx)
  if extra then b:put(extra) end
  if fields then put_fields(b, fields) end
  line_tail(b, lvl)
end

function emit_summary(lvl, msg, n)
  local w = cfg.dedup_window
  local ws = w == floor(w) and ("%d"):format(w) or tostring(w)
  local summary = ("%s ... repeated %d times in the last %s s"):format(msg, n, ws)
  -- Never itself suppressed.
  emit(lvl, summary, { repeated = n }, nil, false)
end

local function check_fields(fname, fields)
  if fields ~= nil and type(fields) ~= "table" then
    error(("orrery.log.%s: bad argument #2 (table of fields expected, got %s)"):format(fname, type(fields)), 3)
  end
end

-- debug/info/warn/error(msg [, fields]): one line at that level. msg is
-- the message (tostring'd if not a string); fields a table of extra keys.
function M.debug(msg, fields)
  if cfg.level > DEBUG then return end
  check_fields("debug", fields)
  emit(DEBUG, msg, fields)
end

function M.info(msg, fields)
  if cfg.level > INFO then return end
  check_fields("info", fields)
  emit(INFO, msg, fields)
end

function M.warn(msg, fields)
  if cfg.level > WARN then return end
  check_fields("warn", fields)
  emit(WARN, msg, fields)
end

function M.error(msg, fields)
  check_fields("error", fields)
  emit(ERROR, msg, fields)
end

local function level_arg(fname, name, argn)
  local lvl = LEVELS[name]
  if not lvl then
    error(("orrery.log.%s: bad argument #%d (\"debug\", \"info\", \"warn\" or \"error\" expected, got %s)")
      :format(fname, argn, type(name) == "string" and ("%q"):format(name) or type(name)), 3)
  end
  return lvl
end

-- log(level, msg [, fields]): a line at a level given by name.
function M.log(level, msg, fields)
  local lvl = level_arg("log", level, 1)
  if lvl < cfg.level and lvl < ERROR then return end
  if fields ~= nil and type(fields) ~= "table" then
    error(("orrery.log.log: bad argument #3 (table of fields expected, got %s)"):format(type(fields)), 2)
  end
  emit(lvl, msg, fields)
end

-- set_level(name): lines below it are skipped ("error" lines never are).
function M.set_level(name)
  cfg.level = level_arg("set_level", name, 1)
end

function M.level() return NAMES[cfg.level] end

-- enabled(name) -> whether a line at that level would be written.
function M.enabled(name)
  local lvl = level_arg("enabled", name, 1)
  return lvl >= cfg.level or lvl == ERROR
end

-- -- Loggers with fields of their own --

local Logger = {}
Logger.__index = Logger

-- with(fields) -> a logger whose lines all carry fields (encoded once):
-- lg:info(msg [, fields]), lg:with(more) for a child.
function M.with(fields)
  if type(fields) ~= "table" then
    error(("orrery.log.with: bad argument #1 (table of fields expected, got %s)"):format(type(fields)), 2)
  end
  local b = buffer.new()
  put_fields(b, fields)
  return setmetatable({ extra = b:tostring() }, Logger)
end

local function check_logger(self, fname)
  if getmetatable(self) ~= Logger then
    error(("orrery.log:%s: bad self (logger expected, got %s; call it with ':')"):format(fname, type(self)), 3)
  end
end

function Logger:with(fields)
  check_logger(self, "with")
  if type(fields) ~= "table" then
    error(("orrery.log:with: bad argument #1 (table of fields expected, got %s)"):format(type(fields)), 2)
  end
  local b = buffer.new()
  put_fields(b, fields)
  return setmetatable({ extra = self.extra .. b:tostring() }, Logger)
end

for lvl, name in ipairs(NAMES) do
  Logger[name] = function(self, msg, fields)
    check_logger(self, name)
    if lvl < cfg.level and lvl < ERROR then return end
    check_fields(name, fields)
    emit(lvl, msg, fields, self.extra)
  end
end

-- -- Output --

-- The writer goes on to fd (owned: it closes it when done) once the lines
-- handed over before have been written.
local function switch_to(fd, owned)
  handoff()
  local w = W
  if w == nil then w = writer() end
  if w and C.orrery_ffi_logw_switch(w, fd, owned) == 0 then return true end
  if owned == 1 then C.orrery_ffi_logw_close_fd(fd) end
  return false
end

local function open_fd(path)
  local fd = C.orrery_ffi_logw_open(path)
  if fd < 0 then return nil, ("%s: %s"):format(path, ffi.string(C.orrery_ffi_strerror(fd))) end
  return fd
end

-- open(path) -> true | nil, err: lines go to path (appended, created
-- mode 0644 less the umask) instead of stderr. SIGHUP reopens it.
local hup_wired = false
function M.open(path)
  if type(path) ~= "string" then
    error(("orrery.log.open: bad argument #1 (path expected, got %s)"):format(type(path)), 2)
  end
  local fd, err = open_fd(path)
  if not fd then return nil, err end
  if not switch_to(fd, 1) then return nil, path .. ": the log writer cannot start" end
  sink.path = path
  if not hup_wired then
    local orrery = require "orrery"
    hup_wired = orrery.on_hup(function() M.reopen() end)
  end
  return true
end

-- reopen() -> true | nil, err: opens the file again by its path (after
-- logrotate renamed it); the lines handed over so far go to the old one.
-- Without a file (stderr) it does nothing. On failure the old file stays.
function M.reopen()
  local path = sink.path
  if not path then return true end
  local fd, err = open_fd(path)
  if not fd then
    io.stderr:write("orrery.log: cannot reopen ", err, "\n")
    return nil, err
  end
  if not switch_to(fd, 1) then return nil, path .. ": the log writer cannot start" end
  return true
end

-- close(): the lines so far go to the file, which the writer then
-- closes; back to stderr.
function M.close()
  if sink.path then switch_to(2, 0) end
  sink.path = nil
end

function M.path() return sink.path end

-- -- Configuration --

local CONFIG = { level = true, dedup_window = true, dedup_level = true, dedup_max = true,
  buffer_max = true, queue_max = true, drain_timeout = true, flush_timeout = true, clock = true }

-- configure{ level, dedup_window, dedup_level, dedup_max, buffer_max,
-- queue_max, drain_timeout, flush_timeout, clock }: see docs/log.md.
function M.configure(opts)
  if type(opts) ~= "table" then
    error(("orrery.log.configure: bad argument #1 (options table expected, got %s)"):format(type(opts)), 2)
  end
  for k in pairs(opts) do
    if not CONFIG[k] then error(("orrery.log.configure: unknown option '%s'"):format(tostring(k)), 2) end
  end
  local function num(key, lo)
    local v = opts[key]
    if v ~= nil and (type(v) ~= "number" or not (v >= lo)) then
      error(("orrery.log.configure: bad option '%s' (number >= %d expected, got %s)"):format(key, lo,
        type(v) == "number" and tostring(v) or type(v)), 3)
    end
    return v
  end
  local level = opts.level and level_arg("configure", opts.level, 1)
  local dlevel = opts.dedup_level and level_arg("configure", opts.dedup_level, 1)
  local window, dmax, bmax = num("dedup_window", 0), num("dedup_max", 0), num("buffer_max", 0)
  local qmax, dtmo, ftmo = num("queue_max", 0), num("drain_timeout", 0), num("flush_timeout", 0)
  if opts.clock ~= nil and type(opts.clock) ~= "function" then
    error("orrery.log.configure: bad option 'clock' (function expected, got " .. type(opts.clock) .. ")", 2)
  end
  flush()
  if level then cfg.level = level end
  if dlevel then cfg.dedup_level = dlevel end
  if window then cfg.dedup_window = window end
  if dmax then cfg.dedup_max = dmax end
  if bmax then cfg.buffer_max = bmax end
  if qmax then
    cfg.queue_max = qmax
    if W then C.orrery_ffi_logw_set_max(W, qmax) end
  end
  if dtmo then cfg.drain_timeout = dtmo end
  if ftmo then cfg.flush_timeout = ftmo end
  if opts.clock then cfg.clock = opts.clock end
  -- Windows measured on another clock mean nothing on this one.
  if opts.clock or window then
    seen, nseen = { {}, {}, {}, {} }, 0
  end
end

-- stats() -> { lines = { level = n }, suppressed = { level = n },
-- dropped = n, dropped_bytes = n, buffered_bytes = n, queued_bytes = n,
-- queue_max = n, written_bytes = n, write_errors = n [, last_error] }:
-- what orrery.metrics exposes. buffered_bytes: encoded, not yet handed
-- over; queued_bytes: handed over, not yet written.
-- lines counts the lines logged, dropped those of them the writer's full
-- queue refused.
function M.stats()
  local l, s = {}, {}
  for i, name in ipairs(NAMES) do
    l[name], s[name] = lines[i], suppressed[i]
  end
  local st = { lines = l, suppressed = s, dropped = dropped, dropped_bytes = 0, queued_bytes = 0,
    buffered_bytes = #out,
    queue_max = cfg.queue_max, written_bytes = 0, write_errors = 0 }
  if W then
    C.orrery_ffi_logw_stats(W, wstats)
    st.dropped_bytes, st.queued_bytes = tonumber(wstats.dropped_bytes), tonumber(wstats.queued_bytes)
    st.written_bytes, st.write_errors = tonumber(wstats.written_bytes), tonumber(wstats.write_errors)
    if wstats.last_errno ~= 0 then st.last_error = ffi.string(C.orrery_ffi_strerror(wstats.last_errno)) end
  end
  return st
end

-- -- Hooks for orrery.http --

-- access(req, status, bytes, dur): the HTTP server's access line, one
-- info line "http request" with method, path, status, bytes, remote and
-- duration_ms. The server calls it when access_log is on (its default).
-- Encoded straight, not through a fields table: 235 ns a line through
-- emit with a reused table, 109 this way (scripts/bench/log.lua).
local US3 = {}
for i = 0, 999 do US3[i] = (".%03d"):format(i) end
function M.access(req, status, bytes, dur)
  if cfg.level > INFO then return end
  local b = out
  line_head(b, INFO, "http request", req.ctx)
  -- The method is one of the parser's names: nothing to escape.
  b:put(',"method":"', req.method, '","path":')
  put_str(b, req.path)
  b:put(',"status":', status, ',"bytes":', bytes)
  local remote = req.remote
  if remote then b:put(',"remote":'); put_str(b, remote) end
  local us = floor(dur * 1e6 + 0.5)
  local ms = floor(us / 1000)
  b:put(',"duration_ms":', ms, US3[us - ms * 1000])
  line_tail(b, INFO)
end

-- http_access(line, req, status, bytes): the same as an access_log
-- function (for servers given one explicitly).
function M.http_access(line, req, status, bytes)
  if cfg.level > INFO then return end
  local dur = type(line) == "string" and tonumber(line:match('"duration_ms":([%d.eE+-]+)'))
  emit(INFO, "http request", {
    method = req and req.method, path = req and req.path, remote = req and req.remote,
    status = status, bytes = bytes, duration_ms = dur,
  })
end

-- The first line of an error message, and the rest (its traceback).
local function split_error(err)
  local s = type(err) == "string" and err or tostring(err)
  local head, rest = s:match("^(.-)\n(.*)$")
  if not head then return s, nil end
  return head, rest
end

-- handler_error(what, req, err): the HTTP server's handler errors, one
-- error line "http: <what>: <first line of err>" with method, path, route
-- and the traceback as fields. The rate limiting's key is the error's
-- location ("app.lua:12:") when it starts with one, else its first line:
-- the same failure on other paths, with other request data in its
-- message, or with another traceback, is folded into one summary.
function M.handler_error(what, req, err)
  local head, tb = split_error(err)
  local loc = head:match("^([^%s:]+:%d+):")
  emit(ERROR, "http: " .. what .. ": " .. head, {
    method = req and req.method, path = req and req.path, route = req and req.route,
    traceback = tb,
  }, nil, "http: " .. what .. " at " .. (loc or head), req and req.ctx)
end

-- http_log(msg): a log function for http.serve: its messages (handler
-- errors with their tracebacks, accept failures) as error lines, which
-- the rate limiting folds when a route fails the same way again and
-- again (keyed on the message's first line).
function M.http_log(msg)
  local head, tb = split_error(msg)
  emit(ERROR, head, tb and { traceback = tb } or nil)
end

-- ORRERY_LOG_LEVEL sets the starting level.
do
  local env = os.getenv("ORRERY_LOG_LEVEL")
  if env and LEVELS[env:lower()] then cfg.level = LEVELS[env:lower()] end
end

return M
