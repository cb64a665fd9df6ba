-- SPDX-License-Identifier: MIT
-- orrery.trace -- distributed tracing: W3C Trace Context propagation,
-- spans for server requests, client requests and saga steps, sampling by
-- ratio (parent-based), and a batching OTLP/HTTP JSON exporter
-- (docs/tracing.md).
--
-- A span lives in a context under orrery.log's TRACE_KEY, so that every
-- line logged inside it carries its trace_id and span_id. Finished spans
-- that were sampled go into a bounded queue; one exporter coroutine
-- posts them in batches with orrery's own HTTP client (a client of its
-- own, whose requests are never traced) every `interval` seconds, or as
-- soon as a batch is full. The request path only appends to the queue: a
-- span that finds it full is dropped and counted.
--
-- The HTTP server and client call in through one field each
-- (orrery.http.server.tracer, orrery.http.client.tracer): false until
-- configure() sets them, so that a service without tracing pays one
-- check per request.
local ffi = require "ffi"
local bit = require "bit"
local tnew = require "table.new"
local C = require "orrery.ffi"
local sched = require "orrery.sched"
local context = require "orrery.context"
local chan = require "orrery.chan"
local check = require "orrery.check"
local log = require "orrery.log"
local w3c = require "orrery.trace.w3c"
local otlp = require "orrery.trace.otlp"

local type, tostring, pairs, ipairs, error, floor, setmetatable, getmetatable =
  type, tostring, pairs, ipairs, error, math.floor, setmetatable, getmetatable
local band = bit.band
local wall_now, now, co_slot = C.orrery_ffi_wall_now, C.orrery_ffi_now, C.orrery_ffi_co_slot
local bind, with_value = sched.bind, context.with_value
local TRACE_KEY = log.TRACE_KEY

local M = { TRACE_KEY = TRACE_KEY }

-- OTLP's enums (opentelemetry/proto/trace/v1/trace.proto), written as
-- integers in its JSON mapping.
local KINDS = { internal = 1, server = 2, client = 3, producer = 4, consumer = 5 }
local STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
M.KINDS = KINDS

-- -- Ids --
--
-- OpenSSL's CSPRNG, 4 KiB at a time (1.7 us a call): one RAND_bytes call
-- per 170 spans. An id is written as hex into a buffer and made a string
-- once, rather than eight strings a span (bit.tohex per word, then
-- concatenated).
pcall(ffi.cdef, "int RAND_bytes(unsigned char *buf, int num);")
local POOL = 4096
local pool = ffi.new("uint8_t[?]", POOL)
local pool_pos = POOL
local HEXD = ffi.new("const char[17]", "0123456789abcdef")
local hexbuf = ffi.new("char[32]")
local ffi_string, rshift = ffi.string, bit.rshift

-- rand_hex(n) -> 2n lowercase hex digits of n random bytes (never all
-- zeros, the invalid id), and the offset of those bytes in the pool.
local function rand_hex(n)
  if pool_pos + n > POOL then
    if ffi.C.RAND_bytes(pool, POOL) ~= 1 then error("orrery.trace: RAND_bytes failed") end
    pool_pos = 0
  end
  local p = pool_pos
  pool_pos = p + n
  local any = 0
  for i = 0, n - 1 do
    local v = pool[p + i]
    any = bit.bor(any, v)
    hexbuf[2 * i] = HEXD[rshift(v, 4)]
    hexbuf[2 * i + 1] = HEXD[band(v, 15)]
  end
  if any == 0 then
    pool[p + n - 1] = 1
    hexbuf[2 * n - 1] = 49 -- "1"
  end
  return ffi_string(hexbuf, 2 * n), p
end

local function new_span_id()
  return (rand_hex(8))
end

-- The big-endian 32-bit word at pool offset p.
local function word(p)
  return ((pool[p] * 256 + pool[p + 1]) * 256 + pool[p + 2]) * 256 + pool[p + 3]
end

-- -- Sampling --
--
-- As OpenTelemetry's TraceIdRatioBased: the trace id's last 8 bytes, as
-- an unsigned number shifted right by one, below ratio * 2^63. Every
-- service with the same ratio then keeps the same traces.
-- The bound is kept as its high and low parts (bits 62..31 and 30..0)
-- so that the comparison is exact: as one double, ids near the bound
-- would round.
local bound_hi, bound_lo = 0, 0
local sample_all, sample_none = true, false

