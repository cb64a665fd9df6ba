-- SPDX-License-Identifier: MIT
-- orrery.metrics -- counters, gauges and histograms with labels, their
-- registries, and the Prometheus text and OpenMetrics expositions
-- (docs/metrics.md).
--
-- A metric is a family of series, one per set of label values. Each series
-- is a small Lua table (a "child") whose value is a plain field, so an
-- increment is a table store that the JIT compiles into the caller's
-- trace: c:inc(1, "ok") walks one nested table per label (label values are
-- the keys) and adds to the child it finds; c:with("ok") hands back the
-- child itself, which skips the walk. Only a label set seen for the first
-- time takes the slow path, which checks the values, enforces max_series
-- and caches the new child. Measured by scripts/bench/metrics.lua.
--
-- Built-in metrics (runtime, breakers, limiters, log) are read when the
-- default registry is exposed, from the modules that are loaded: this
-- module requires none of them.
local check = require "orrery.check"
local buffer = require "string.buffer"

local type, error, tostring, select, pairs, ipairs, setmetatable, getmetatable =
  type, error, tostring, select, pairs, ipairs, setmetatable, getmetatable
local floor, INF = math.floor, math.huge

local M = {}

-- Prometheus client_golang's DefBuckets (seconds).
M.DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
M.DEFAULT_MAX_SERIES = 1000
M.TEXT = "text/plain; version=0.0.4; charset=utf-8"
M.OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

local NAME_RE = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL_RE = "^[a-zA-Z_][a-zA-Z0-9_]*$"
local UNIT_RE = "^[a-z][a-z0-9_]*$"

-- -- Children: one series each --

local CounterChild, GaugeChild, HistChild = {}, {}, {}
CounterChild.__index, GaugeChild.__index, HistChild.__index = CounterChild, GaugeChild, HistChild

local function bad_number(fname, argn, v)
  error(("orrery.metrics:%s: bad argument #%d (number expected, got %s)"):format(fname, argn,
    check.show(v)), 3)
end

function CounterChild:inc(n)
  if n == nil then
    n = 1
  elseif type(n) ~= "number" or not (n >= 0) then
    error(("orrery.metrics:inc: bad argument #1 (non-negative number expected, got %s)"):format(
      check.show(n)), 2)
  end
  self.v = self.v + n
end

function CounterChild:value() return self.v end

function GaugeChild:set(v)
  if type(v) ~= "number" then bad_number("set", 1, v) end
  self.v = v
end

function GaugeChild:inc(n)
  if n == nil then n = 1 elseif type(n) ~= "number" then bad_number("inc", 1, n) end
  self.v = self.v + n
end

function GaugeChild:dec(n)
  if n == nil then n = 1 elseif type(n) ~= "number" then bad_number("dec", 1, n) end
  self.v = self.v - n
end

function GaugeChild:value() return self.v end

-- counts[i] holds the observations in bucket i alone (ub[i-1] < v <= ub[i],
-- the last one +Inf); the exposition makes them cumulative. find(v) is
-- the bucket's index, a binary search unrolled into nested ifs (see
-- bucket_finder).
function HistChild:observe(v)
  if type(v) ~= "number" then bad_number("observe", 1, v) end
  local c = self.counts
  local i = self.find(v)
  c[i] = c[i] + 1
  self.sum = self.sum + v
  self.count = self.count + 1
end

function HistChild:value() return self.count, self.sum end

-- -- Metrics --

local Counter, Gauge, Histogram = {}, {}, {}
Counter.__index, Gauge.__index, Histogram.__index = Counter, Gauge, Histogram
local KINDS = { [Counter] = "counter", [Gauge] = "gauge", [Histogram] = "histogram" }
local CHILD = { counter = CounterChild, gauge = GaugeChild, histogram = HistChild }

