-- SPDX-License-Identifier: MIT
-- orrery.log -- structured logs: one JSON object per line, levels set at
-- run time, to stderr or a file reopened on SIGHUP, identical warnings
-- and errors rate-limited (docs/log.md).
--
-- The caller only encodes its line into a buffer: a 0-second timer
-- writes the buffer on the next loop turn, one write for every line of
-- the turn. Error lines are the exception: they are written at once
-- (with everything buffered before them, in order), so that the last
-- words of a process that then hangs or is killed are not lost. The
-- buffer is also written when the process exits through the loop (the
-- script ends, orrery.exit, a panic, a deadlock, the shutdown's grace
-- period; not os.exit), and as soon as it holds more than buffer_max
-- bytes.
--
-- Lines go out with a plain write(2) on the loop thread: to a file or a
-- terminal that is quick, but a full pipe on stderr blocks the loop for
-- as long as its reader does not read.
local C = require "orrery.ffi"
local buffer = require "string.buffer"
local sched = require "orrery.sched"
local json = require "orrery.json"
local NUMBER_BUF = require("orrery.json.core").number_buf

local type, tostring, pairs, error, floor, getmetatable =
  type, tostring, pairs, error, math.floor, getmetatable
local json_str_len, json_escape, json_number = C.orrery_ffi_json_str_len,
  C.orrery_ffi_json_escape, C.orrery_ffi_json_number
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
  buffer_max = 1048576, -- bytes buffered before a write at once
  clock = function() return C.orrery_ffi_now() end,
}

local out = buffer.new(65536)
local pending = false -- the flush timer is armed
local closing = false -- the Lua state is closing: no more timers
local sink = { path = nil, f = io.stderr }
local lines, suppressed = { 0, 0, 0, 0 }, { 0, 0, 0, 0 }
local write_errors = 0
local flush_timer -- created on first use (sched's timers need the host)

-- -- Encoding --

local function put_bad_utf8(b, s)
  -- Not UTF-8: each byte of 0x80 and above is written as the code point
  -- of the same number (as if the text were Latin-1), so the line stays
  -- valid JSON and nothing is dropped.
  b:put('"')
  for i = 1, #s do
    local c = s:byte(i)
    if c < 0x20 or c == 0x22 or c == 0x5c or c >= 0x7f then
      if c == 0x22 then b:put('\\"')
      elseif c == 0x5c then b:put("\\\\")
      elseif c == 0x0a then b:put("\\n")
      else b:putf("\\u%04x", c) end
    else
      b:put(string.char(c))
    end
  end
  b:put('"')
end

local function put_str(b, s)
  local n = #s
  local m = json_str_len(s, n)
  if m == n + 2 then
    b:put('"', s, '"')
  elseif m == 0 then
    put_bad_utf8(b, s)
  else
    local p = b:reserve(m)
    b:commit(json_escape(p, s, n))
  end
end

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

local function write_out(s)
  local ok, err = sink.f:write(s)
  if ok then ok, err = sink.f:flush() end
  if not ok then
    write_errors = write_errors + 1
    if sink.f ~= io.stderr and write_errors == 1 then
      io.stderr:write("orrery.log: cannot write ", tostring(sink.path), ": ", tostring(err), "\n")
    end
  end
end

local sweep

-- flush(): writes every buffered line now (the summaries of rate-limited
-- lines whose window has passed included).
local function flush()
  if cfg.dedup_window > 0 then sweep(false) end
  if #out > 0 then
    local s = out:tostring()
    out:reset()
    write_out(s)
  end
end
M.flush = flush

local function on_timer()
  pending = false
  flush()
end

local function schedule()
  pending = true
  if flush_timer == nil then flush_timer = sched.new_timer(on_timer) end
  sched.timer_start(flush_timer, 0)
end

-- At exit: the loop's last call into Lua ("exit", before the Lua state
-- closes) writes what is buffered, pending summaries included. (A __gc
-- finalizer would not do: once lua_close starts, the buffer's own
-- finalizer may already have freed it.)
do
  local prev = sched.handlers.exit
  sched.handlers.exit = function(code)
    closing = true
    pcall(function()
      if cfg.dedup_window > 0 then sweep(true) end
      if #out > 0 then write_out(out:tostring()) end
      out:reset()
    end)
    if prev then prev(code) end
  end
end

-- -- Rate limiting --
--
-- Per level, msg -> { t0 = window start, n = suppressed in it }. The
-- first line of a window is written; the identical ones after it within
-- dedup_window seconds only count. When the window has passed (at the
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
      flush()
    end)
  end
  sched.timer_start(sweep_timer, cfg.dedup_window)
end

-- Writes the summaries of the windows that have passed (all of them when
-- final) and forgets those windows; re-arms the timer for the others.
function sweep(final)
  if nseen == 0 then return end
  local now = cfg.clock()
  local window = cfg.dedup_window
  local waiting = false
  for lvl = 1, 4 do
    for msg, e in pairs(seen[lvl]) do
      if final or now - e.t0 >= window then
        if e.n > 0 then emit_summary(lvl, msg, e.n) end
        seen[lvl][msg] = nil
        nseen = nseen - 1
      elseif e.n > 0 then
        waiting = true
      end
    end
  end
  if waiting and not final and not closing then arm_sweep() end
end

-- true when this line is a repeat to suppress.
local function repeated(lvl, msg)
  local tbl = seen[lvl]
  local e = tbl[msg]
  local now = cfg.clock()
  if e then
    if now - e.t0 < cfg.dedup_window then
      e.n = e.n + 1
      suppressed[lvl] = suppressed[lvl] + 1
      if e.n == 1 then arm_sweep() end
      return true
    end
    if e.n > 0 then emit_summary(lvl, msg, e.n) end
    e.t0, e.n = now, 0
  elseif nseen < cfg.dedup_max then
    tbl[msg] = { t0 = now, n = 0 }
    nseen = nseen + 1
  end
  return false