local function set_ratio(r)
  sample_all, sample_none = r >= 1, r <= 0
  local b = r * 2 ^ 63
  bound_hi = floor(b / 2147483648)
  bound_lo = b - bound_hi * 2147483648
end

local function sampled_by_words(hi, lo)
  if sample_all then return true end
  if sample_none then return false end
  return hi < bound_hi or (hi == bound_hi and floor(lo / 2) < bound_lo)
end

-- sampled_id(trace_id) -> whether the ratio keeps this trace.
local function sampled_id(tid)
  return sampled_by_words(tonumber(tid:sub(17, 24), 16), tonumber(tid:sub(25, 32), 16))
end
M._sampled_id = sampled_id

-- -- Trace Context --

local Remote, remote, field = w3c.Remote, w3c.remote, w3c.field

--- trace.extract(headers) -> span context | nil: the remote parent in a
-- traceparent (and tracestate) field. headers is a table of fields (any
-- case) or a server request.
function M.extract(headers)
  local tp, ts
  if type(headers) == "table" and type(headers.header) == "function" then
    tp, ts = headers:header("traceparent"), headers:header("tracestate")
  elseif type(headers) == "table" then
    tp, ts = field(headers, "traceparent"), field(headers, "tracestate")
  else
    error(("orrery.trace.extract: bad argument #1 (table of headers expected, got %s)"):format(type(headers)), 2)
  end
  return remote(tp, ts) or nil
end

local function traceparent(sc)
  return "00-" .. sc.trace_id .. "-" .. sc.span_id .. (sc.sampled and "-01" or "-00")
end
M.traceparent = traceparent

-- -- Spans --

local Span = {}
Span.__index = Span
M.Span = Span

-- The configuration: false until configure().
local cfg = false
-- The queue of finished spans waiting for the exporter.
local queue, qhead, qn = {}, 1, 0
local stats = { exported = 0, dropped = 0, failed = 0, exports = 0, export_errors = 0, retries = 0,
  last_error = false }
local kick -- the exporter's wake-up channel
local wake_exporter

local function enqueue(span)
  if qn >= cfg.queue then
    stats.dropped = stats.dropped + 1
    return
  end
  queue[qhead + qn] = span
  qn = qn + 1
  if qn == 1 or qn == cfg.batch then wake_exporter() end
end

-- A span: the ids and, when it is sampled, what the exporter sends.
-- Unsampled spans (and every span while tracing is off) only carry their
-- ids, so that they still propagate: their methods do nothing.
local function new_span(parent, name, kind, nattrs)
  local tid, sampled, ts
  if parent then
    tid, sampled, ts = parent.trace_id, parent.sampled == true, parent.tracestate or false
  else
    local p
    tid, p = rand_hex(16)
    sampled, ts = cfg and sampled_by_words(word(p + 8), word(p + 12)) or false, false
  end
  if not cfg then sampled = false end
  local span = { trace_id = tid, span_id = new_span_id(), sampled = sampled, tracestate = ts,
    ended = false }
  if sampled then
    span.parent_id = parent and parent.span_id or false
    span.name, span.kind, span.t0 = name, kind, wall_now()
    -- Sized for the attributes to come: grown one rehash at a time, the
    -- HTTP spans' dozen cost four.
    span.attrs, span.events, span.status, span.message = tnew(0, nattrs or 4), false, STATUS_UNSET, false
  end
  return setmetatable(span, Span)
end

-- The span (or remote span context) a context carries, or nil.
local function current(ctx)
  local v = ctx.values
  while v do
    if v.key == TRACE_KEY then
      local s = v.value
      if type(s) == "table" and type(s.trace_id) == "string" and type(s.span_id) == "string" then
        return s
      end
      return nil
    end
    v = v.up
  end
  return nil
end

local function ctx_arg(fname, ctx, argn)
  if ctx == nil then return sched.current_ctx() end
  if not context.is_ctx(ctx) then
    error(("orrery.trace.%s: bad argument #%d (context expected, got %s)"):format(fname, argn, type(ctx)), 3)
  end
  return ctx
end