-- bucket_finder(bounds) -> find(v): the index of v's bucket (the first
-- bound >= v; #bounds + 1 for larger values and NaN). A loop over the
-- bounds inside observe() is an inner loop in every caller's loop, which
-- LuaJIT will not compile as part of it: the caller's trace aborted
-- ("inner loop in root trace") and observe() cost 50 ns; as a generated
-- tree of comparisons it is straight-line code in the caller's trace.
local function bucket_finder(b)
  local function gen(lo, hi)
    if lo > hi then return "return " .. lo end
    local mid = floor((lo + hi) / 2)
    return ("if v <= %.17g then %s else %s end"):format(b[mid], gen(lo, mid - 1), gen(mid + 1, hi))
  end
  return assert(load("local v = ... " .. gen(1, #b), "=orrery.metrics buckets"))
end

local function new_child(m, lv)
  local ch = { lv = lv }
  if m.kind == "histogram" then
    local counts = {}
    for i = 1, m.nb + 1 do counts[i] = 0 end
    ch.counts, ch.sum, ch.count, ch.find = counts, 0, 0, m.find
  else
    ch.v = 0
  end
  return setmetatable(ch, CHILD[m.kind])
end

-- level: error()'s, naming the user's line from the caller of label_str.
local function label_str(m, v, i, level)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if v ~= v then
      error(("orrery.metrics: %s: label %s: NaN is not a label value"):format(m.name, m.labels[i]), level)
    end
    if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return ("%d"):format(v) end
    return tostring(v)
  end
  if t == "boolean" then return tostring(v) end
  error(("orrery.metrics: %s: label %s: bad value (string expected, got %s)"):format(m.name,
    m.labels[i], t), level)
end

local function series_key(lv)
  local parts = {}
  for i = 1, #lv do parts[i] = #lv[i] .. ":" .. lv[i] end
  return table.concat(parts)
end

-- Caches ch under the path of keys vals[1..nl] in m.kids.
local function insert(m, vals, ch)
  local t, nl = m.kids, m.nl
  for i = 1, nl - 1 do
    local k = vals[i]
    local nt = t[k]
    if nt == nil then
      nt = {}
      t[k] = nt
    end
    t = nt
  end
  t[vals[nl]] = ch
end

local function refuse(m)
  m.refused = m.refused + 1
  local r = m.reg.refused
  if r and r ~= m then r:inc(1, m.name) end
  return m.noop
end

-- The slow path: a label set not cached yet (or the wrong number of
-- values). Raises at level 3 from here, which is the user's line: it is
-- reached by a tail call from lookup, itself called from a method.
local function slow_child(m, ...)
  local nl = m.nl
  local n = select("#", ...)
  local raw = { ... }
  local got = 0
  for i = 1, n do if raw[i] ~= nil then got = i end end
  if got ~= nl then
    error(("orrery.metrics: %s: expected %d label value%s (%s), got %d"):format(m.name, nl,
      nl == 1 and "" or "s", table.concat(m.labels, ", "), got), 3)
  end
  local lv = {}
  for i = 1, nl do
    if raw[i] == nil then
      error(("orrery.metrics: %s: label %s: value missing"):format(m.name, m.labels[i]), 3)
    end
    lv[i] = label_str(m, raw[i], i, 4)
  end
  local key = series_key(lv)
  local ch = m.bykey[key]
  if ch == nil then
    if m.nseries >= m.max_series then return refuse(m) end
    ch = new_child(m, lv)
    m.bykey[key] = ch
    m.nseries = m.nseries + 1
    m.series[#m.series + 1] = ch
    insert(m, lv, ch)
  end
  insert(m, raw, ch) -- numbers and booleans find it too
  return ch
end

local function lookup(m, a, b, c, ...)
  local nl = m.nl
  local t = m.kids
  if nl == 1 then
    t = t[a]
  elseif nl == 2 then
    t = t[a]
    if t then t = t[b] end
  elseif nl == 3 then
    t = t[a]
    if t then t = t[b] end
    if t then t = t[c] end
  else
    return slow_child(m, a, b, c, ...)
  end
  if t then return t end
  return slow_child(m, a, b, c, ...)
end

local function check_metric(self, mt, fname)
  if getmetatable(self) ~= mt then
    error(("orrery.metrics:%s: bad self (%s expected, got %s; call it with ':')"):format(fname,
      KINDS[mt], type(self)), 3)
  end
end

-- c:inc([n [, label values...]]): adds n (default 1, never negative).
function Counter:inc(n, a, b, c, ...)
  if n == nil then
    n = 1
  elseif type(n) ~= "number" or not (n >= 0) then
    check_metric(self, Counter, "inc")
    error(("orrery.metrics:inc: bad argument #1 (non-negative number expected, got %s)"):format(
      check.show(n)), 2)
  end
  local ch = self.root
  if ch == nil then
    check_metric(self, Counter, "inc")
    ch = lookup(self, a, b, c, ...)
  end
  ch.v = ch.v + n
end

function Gauge:set(v, a, b, c, ...)
  if type(v) ~= "number" then
    check_metric(self, Gauge, "set")
    bad_number("set", 1, v)
  end
  local ch = self.root
  if ch == nil then
    check_metric(self, Gauge, "set")
    ch = lookup(self, a, b, c, ...)
  end
  ch.v = v
end

function Gauge:inc(n, a, b, c, ...)
  if n == nil then n = 1 elseif type(n) ~= "number" then bad_number("inc", 1, n) end
  local ch = self.root
  if ch == nil then
    check_metric(self, Gauge, "inc")
    ch = lookup(self, a, b, c, ...)
  end
  ch.v = ch.v + n
end

function Gauge:dec(n, a, b, c, ...)
  if n == nil then n = 1 elseif type(n) ~= "number" then bad_number("dec", 1, n) end
  local ch = self.root
  if ch == nil then
    check_metric(self, Gauge, "dec")
    ch = lookup(self, a, b, c, ...)
  end
  ch.v = ch.v - n
end

function Histogram:observe(v, a, b, c, ...)
  if type(v) ~= "number" then
    check_metric(self, Histogram, "observe")
    bad_number("observe", 1, v)
  end
  local ch = self.root
  if ch == nil then
    check_metric(self, Histogram, "observe")
    ch = lookup(self, a, b, c, ...)
  end
  local cn = ch.counts
  local i = ch.find(v)
  cn[i] = cn[i] + 1
  ch.sum = ch.sum + v
  ch.count = ch.count + 1
end

-- m:with(label values...) -> the series for those values, with the
-- metric's methods minus the labels (child:inc(n), child:set(v),
-- child:observe(v)). Past max_series it is a series that is never exposed.
local function with(self, ...)
  if not KINDS[getmetatable(self)] then
    error(("orrery.metrics:with: bad self (metric expected, got %s; call it with ':')"):format(
      type(self)), 2)
  end
  if self.root then
    if select("#", ...) > 0 and (...) ~= nil then
      error(("orrery.metrics: %s: expected 0 label values, got %d"):format(self.name,
        select("#", ...)), 2)
    end
    return self.root
  end
  local ch = lookup(self, ...)
  return ch
end

-- m:remove(label values...) -> true if that series existed: it is no
-- longer exposed and no longer counts against max_series.
local function remove(self, ...)
  if not KINDS[getmetatable(self)] then
    error("orrery.metrics:remove: bad self (metric expected; call it with ':')", 2)
  end
  if self.nl == 0 then return false end
  local lv = {}
  for i = 1, self.nl do
    local v = select(i, ...)
    if v == nil then
      error(("orrery.metrics: %s: expected %d label values"):format(self.name, self.nl), 2)
    end
    lv[i] = label_str(self, v, i, 3)
  end
  local key = series_key(lv)
  local ch = self.bykey[key]
  if not ch then return false end
  self.bykey[key] = nil
  self.nseries = self.nseries - 1
  local keep = {}
  for _, s in ipairs(self.series) do if s ~= ch then keep[#keep + 1] = s end end
  self.series = keep
  -- The cache is rebuilt from the remaining series: raw (non-string)
  -- keys come back on their next use.
  self.kids = {}
  for _, s in ipairs(keep) do insert(self, s.lv, s) end
  return true
end

-- m:reset(): drops every series (an unlabelled metric goes back to 0).
local function reset(self)
  if not KINDS[getmetatable(self)] then
    error("orrery.metrics:reset: bad self (metric expected; call it with ':')", 2)
  end
  if self.root then
    local fresh = new_child(self, {})
    for k, v in pairs(fresh) do self.root[k] = v end
    return
  end
  self.kids, self.bykey, self.series, self.nseries = {}, {}, {}, 0
end

local function series_count(self) return self.nseries end

for mt in pairs(KINDS) do
  mt.with, mt.remove, mt.reset, mt.series_count = with, remove, reset, series_count
  mt.__tostring = function(self) return ("%s %s"):format(self.kind, self.name) end
end

-- value(label values...) -> the series' value (histograms: count, sum),
-- or nil when that series does not exist; for tests and the console.
local function value(self, ...)
  if self.root then return self.root:value() end
  local lv = {}
  for i = 1, self.nl do
    local v = select(i, ...)
    if v == nil then return nil end
    lv[i] = label_str(self, v, i, 3)
  end
  local ch = self.bykey[series_key(lv)]
  if ch then return ch:value() end
  return nil
end
for mt in pairs(KINDS) do mt.value = value end

-- -- Registries --

local Registry = {}
Registry.__index = Registry

local OPTS = {
  counter = { name = true, help = true, labels = true, max_series = true, unit = true, registry = true },
  gauge = { name = true, help = true, labels = true, max_series = true, unit = true, registry = true },
  histogram = { name = true, help = true, labels = true, max_series = true, unit = true,
    registry = true, buckets = true },
}
local MT = { counter = Counter, gauge = Gauge, histogram = Histogram }

-- Sample names each kind writes, for collisions between families.
local function sample_names(kind, name)
  if kind == "histogram" then return { name .. "_bucket", name .. "_sum", name .. "_count" } end
  return { name }
end

local function same_def(m, kind, opts, labels)
  if m.kind ~= kind or m.help ~= opts.help or #m.labels ~= #labels then return false end
  for i = 1, #labels do if m.labels[i] ~= labels[i] then return false end end
  return true
end

local function define(reg, kind, opts, fname)
  local function bad(msg) error(("%s: %s"):format(fname, msg), 4) end
  if type(opts) ~= "table" then
    error(("%s: bad argument #1 (options table expected, got %s)"):format(fname, type(opts)), 4)
  end
  for k in pairs(opts) do
    if not OPTS[kind][k] then bad(("unknown option '%s'"):format(tostring(k))) end
  end
  local name, help, unit = opts.name, opts.help, opts.unit
  if type(name) ~= "string" then bad("bad option 'name' (string expected, got " .. type(name) .. ")") end
  if not name:find(NAME_RE) then bad(("bad option 'name' (%q: want [a-zA-Z_:][a-zA-Z0-9_:]*)"):format(name)) end
  if name:sub(1, 2) == "__" then bad(("bad option 'name' (%q: names beginning with __ are reserved)"):format(name)) end
  if type(help) ~= "string" or help == "" then bad("bad option 'help' (non-empty string expected)") end
  -- Counters are exposed as <name>_total; a name given without the
  -- suffix gets it, as the Python client does.
  local base = name
  if kind == "counter" then
    if name:sub(-6) == "_total" then base = name:sub(1, -7) else name = name .. "_total" end
    if base == "" then bad(("bad option 'name' (%q)"):format(opts.name)) end
  elseif name:sub(-6) == "_total" then
    bad(("bad option 'name' (%q: _total is for counters)"):format(name))
  end
  if kind == "histogram" then
    for _, suf in ipairs({ "_bucket", "_sum", "_count" }) do
      if name:sub(-#suf) == suf then bad(("bad option 'name' (%q: %s is reserved for histogram series)"):format(name, suf)) end
    end
  end
  if unit ~= nil then
    if type(unit) ~= "string" or not unit:find(UNIT_RE) then bad("bad option 'unit' (a lower-case unit such as \"seconds\" expected)") end
    if base:sub(-#unit - 1) ~= "_" .. unit then
      bad(("bad option 'name' (%q must end in _%s, its unit)"):format(name, unit))
    end
  end
  local labels = opts.labels or {}
  if type(labels) ~= "table" then bad("bad option 'labels' (list of label names expected)") end
  local seen = {}
  for i, l in ipairs(labels) do
    if type(l) ~= "string" or not l:find(LABEL_RE) or l:sub(1, 2) == "__" then
      bad(("bad option 'labels' (label %s: want [a-zA-Z_][a-zA-Z0-9_]*, not beginning with __)"):format(
        type(l) == "string" and ("%q"):format(l) or "#" .. i))
    end
    if kind == "histogram" and l == "le" then bad("bad option 'labels' (\"le\" is reserved for histogram buckets)") end
    if seen[l] then bad(("bad option 'labels' (duplicate label %q)"):format(l)) end
    seen[l] = true
  end
  local nkeys = 0
  for _ in pairs(labels) do nkeys = nkeys + 1 end
  if nkeys ~= #labels then bad("bad option 'labels' (list of label names expected)") end
  local max_series = opts.max_series or M.DEFAULT_MAX_SERIES
  if type(max_series) ~= "number" or not (max_series >= 1) or (max_series ~= INF and max_series % 1 ~= 0) then
    bad("bad option 'max_series' (positive integer expected)")
  end
  local buckets
  if kind == "histogram" then
    buckets = {}
    local src = opts.buckets or M.DEFAULT_BUCKETS
    if type(src) ~= "table" or #src == 0 then bad("bad option 'buckets' (non-empty list of numbers expected)") end
    for i, b in ipairs(src) do
      if type(b) ~= "number" or b ~= b then bad(("bad option 'buckets' (bucket #%d is not a number)"):format(i)) end
      if i > 1 and not (b > src[i - 1]) then bad("bad option 'buckets' (must be strictly increasing)") end
      if b ~= INF then buckets[#buckets + 1] = b end -- +Inf is always there
    end
  end

  local old = reg.byname[name]
  if old then
    if same_def(old, kind, opts, labels) then return old end
    bad(("metric %q is already registered with another definition"):format(name))
  end
  local samples = sample_names(kind, name)
  for _, s in ipairs(samples) do
    if reg.samples[s] then bad(("metric %q collides with %q"):format(name, reg.samples[s])) end
  end

  local lcopy = {}
  for i, l in ipairs(labels) do lcopy[i] = l end
  local m = setmetatable({
    kind = kind, name = name, base = base, help = help, unit = unit, labels = lcopy,
    nl = #lcopy, kids = {}, bykey = {}, series = {}, nseries = 0, max_series = max_series,
    refused = 0, reg = reg, buckets = buckets, nb = buckets and #buckets,
    find = buckets and bucket_finder(buckets),
  }, MT[kind])
  m.noop = new_child(m, {})
  if m.nl == 0 then
    m.root = new_child(m, {})
    m.series[1], m.nseries = m.root, 1
  end
  reg.byname[name] = m
  for _, s in ipairs(samples) do reg.samples[s] = name end
  return m
end

-- registry([opts]) -> a registry of its own (metrics.default is the one
-- the module-level functions use). opts.runtime = true adds the built-in
-- metrics to it.
function M.registry(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("orrery.metrics.registry: bad argument #1 (options table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "runtime" then error(("orrery.metrics.registry: unknown option '%s'"):format(tostring(k)), 2) end
  end
  local r = setmetatable({ byname = {}, samples = {}, collectors = {} }, Registry)
  r.refused = define(r, "counter", { name = "orrery_metrics_refused_series_total",
    help = "Observations dropped because their metric had reached max_series label sets.",
    labels = { "metric" }, max_series = INF }, "orrery.metrics.registry")
  if opts.runtime then M.runtime(r) end
  return r
end

local function check_reg(self, fname)
  if getmetatable(self) ~= Registry then
    error(("orrery.metrics:%s: bad self (registry expected, got %s; call it with ':')"):format(fname,
      type(self)), 3)
  end
end

-- define is never tail-called from a public function, so that its
-- errors (level 4) name the user's line.
function Registry:counter(opts)
  check_reg(self, "counter")
  local m = define(self, "counter", opts, "orrery.metrics.counter")
  return m
end

function Registry:gauge(opts)
  check_reg(self, "gauge")
  local m = define(self, "gauge", opts, "orrery.metrics.gauge")
  return m
end

function Registry:histogram(opts)
  check_reg(self, "histogram")
  local m = define(self, "histogram", opts, "orrery.metrics.histogram")
  return m
end

-- r:get(name) -> the metric registered under name (a counter's with its
-- _total), or nil.
function Registry:get(name)
  check_reg(self, "get")
  return self.byname[name] or self.byname[tostring(name) .. "_total"]
end

-- r:unregister(name) -> true if it was registered.
function Registry:unregister(name)
  check_reg(self, "unregister")
  local m = self:get(name)
  if not m or m == self.refused then return false end
  self.byname[m.name] = nil
  for _, s in ipairs(sample_names(m.kind, m.name)) do self.samples[s] = nil end
  return true
end

-- r:on_collect(fn): fn(r) runs before every exposition of r, to set
-- gauges from state that is cheaper to read when scraped.
function Registry:on_collect(fn)
  check_reg(self, "on_collect")
  if not check.callable(fn) then
    error("orrery.metrics.on_collect: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  self.collectors[#self.collectors + 1] = fn
end

-- -- Exposition --

local function fmt_value(v)
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return ("%d"):format(v) end
  if v ~= v then return "NaN" end
  if v == INF then return "+Inf" end
  if v == -INF then return "-Inf" end
  local s = ("%.15g"):format(v)
  if tonumber(s) ~= v then s = ("%.17g"):format(v) end
  return s
end
M.format_value = fmt_value

-- OpenMetrics wants le values in canonical float form: 1.0, not 1.
local function fmt_le(v, om)
  local s = fmt_value(v)
  if om and v == floor(v) and v ~= INF and not s:find("[e.]") then s = s .. ".0" end
  return s
end

local function esc_label(s)
  return (s:gsub('[\\\n"]', { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' }))
end

local function esc_help(s, om)
  if om then return (s:gsub('[\\\n"]', { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' })) end
  return (s:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

-- A series' label pairs, escaped, without braces: computed once, since a
-- series' label values never change.
local function label_pairs(m, ch)
  local lt = ch.lt
  if lt == nil then
    local parts = {}
    for i = 1, m.nl do parts[i] = ('%s="%s"'):format(m.labels[i], esc_label(ch.lv[i])) end
    lt = table.concat(parts, ",")
    ch.lt = lt
  end
  return lt
end

local function sorted_series(m)
  local list = {}
  for i, s in ipairs(m.series) do list[i] = s end
  table.sort(list, function(a, b)
    local x, y = a.lv, b.lv
    for i = 1, #x do
      if x[i] ~= y[i] then return x[i] < y[i] end
    end
    return false
  end)
  return list
end

-- The le="..." label of each bucket, per format, computed once.
local function le_labels(m, om)
  local key = om and "le_om" or "le_text"
  local les = m[key]
  if les == nil then
    les = {}
    for i = 1, m.nb do les[i] = ('le="%s"'):format(fmt_le(m.buckets[i], om)) end
    les[m.nb + 1] = 'le="+Inf"'
    m[key] = les
  end
  return les
end

local function write_family(b, m, om)
  if m.nseries == 0 then return end -- a labelled family with no series yet, as client_golang
  local fam = (om and m.kind == "counter") and m.base or m.name
  local name = m.name
  b:put("# HELP ", fam, " ", esc_help(m.help, om), "\n")
  b:put("# TYPE ", fam, " ", m.kind, "\n")
  if om and m.unit then b:put("# UNIT ", fam, " ", m.unit, "\n") end
  local series = m.nseries > 1 and sorted_series(m) or m.series
  if m.kind == "histogram" then
    local les = le_labels(m, om)
    for _, ch in ipairs(series) do
      local lp = label_pairs(m, ch)
      local open = lp == "" and "{" or "{" .. lp .. ","
      local acc = 0
      local counts = ch.counts
      for i = 1, m.nb + 1 do
        acc = acc + counts[i]
        b:put(name, "_bucket", open, les[i], "} ", fmt_value(acc), "\n")
      end
      local lt = lp == "" and "" or "{" .. lp .. "}"
      b:put(name, "_sum", lt, " ", fmt_value(ch.sum), "\n")
      b:put(name, "_count", lt, " ", fmt_value(ch.count), "\n")
    end
  else
    for _, ch in ipairs(series) do
      local lp = label_pairs(m, ch)
      if lp == "" then
        b:put(name, " ", fmt_value(ch.v), "\n")
      else
        b:put(name, "{", lp, "} ", fmt_value(ch.v), "\n")
      end
    end
  end
end

local FORMATS = { text = false, prometheus = false, openmetrics = true }

-- r:expose([format]) -> text, content type. format: "text" (Prometheus
-- text 0.0.4, the default) or "openmetrics" (OpenMetrics 1.0.0).
function Registry:expose(format)
  check_reg(self, "expose")
  local om = FORMATS[format or "text"]
  if om == nil then
    error(("orrery.metrics.expose: bad argument #1 (\"text\" or \"openmetrics\" expected, got %s)"):format(
      type(format) == "string" and ("%q"):format(format) or type(format)), 2)
  end
  for _, fn in ipairs(self.collectors) do fn(self) end
  local names = {}
  for name in pairs(self.byname) do names[#names + 1] = name end
  table.sort(names)
  local b = buffer.new(4096)
  for _, name in ipairs(names) do write_family(b, self.byname[name], om) end
  if om then b:put("# EOF\n") end
  return b:tostring(), om and M.OPENMETRICS or M.TEXT
end

-- negotiate(accept) -> format, content type: "openmetrics" when the
-- Accept header prefers application/openmetrics-text (as Prometheus'
-- scrapes do), else "text".
function M.negotiate(accept)
  if type(accept) ~= "string" then return "text", M.TEXT end
  local best_om, best_text = 0, 0
  for range in accept:gmatch("[^,]+") do
    local mtype = range:match("^%s*([^;%s]+)")
    if mtype then
      mtype = mtype:lower()
      local q = tonumber(range:match(";%s*[qQ]%s*=%s*([%d.]+)")) or 1
      local version = range:match(";%s*version%s*=%s*([%w.]+)")
      if mtype == "application/openmetrics-text" then
        if (version == nil or version == "1.0.0" or version == "0.0.1") and q > best_om then best_om = q end
      elseif mtype == "text/plain" or mtype == "text/*" or mtype == "*/*" then
        if q > best_text then best_text = q end
      end
    end
  end
  if best_om > 0 and best_om >= best_text then return "openmetrics", M.OPENMETRICS end
  return "text", M.TEXT
end

-- r:handler() -> an HTTP handler (router:get("/metrics", r:handler()))
-- that answers in the format the scraper's Accept header asks for.
-- The loop's lag as the last scrape saw it: how long a coroutine that
-- asked to run waited for its turn (what console.lag() measures).
local last_lag = 0
local function measure_lag()
  local orrery = package.loaded["orrery"]
  if not orrery then return end
  local t0 = orrery.now()
  orrery.sleep(0)
  last_lag = orrery.now() - t0
end

-- Full collection cycles of the Lua heap, counted by a sentinel whose
-- finalizer runs once per cycle and makes the next one (not once the
-- state is closing).
local gc_cycles, gc_closing = 0, false
local function gc_sentinel()
  local p = newproxy(true)
  getmetatable(p).__gc = function()
    gc_cycles = gc_cycles + 1
    if not gc_closing then gc_sentinel() end
  end
end
gc_sentinel()
do
  local sched = require "orrery.sched"
  local prev = sched.handlers.exit
  sched.handlers.exit = function(code)
    gc_closing = true
    if prev then prev(code) end
  end
end

function Registry:handler()
  check_reg(self, "handler")
  local reg = self
  return function(req)
    measure_lag()
    local format = M.negotiate(req.header and req:header("accept") or nil)
    local text, ctype = reg:expose(format)
    return 200, text, { ["Content-Type"] = ctype }
  end
end

-- -- Built-in metrics --

-- The value of a field in /proc/self/status (kB), in bytes.
local function proc_status(field)
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  local kb = s:match(field .. ":%s*(%d+)%s*kB")
  return kb and tonumber(kb) * 1024
end

-- Sets a built-in series straight (the source keeps the running total).
local function put(m, v, ...)
  local ch = m.root or lookup(m, ...)
  ch.v = v
end

local function add(m, v, ...)
  local ch = m.root or lookup(m, ...)
  ch.v = ch.v + v
end

local BREAKER_STATES = { "closed", "half-open", "open", "forced-open", "disabled" }

-- runtime(r): adds the built-in metrics to registry r (the default
-- registry has them already). They are read at exposition time.
function M.runtime(r)
  check_reg(r, "runtime")
  if r.has_runtime then return end
  r.has_runtime = true
  local g = function(o) return define(r, "gauge", o, "orrery.metrics.runtime") end
  local c = function(o) return define(r, "counter", o, "orrery.metrics.runtime") end
  local co = g { name = "orrery_coroutines", help = "Live coroutines." }
  local costate = g { name = "orrery_coroutines_by_state", labels = { "state" },
    help = "Live coroutines by state (runnable, running, waiting)." }
  local timers = g { name = "orrery_timers", help = "Pending timers (sleeps, deadlines, timeouts)." }
  local lmem = g { name = "orrery_lua_memory_bytes", help = "Memory in use by the Lua heap.", unit = "bytes" }
  local rss = g { name = "process_resident_memory_bytes", help = "Resident memory size in bytes.", unit = "bytes" }
  local vsz = g { name = "process_virtual_memory_bytes", help = "Virtual memory size in bytes.", unit = "bytes" }
  local bstate = g { name = "orrery_breaker_state", labels = { "breaker", "state" },
    help = "1 for the state each circuit breaker is in, 0 for the others." }
  local bcalls = c { name = "orrery_breaker_calls_total", labels = { "breaker", "result" },
    help = "Calls through each circuit breaker by result (success, failure, excluded, rejected)." }
  local bchanges = c { name = "orrery_breaker_state_changes_total", labels = { "breaker" },
    help = "State changes of each circuit breaker." }
  local lallowed = c { name = "orrery_limiter_allowed_total", labels = { "limiter", "kind" },
    help = "Requests each limiter let through." }
  local lrejected = c { name = "orrery_limiter_rejected_total", labels = { "limiter", "kind" },
    help = "Requests each limiter refused." }
  local lflight = g { name = "orrery_limiter_in_flight", labels = { "limiter" },
    help = "Calls holding a slot of each concurrency limit." }
  local lwaiting = g { name = "orrery_limiter_waiting", labels = { "limiter" },
    help = "Calls queued for a slot of each concurrency limit." }
  local ltokens = g { name = "orrery_limiter_tokens", labels = { "limiter" },
    help = "Tokens left in each token bucket." }
  local loglines = c { name = "orrery_log_lines_total", labels = { "level" },
    help = "Log lines written, by level." }
  local logsupp = c { name = "orrery_log_suppressed_total", labels = { "level" },
    help = "Log lines suppressed as repeats of an identical line, by level." }
  local logdrop = c { name = "orrery_log_dropped_total",
    help = "Log lines dropped because the log writer's queue was full (the output did not keep up)." }
  local logqueue = g { name = "orrery_log_queue_bytes",
    help = "Bytes of log lines handed to the log writer and not yet written." }
  local lag = g { name = "orrery_loop_lag_seconds", unit = "seconds",
    help = "How long a coroutine that asked to run waited for its turn, measured at the last scrape." }
  local gcs = c { name = "orrery_lua_gc_cycles_total", help = "Full collection cycles of the Lua heap." }
  local rcalls = c { name = "orrery_retry_calls_total", labels = { "policy" },
    help = "Calls through each named retry policy." }
  local rattempts = c { name = "orrery_retry_attempts_total", labels = { "policy" },
    help = "Attempts made by each named retry policy (first tries included)." }
  local rfail = c { name = "orrery_retry_failures_total", labels = { "policy" },
    help = "Calls that failed after their last attempt, by retry policy." }
  local sinst = g { name = "orrery_saga_instances", labels = { "saga", "state" },
    help = "Saga instances this process drives, by state (running, compensating)." }
  local sfin = c { name = "orrery_saga_finished_total", labels = { "saga", "state" },
    help = "Saga instances this process finished, by end state (completed, compensated, compensation_failed)." }
  r:on_collect(function()
    local orrery = package.loaded["orrery"]
    if orrery then
      local st = orrery.stats()
      co:set(st.coroutines)
      if st.waiting then
        costate:set(st.runnable, "runnable")
        costate:set(st.running, "running")
        costate:set(st.waiting, "waiting")
      end
      timers:set(st.timers)
    end
    lmem:set(floor(collectgarbage("count") * 1024))
    put(lag, last_lag)
    put(gcs, gc_cycles)
    rss:set(proc_status("VmRSS") or 0)
    vsz:set(proc_status("VmSize") or 0)
    -- Objects come and go (breakers are collected): start over each time.
    for _, m in ipairs({ bstate, bcalls, bchanges, lallowed, lrejected, lflight, lwaiting, ltokens,
        rcalls, rattempts, rfail, sinst, sfin }) do
      m:reset()
    end
    local breaker = package.loaded["orrery.breaker"]
    if breaker then
      for _, cb in ipairs(breaker.list()) do
        local s = cb:stats()
        for _, name in ipairs(BREAKER_STATES) do put(bstate, s.state == name and 1 or 0, s.name, name) end
        add(bcalls, s.successes, s.name, "success")
        add(bcalls, s.failures, s.name, "failure")
        add(bcalls, s.exclusions, s.name, "excluded")
        add(bcalls, s.rejected, s.name, "rejected")
        add(bchanges, s.state_changes, s.name)
      end
    end
    local limit = package.loaded["orrery.limit"]
    if limit then
      for _, l in ipairs(limit.list()) do
        local s = l:stats()
        add(lallowed, s.allowed or s.admitted or 0, s.name, s.kind)
        add(lrejected, s.rejected or 0, s.name, s.kind)
        if s.kind == "concurrency" then
          put(lflight, s.in_flight, s.name)
          put(lwaiting, s.waiting, s.name)
        elseif s.tokens then
          put(ltokens, s.tokens, s.name)
        end
      end
    end
    local retry = package.loaded["orrery.retry"]
    if retry then
      for _, p in ipairs(retry.list()) do
        local s = p:stats()
        add(rcalls, s.calls, s.name)
        add(rattempts, s.attempts, s.name)
        add(rfail, s.failures, s.name)
      end
    end
    local saga = package.loaded["orrery.saga"]
    if saga then
      for _, d in ipairs(saga.list()) do
        local s = d:stats()
        add(sinst, s.running, s.name, "running")
        add(sinst, s.compensating, s.name, "compensating")
        for _, k in ipairs { "completed", "compensated", "compensation_failed" } do add(sfin, s[k], s.name, k) end
      end
    end
    local log = package.loaded["orrery.log"]
    if log and log.stats then
      local s = log.stats()
      for level, n in pairs(s.lines) do put(loglines, n, level) end
      for level, n in pairs(s.suppressed) do put(logsupp, n, level) end
      if s.dropped then
        put(logdrop, s.dropped)
        put(logqueue, s.queued_bytes)
      end
    end
  end)
end

M.default = M.registry { runtime = true }

-- -- HTTP --
--
-- The families orrery.http's server and client record into, defined once
-- per registry (every server and client of a registry shares them). The
-- server's route label is the router's pattern ("unmatched" without one)
-- and the client's host label the URL's host[:port]: both bounded, unlike
-- a raw path. Their max_series is larger than the default, since method
-- x route x status multiplies.
local HTTP_MAX_SERIES = 10000

-- http_server(reg) -> { requests =, duration =, active = }
function M.http_server(reg)
  reg = reg or M.default
  check_reg(reg, "http_server")
  local f = reg.http_server_families
  if f then return f end
  local F = "orrery.metrics.http_server"
  f = {
    requests = define(reg, "counter", { name = "http_server_requests_total",
      help = "HTTP requests answered, by method, route pattern and status.",
      labels = { "method", "route", "status" }, max_series = HTTP_MAX_SERIES }, F),
    duration = define(reg, "histogram", { name = "http_server_request_duration_seconds",
      help = "Time from a request's head to the end of its response, by method and route pattern.",
      unit = "seconds", labels = { "method", "route" }, max_series = HTTP_MAX_SERIES }, F),
    active = define(reg, "gauge", { name = "http_server_active_requests",
      help = "HTTP requests being handled." }, F),
    connections = define(reg, "gauge", { name = "http_server_open_connections",
      help = "Client connections open to HTTP servers." }, F),
  }
  reg.http_server_families = f
  return f
end

-- http_client(reg) -> { requests =, duration = }
function M.http_client(reg)
  reg = reg or M.default
  check_reg(reg, "http_client")
  local f = reg.http_client_families
  if f then return f end
  local F = "orrery.metrics.http_client"
  f = {
    requests = define(reg, "counter", { name = "http_client_requests_total",
      help = "HTTP client requests, by method, host and status (an error code when no response came).",
      labels = { "method", "host", "status" }, max_series = HTTP_MAX_SERIES }, F),
    duration = define(reg, "histogram", { name = "http_client_request_duration_seconds",
      help = "Time from a client request's start to its response (its body too unless streamed), by method and host.",
      unit = "seconds", labels = { "method", "host" }, max_series = HTTP_MAX_SERIES }, F),
  }
  reg.http_client_families = f
  return f
end

-- The module-level functions work on opts.registry or the default.
local function reg_of(opts)
  local r = type(opts) == "table" and opts.registry or M.default
  if getmetatable(r) ~= Registry then
    error("orrery.metrics: option 'registry' must be a registry (metrics.registry())", 3)
  end
  return r
end

function M.counter(opts)
  local m = define(reg_of(opts), "counter", opts, "orrery.metrics.counter")
  return m
end

function M.gauge(opts)
  local m = define(reg_of(opts), "gauge", opts, "orrery.metrics.gauge")
  return m
end

function M.histogram(opts)
  local m = define(reg_of(opts), "histogram", opts, "orrery.metrics.histogram")
  return m
end

function M.expose(format, r)
  r = r or M.default
  check_reg(r, "expose")
  return r:expose(format)
end

-- handler([opts]) -> an HTTP handler for opts.registry (default: the
-- default registry).
function M.handler(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("orrery.metrics.handler: bad argument #1 (options table expected, got " .. type(opts) .. ")", 2)
  end
  for k in pairs(opts or {}) do
    if k ~= "registry" then error(("orrery.metrics.handler: unknown option '%s'"):format(tostring(k)), 2) end
  end
  return reg_of(opts):handler()
end

function M.on_collect(fn) return M.default:on_collect(fn) end
function M.get(name) return M.default:get(name) end
function M.unregister(name) return M.default:unregister(name) end
function M.is_registry(v) return getmetatable(v) == Registry end

return M