end

-- -- Lines --

local function trace_of(slot)
  local ctx = slot ~= 0 and sched.ctxs[slot]
  if not ctx then return nil end
  local v = ctx.values
  while v do
    if v.key == M.TRACE_KEY then return v.value end
    v = v.up
  end
  return nil
end

-- Appends one line; extra is a logger's pre-encoded fields.
local function emit(lvl, msg, fields, extra)
  if type(msg) ~= "string" then msg = tostring(msg) end
  if lvl >= cfg.dedup_level and cfg.dedup_window > 0 and repeated(lvl, msg) then return end
  local b = out
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
    local tr = trace_of(slot)
    if tr then
      if tr.trace_id then b:put(',"trace_id":'); put_str(b, tostring(tr.trace_id)) end
      if tr.span_id then b:put(',"span_id":'); put_str(b, tostring(tr.span_id)) end
    end
  end
  if extra then b:put(extra) end
  if fields then put_fields(b, fields) end
  b:put("}\n")
  lines[lvl] = lines[lvl] + 1
  if lvl == ERROR or #b > cfg.buffer_max then
    flush()
  elseif not pending and not closing then
    schedule()
  end
end

function emit_summary(lvl, msg, n)
  local w = cfg.dedup_window
  local ws = w == floor(w) and ("%d"):format(w) or tostring(w)
  local summary = ("%s ... repeated %d times in the last %s s"):format(msg, n, ws)
  -- Written straight, not through repeated(): a summary is never itself
  -- suppressed.
  local save = cfg.dedup_window
  cfg.dedup_window = 0
  emit(lvl, summary, { repeated = n })
  cfg.dedup_window = save
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

-- open(path) -> true | nil, err: lines go to path (appended, created
-- mode 0644 less the umask) instead of stderr. SIGHUP reopens it.
local hup_wired = false
function M.open(path)
  if type(path) ~= "string" then
    error(("orrery.log.open: bad argument #1 (path expected, got %s)"):format(type(path)), 2)
  end
  local f, err = io.open(path, "a")
  if not f then return nil, err end
  f:setvbuf("full")
  flush()
  local old = sink.f
  sink.f, sink.path = f, path
  if old ~= io.stderr then old:close() end
  if not hup_wired then
    local orrery = require "orrery"
    hup_wired = orrery.on_hup(function() M.reopen() end)
  end
  return true
end

-- reopen() -> true | nil, err: opens the file again by its path (after
-- logrotate renamed it); the lines buffered so far go to the old one.
-- Without a file (stderr) it does nothing. On failure the old file stays.
function M.reopen()
  local path = sink.path
  if not path then return true end
  local f, err = io.open(path, "a")
  if not f then
    io.stderr:write("orrery.log: cannot reopen ", path, ": ", tostring(err), "\n")
    return nil, err
  end
  f:setvbuf("full")
  flush()
  local old = sink.f
  sink.f = f
  if old ~= io.stderr then old:close() end
  return true
end

-- close(): writes what is buffered, closes the file, back to stderr.
function M.close()
  flush()
  if sink.f ~= io.stderr then sink.f:close() end
  sink.f, sink.path = io.stderr, nil
end

function M.path() return sink.path end

-- -- Configuration --

local CONFIG = { level = true, dedup_window = true, dedup_level = true, dedup_max = true,
  buffer_max = true, clock = true }

-- configure{ level, dedup_window, dedup_level, dedup_max, buffer_max,
-- clock }: see docs/log.md.
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
  if opts.clock ~= nil and type(opts.clock) ~= "function" then
    error("orrery.log.configure: bad option 'clock' (function expected, got " .. type(opts.clock) .. ")", 2)
  end
  flush()
  if level then cfg.level = level end
  if dlevel then cfg.dedup_level = dlevel end
  if window then cfg.dedup_window = window end
  if dmax then cfg.dedup_max = dmax end
  if bmax then cfg.buffer_max = bmax end
  if opts.clock then cfg.clock = opts.clock end
  -- Windows measured on another clock mean nothing on this one.
  if opts.clock or window then
    seen, nseen = { {}, {}, {}, {} }, 0
  end
end

-- stats() -> { lines = { level = n }, suppressed = { level = n },
-- write_errors = n }: what orrery.metrics exposes.
function M.stats()
  local l, s = {}, {}
  for i, name in ipairs(NAMES) do
    l[name], s[name] = lines[i], suppressed[i]
  end
  return { lines = l, suppressed = s, write_errors = write_errors }
end

-- -- Hooks for orrery.http --

-- http_access(line, req, status, bytes): an access_log function for
-- http.serve: one info line "http request" with method, path, status,
-- bytes, remote and duration_ms.
function M.http_access(line, req, status, bytes)
  if cfg.level > INFO then return end
  local dur = type(line) == "string" and tonumber(line:match('"duration_ms":([%d.eE+-]+)'))
  emit(INFO, "http request", {
    method = req and req.method, path = req and req.path, remote = req and req.remote,
    status = status, bytes = bytes, duration_ms = dur,
  })
end

-- http_log(msg): a log function for http.serve: its messages (handler
-- errors with their tracebacks, accept failures) as error lines, which
-- the rate limiting folds when a route fails the same way again and again.
function M.http_log(msg)
  emit(ERROR, msg)
end

-- ORRERY_LOG_LEVEL sets the starting level.
do
  local env = os.getenv("ORRERY_LOG_LEVEL")
  if env and LEVELS[env:lower()] then cfg.level = LEVELS[env:lower()] end
end

return M