--- trace.current([ctx]) -> the span in ctx (default: the running
-- coroutine's context) | nil
function M.current(ctx)
  return current(ctx_arg("current", ctx, 1))
end

--- trace.enabled() -> whether configure() turned tracing on
function M.enabled() return cfg ~= false end

local START = { kind = true, attributes = true, parent = true }

--- trace.start([ctx,] name [, opts]) -> span, ctx: a span that is a
-- child of the one in ctx (or of opts.parent, a span or an extracted span
-- context; false starts a new trace), and a child context carrying it.
-- opts.kind: "internal" (default), "server", "client", "producer" or
-- "consumer"; opts.attributes: a table of attributes.
function M.start(ctx, name, opts)
  local F = "orrery.trace.start"
  if type(ctx) == "string" then ctx, name, opts = nil, ctx, name end
  ctx = ctx_arg("start", ctx, 1)
  if type(name) ~= "string" then
    error(("%s: bad argument #2 (span name expected, got %s)"):format(F, type(name)), 2)
  end
  opts = check.opts(F, opts, START, 3, 3)
  local kind = opts.kind or "internal"
  local k = KINDS[kind]
  if not k then check.bad_opt(F, "kind", '"internal", "server", "client", "producer" or "consumer"', kind, 3) end
  local attrs = check.type_opt(F, opts, "attributes", "table", 3)
  local parent = opts.parent
  if parent == nil then
    parent = current(ctx) or false
  elseif parent ~= false and not (type(parent) == "table" and getmetatable(parent) == Span
      or getmetatable(parent) == Remote) then
    check.bad_opt(F, "parent", "span, span context or false", parent, 3)
  end
  local span = new_span(parent, name, k)
  if attrs and span.sampled then
    for ak, av in pairs(attrs) do span.attrs[ak] = av end
  end
  return span, with_value(TRACE_KEY, span, ctx)
end

local function check_span(self, fname)
  if getmetatable(self) ~= Span or type(self) ~= "table" then
    error(("orrery.trace:%s: bad self (span expected, got %s; call it with ':')"):format(fname, type(self)), 3)
  end
end

--- span:set(key, value) -> span: an attribute (string, number, boolean
-- or an array of those).
function Span:set(k, v)
  check_span(self, "set")
  if type(k) ~= "string" then
    error(("orrery.trace:set: bad argument #1 (attribute name expected, got %s)"):format(type(k)), 2)
  end
  if self.sampled and not self.ended then self.attrs[k] = v end
  return self
end

--- span:event(name [, attributes]) -> span: a timestamped event.
function Span:event(name, attrs)
  check_span(self, "event")
  if type(name) ~= "string" then
    error(("orrery.trace:event: bad argument #1 (event name expected, got %s)"):format(type(name)), 2)
  end
  if attrs ~= nil and type(attrs) ~= "table" then
    error(("orrery.trace:event: bad argument #2 (table of attributes expected, got %s)"):format(type(attrs)), 2)
  end
  if self.sampled and not self.ended then
    local ev = self.events
    if not ev then ev = {}; self.events = ev end
    if #ev < 128 then ev[#ev + 1] = { name = name, t = wall_now(), attrs = attrs or false } end
  end
  return self
end

--- span:fail([err]) -> span: the span's status becomes an error, with
-- err (tostring'd) as its message and an "exception" event.
function Span:fail(err)
  check_span(self, "fail")
  if self.sampled and not self.ended then
    self.status = STATUS_ERROR
    if err ~= nil then
      local msg = tostring(err)
      self.message = msg
      self:event("exception", { ["exception.message"] = msg })
    end
  end
  return self
end

--- span:ok() -> span: the status is set to Ok (it stays Unset otherwise).
function Span:ok()
  check_span(self, "ok")
  if self.sampled and not self.ended then self.status = STATUS_OK end
  return self
end

--- span:finish(): ends the span; a sampled span goes to the exporter.
-- Finishing twice does nothing.
function Span:finish()
  check_span(self, "finish")
  if self.ended then return end
  self.ended = true
  if self.sampled then
    self.t1 = wall_now()
    if cfg then enqueue(self) end
  end
end

--- span:traceparent() -> the traceparent field that makes a callee's
-- spans children of this one.
function Span:traceparent()
  check_span(self, "traceparent")
  return traceparent(self)
end

function Span:__tostring()
  return ("span %s-%s%s"):format(self.trace_id, self.span_id, self.sampled and "" or " (unsampled)")
end

--- trace.inject([ctx,] headers) -> headers with traceparent (and
-- tracestate) set from the span in ctx; unchanged without one.
function M.inject(ctx, headers)
  if headers == nil and type(ctx) == "table" and not context.is_ctx(ctx) then ctx, headers = nil, ctx end
  ctx = ctx_arg("inject", ctx, 1)
  if type(headers) ~= "table" then
    error(("orrery.trace.inject: bad argument #2 (table of headers expected, got %s)"):format(type(headers)), 2)
  end
  local s = current(ctx)
  if s then
    headers.traceparent = traceparent(s)
    if s.tracestate then headers.tracestate = s.tracestate end
  end
  return headers
end

-- -- The HTTP hooks --
--
-- orrery.http.server and orrery.http.client call these when their
-- `tracer` field is set (configure() sets it).

local hooks = {}

local function host_port(h)
  if not h then return nil end
  local host, port = h:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = h:match("^([^:]+):?(%d*)$") end
  return host, tonumber(port)
end

-- server_start(srv, req) -> span: a server span continuing the request's
-- traceparent (a new trace when it has none or an invalid one), bound
-- to the handler's coroutine and in req.ctx for the handler's time.
function hooks.server_start(srv, req)
  local tp = req:header("traceparent")
  local parent = tp and remote(tp, req:header("tracestate")) or false
  local method = req.method
  local span = new_span(parent, method, 2, 16)
  if span.sampled then
    local a = span.attrs
    a["http.request.method"] = method
    a["url.path"] = req.path
    if req.raw_query ~= "" then a["url.query"] = req.raw_query end
    a["url.scheme"] = srv.opts.tls and "https" or "http"
    a["network.protocol.version"] = req.version
    local host, port = host_port(req:header("host"))
    if host then a["server.address"] = host end
    a["server.port"] = port or srv.port
    if req.remote then a["client.address"] = req.remote end
    local ua = req:header("user-agent")
    if ua then a["user_agent.original"] = ua end
  end
  local sctx = with_value(TRACE_KEY, span, req.ctx)
  req.ctx = sctx
  span.unbind = bind(co_slot(), sctx)
  return span
end

-- server_finish(span, req, status): names the span after the route the
-- router matched, records the status (5xx is an error) and ends it.
function hooks.server_finish(span, req, status)
  bind(co_slot(), span.unbind)
  if span.sampled then
    local a = span.attrs
    local route = req.route
    if route then
      span.name = req.method .. " " .. route
      a["http.route"] = route
    end
    a["http.response.status_code"] = status
    if type(status) == "number" and status >= 500 then
      span.status = STATUS_ERROR
      a["error.type"] = tostring(status)
    end
  end
  span:finish()
end

-- client_start(st) -> span: a client span under the caller's context,
-- sending traceparent (and tracestate) unless the request sets its own.
function hooks.client_start(st)
  local parent = current(st.ctx) or false
  local span = new_span(parent, st.method, 3, 8)
  local h, have = {}, false
  local given = st.headers
  if given then
    for k, v in pairs(given) do
      h[k] = v
      if k:lower() == "traceparent" then have = true end
    end
  end
  if not have then
    h.traceparent = traceparent(span)
    if span.tracestate then h.tracestate = span.tracestate end
  end
  st.headers = h
  if span.sampled then
    local a = span.attrs
    a["http.request.method"] = st.method
    a["server.address"] = st.host
    a["server.port"] = st.port
    a["url.full"] = st.url
  end
  return span
end

-- client_finish(span, res, err): the response's status (4xx and 5xx are
-- errors, as the HTTP conventions say for clients) or the error's code.
function hooks.client_finish(span, res, err)
  if span.sampled then
    local a = span.attrs
    if res then
      a["http.response.status_code"] = res.status
      if res.status >= 400 then
        span.status = STATUS_ERROR
        a["error.type"] = tostring(res.status)
      end
    else
      span.status = STATUS_ERROR
      span.message = tostring(err)
      a["error.type"] = type(err) == "string" and err:match("^([%a_]+)") or "error"
    end
  end
  span:finish()
end

-- The blocking http.serve calls this once its server has stopped, so
-- that the spans of its last requests leave before the script ends.
function hooks.server_stopped()
  M.flush(cfg and math.min(cfg.timeout, 2) or 0)
end

-- OTLP/HTTP JSON (orrery.trace.otlp).
local function encode(spans)
  return otlp.encode(spans, cfg.resource_attrs, cfg.version)
end
M._encode = encode

-- -- Metrics --
--
-- The exporter's counters go to orrery.metrics' default registry once
-- that module is loaded (configure() does not load it: loading it turns
-- on the HTTP servers' metrics too). They are read from stats at each
-- exposition.
local metrics_on = false
local function ensure_metrics()
  if metrics_on then return end
  local mm = package.loaded["orrery.metrics"]
  if not mm then return end
  metrics_on = true
  local exported = mm.counter { name = "orrery_trace_spans_exported_total",
    help = "Spans the trace exporter sent to its endpoint." }
  local dropped = mm.counter { name = "orrery_trace_spans_dropped_total", labels = { "reason" },
    help = "Spans lost: queue_full when the exporter fell behind, export_failed when a batch could not be sent." }
  local failures = mm.counter { name = "orrery_trace_export_failures_total",
    help = "Export requests that failed (an error or a non-2xx status)." }
  local queued = mm.gauge { name = "orrery_trace_queue_spans", help = "Finished spans waiting for the exporter." }
  local last = { exported = 0, dropped = 0, failed = 0, export_errors = 0 }
  mm.on_collect(function()
    exported:inc(stats.exported - last.exported)
    dropped:inc(stats.dropped - last.dropped, "queue_full")
    dropped:inc(stats.failed - last.failed, "export_failed")
    failures:inc(stats.export_errors - last.export_errors)
    queued:set(qn)
    last.exported, last.dropped, last.failed, last.export_errors =
      stats.exported, stats.dropped, stats.failed, stats.export_errors
  end)
end

-- -- The exporter --

local busy = false   -- a batch is being posted
local flushers = {}  -- channels of flush() calls waiting for an empty queue
local exporter_started = false
local exp_client

function wake_exporter()
  if kick then kick:try_send(true) end
end

local function take(n)
  local spans = {}
  for i = 1, n do
    spans[i] = queue[qhead]
    queue[qhead] = nil
    qhead = qhead + 1
  end
  qn = qn - n
  if qn == 0 then qhead = 1 end
  return spans
end

-- OTLP/HTTP's retryable answers (the specification's "Retryable Response
-- Codes"), and the client errors that mean the collector was not reached
-- or did not answer in time.
local RETRY_STATUS = { [429] = true, [502] = true, [503] = true, [504] = true }
local RETRY_ERR = { refused = true, reset = true, closed = true, timeout = true, dns = true }
local RETRY_DELAY, RETRY_MAX_DELAY = 1, 5

local function post(c, body)
  -- Protected: whatever goes wrong, the exporter goes on.
  local ok, res, err = pcall(exp_client.request, exp_client, { method = "POST", url = c.endpoint,
    headers = c.post_headers, body = body, timeout = c.timeout })
  if not ok then return nil, tostring(res), false end
  if res and res.status >= 200 and res.status < 300 then return true end
  if res then
    local after = tonumber(res.headers["retry-after"] or "")
    return nil, "status " .. res.status, RETRY_STATUS[res.status] and (after or RETRY_DELAY)
  end
  local code = type(err) == "string" and err:match("^([%a_]+)")
  return nil, tostring(err), RETRY_ERR[code] and RETRY_DELAY
end

-- Posts one batch. A batch that fails with a retryable answer (429, 502,
-- 503, 504, or no answer) is tried once more after Retry-After seconds
-- (1 s without it, at most 5 s); then, as for any other failure, it is
-- dropped and counted: a collector that is down costs each batch two
-- requests and no memory beyond the queue.
local function export_batch()
  local n = qn < cfg.batch and qn or cfg.batch
  local spans = take(n)
  local c = cfg
  local eok, body = pcall(encode, spans)
  local ok, err, retry
  if eok then
    ok, err, retry = post(c, body)
    if not ok and retry then
      stats.retries = stats.retries + 1
      require("orrery.time").sleep(math.min(math.max(retry, 0), RETRY_MAX_DELAY))
      ok, err = post(c, body)
    end
  else
    err = body
  end
  if ok then
    stats.exported = stats.exported + n
    stats.exports = stats.exports + 1
  else
    stats.failed = stats.failed + n
    stats.export_errors = stats.export_errors + 1
    stats.last_error = err
  end
  -- For the tests: an event when a batch is done.
  if M._on_export then M._on_export(n) end
end

-- Sends full batches as soon as there are, the rest once `interval` has
-- passed since the first span of it was queued, everything when a flush
-- waits. (Draining the whole queue whenever it woke posted batches of a
-- few dozen spans under load: 8220 requests for 650k spans.)
local function exporter()
  local deadline = false
  while true do
    -- A kick may be stale (sent while a batch was being posted): wait
    -- again rather than arm the interval for an empty queue.
    while qn == 0 and #flushers == 0 do
      deadline = false
      kick:recv()
    end
    if cfg then
      deadline = deadline or now() + cfg.interval
      while qn < cfg.batch and #flushers == 0 do
        local left = deadline - now()
        if left <= 0 then break end
        kick:recv(left)
      end
      local due = now() >= deadline
      busy = true
      while cfg and qn > 0 and (qn >= cfg.batch or due or #flushers > 0) do export_batch() end
      busy = false
      if due then deadline = false end
      ensure_metrics()
    end
    if #flushers > 0 and (qn == 0 or not cfg) then
      local f = flushers
      flushers = {}
      for _, ch in ipairs(f) do ch:try_send(true) end
    end
  end
end

--- trace.flush([timeout]) -> true | nil, "timeout": exports every queued
-- span now and waits for it to be sent (at most timeout seconds, default
-- the configured timeout).
function M.flush(timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then
    error(("orrery.trace.flush: bad argument #1 (seconds expected, got %s)"):format(check.show(timeout)), 2)
  end
  if not cfg or not exporter_started or (qn == 0 and not busy) then return true end
  if co_slot() == 0 then error("orrery.trace.flush: not inside a coroutine", 2) end
  local ch = chan.new(1, "orrery.trace flush")
  flushers[#flushers + 1] = ch
  kick:try_send(true)
  local _, ok = sched.with_ctx(context.without_cancel(context.background()), ch.recv, ch,
    timeout or cfg.timeout)
  if ok then return true end
  for i, x in ipairs(flushers) do
    if x == ch then table.remove(flushers, i); break end
  end
  return nil, "timeout"
end

--- trace.stats() -> { queued, exported, dropped, failed, exports,
-- export_errors, last_error }
function M.stats()
  return { queued = qn, exported = stats.exported, dropped = stats.dropped, failed = stats.failed,
    exports = stats.exports, export_errors = stats.export_errors, retries = stats.retries,
    last_error = stats.last_error or nil }
end

-- -- Configuration --

local KNOWN = { endpoint = true, service_name = true, ratio = true, queue = true, batch = true,
  interval = true, headers = true, resource = true, timeout = true }
local COUNT = { min = 1, int = true, what = "positive integer" }
local RATIO = { min = 0, max = 1, what = "number from 0 to 1" }
local SECS = { min = 0, strict = true, what = "positive number of seconds" }

-- OTEL_EXPORTER_OTLP_HEADERS: "k=v,k2=v2", values percent-decoded.
local function env_headers(s)
  local h = {}
  for pair in (s or ""):gmatch("[^,]+") do
    local k, v = pair:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
    if k and k ~= "" then h[k] = v:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end) end
  end
  return h
end

local function env_ratio()
  local sampler, arg = os.getenv("OTEL_TRACES_SAMPLER"), tonumber(os.getenv("OTEL_TRACES_SAMPLER_ARG") or "")
  if sampler == "always_off" or sampler == "parentbased_always_off" then return 0 end
  if sampler == "always_on" or sampler == "parentbased_always_on" then return 1 end
  if arg and arg >= 0 and arg <= 1 then return arg end
  return 1
end

local function env_endpoint()
  local e = os.getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
  if e and e ~= "" then return e end
  e = os.getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
  if e and e ~= "" then return (e:gsub("/+$", "")) .. "/v1/traces" end
  return "http://localhost:4318/v1/traces"
end

--- trace.configure{ endpoint, service_name, ratio, queue, batch,
-- interval, headers, resource, timeout }: turns tracing on (see
-- docs/tracing.md for the defaults and the environment variables).
-- Called again, it replaces the settings.
function M.configure(opts)
  local F = "orrery.trace.configure"
  if opts == nil then opts = {} end
  check.opts(F, opts, KNOWN, 3)
  local L = 3
  check.type_opt(F, opts, "endpoint", "string", L)
  check.type_opt(F, opts, "service_name", "string", L)
  check.number_opt(F, opts, "ratio", RATIO, L)
  check.number_opt(F, opts, "queue", COUNT, L)
  check.number_opt(F, opts, "batch", COUNT, L)
  check.number_opt(F, opts, "interval", SECS, L)
  check.number_opt(F, opts, "timeout", SECS, L)
  check.type_opt(F, opts, "headers", "table", L)
  check.type_opt(F, opts, "resource", "table", L)
  local endpoint = opts.endpoint or env_endpoint()
  local parse_url = require("orrery.http.client").parse_url
  local scheme, why = parse_url(endpoint)
  if not scheme then check.bad_opt(F, "endpoint", "http:// or https:// URL (" .. why .. ")", endpoint, L) end
  local headers = opts.headers or env_headers(os.getenv("OTEL_EXPORTER_OTLP_HEADERS"))
  local post_headers = { ["Content-Type"] = "application/json" }
  for k, v in pairs(headers) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      check.bad_opt(F, "headers", "table of header names to strings", headers, L)
    end
    post_headers[k] = v
  end
  local service = opts.service_name or os.getenv("OTEL_SERVICE_NAME")
  if not service or service == "" then service = "unknown_service:orrery" end
  local res = { ["service.name"] = service, ["telemetry.sdk.name"] = "orrery",
    ["telemetry.sdk.language"] = "lua", ["telemetry.sdk.version"] = require("orrery").version }
  for k, v in pairs(opts.resource or {}) do
    if type(k) ~= "string" then check.bad_opt(F, "resource", "table of attribute names to values", k, L) end
    res[k] = v
  end
  local queue_max = opts.queue or 2048
  local batch = opts.batch or 512
  if batch > queue_max then batch = queue_max end
  cfg = {
    endpoint = endpoint, ratio = opts.ratio or env_ratio(), queue = queue_max, batch = batch,
    interval = opts.interval or 5, timeout = opts.timeout or 10, post_headers = post_headers,
    resource_attrs = res, version = require("orrery").version,
  }
  set_ratio(cfg.ratio)
  if not exp_client then
    -- Its own small pool, and never traced itself (untraced).
    exp_client = require("orrery.http.client").client { max_conns_per_host = 2, max_idle_per_host = 2,
      metrics = false }
    exp_client.untraced = true
  end
  if not exporter_started then
    exporter_started = true
    kick = chan.new(1, "orrery.trace exporter")
    sched.spawn(context.without_cancel(context.background()), exporter)
  end
  require("orrery.http.server").tracer = hooks
  require("orrery.http.client").tracer = hooks
  ensure_metrics()
  if qn > 0 then wake_exporter() end
end

--- trace.settings() -> { endpoint, service_name, ratio, queue, batch,
-- interval, timeout } in effect (the environment's defaults applied) |
-- nil while tracing is off
function M.settings()
  if not cfg then return nil end
  return { endpoint = cfg.endpoint, service_name = cfg.resource_attrs["service.name"], ratio = cfg.ratio,
    queue = cfg.queue, batch = cfg.batch, interval = cfg.interval, timeout = cfg.timeout }
end

--- trace.shutdown([timeout]) -> true | nil, "timeout": flushes, then
-- turns tracing off (the HTTP hooks cost nothing again).
function M.shutdown(timeout)
  local ok, err = M.flush(timeout)
  require("orrery.http.server").tracer = false
  require("orrery.http.client").tracer = false
  cfg = false
  queue, qhead, qn = {}, 1, 0
  return ok, err
end

-- At exit, spans still queued are lost: say how many.
do
  local prev = sched.handlers.exit
  sched.handlers.exit = function(code)
    if cfg and qn > 0 then
      pcall(io.stderr.write, io.stderr, ("orrery.trace: %d spans not exported at exit (call trace.flush() before the script ends)\n"):format(qn))
    end
    if prev then prev(code) end
  end
end


return M
