-- SPDX-License-Identifier: MIT
-- orrery.trace.otlp -- spans written as OTLP/HTTP JSON
-- (opentelemetry/proto/collector/trace/v1, in the OTLP JSON mapping).
-- Internal to orrery.trace.
--
-- The OTLP JSON mapping: ids as lowercase hex (not base64 as proto3 JSON
-- would have it), enums as integers, 64-bit integers (times in unix
-- nanoseconds, intValue) as decimal strings, field names in lowerCamelCase.
local buffer = require "string.buffer"
local json = require "orrery.json"

local type, tostring, pairs, ipairs, floor = type, tostring, pairs, ipairs, math.floor

local M = {}

local function split_ns(t)
  local s = floor(t)
  local ns = floor((t - s) * 1e9 + 0.5)
  if ns >= 1000000000 then s, ns = s + 1, ns - 1000000000 end
  return s, ns
end

local function put_nanos(b, t)
  local s, ns = split_ns(t)
  b:putf('"%d%09d"', s, ns)
end

-- JSON strings (text that is not UTF-8 as Latin-1, as orrery.log does).
local put_str = json.put_text

-- '{"key":"<k>","value":' per attribute name, which repeat from span to
-- span (the HTTP conventions' names, the user's few).
local KEY_CACHE_MAX = 1024
local key_text, nkeys = {}, 0
local key_buf = buffer.new(64)
local function put_key(b, k)
  local q = key_text[k]
  if not q then
    local kb = key_buf:reset()
    kb:put('{"key":')
    put_str(kb, type(k) == "string" and k or tostring(k))
    kb:put(',"value":')
    q = kb:tostring()
    if nkeys >= KEY_CACHE_MAX then key_text, nkeys = {}, 0 end
    key_text[k] = q
    nkeys = nkeys + 1
  end
  b:put(q)
end

local put_any
function put_any(b, v, depth)
  local t = type(v)
  if t == "string" then
    b:put('{"stringValue":')
    put_str(b, v)
    b:put("}")
  elseif t == "boolean" then
    b:put(v and '{"boolValue":true}' or '{"boolValue":false}')
  elseif t == "number" then
    if v == floor(v) and v >= -9007199254740992 and v <= 9007199254740992 then
      b:putf('{"intValue":"%.0f"}', v)
    elseif v ~= v then
      b:put('{"doubleValue":"NaN"}')
    elseif v == math.huge or v == -math.huge then
      b:put(v > 0 and '{"doubleValue":"Infinity"}' or '{"doubleValue":"-Infinity"}')
    else
      b:putf('{"doubleValue":%.17g}', v)
    end
  elseif t == "table" and depth < 4 and (#v > 0 or json.is_array(v)) then
    b:put('{"arrayValue":{"values":[')
    for i = 1, #v do
      if i > 1 then b:put(",") end
      put_any(b, v[i], depth + 1)
    end
    b:put("]}}")
  else
    b:put('{"stringValue":')
    put_str(b, tostring(v))
    b:put("}")
  end
end

local function put_attrs(b, attrs)
  b:put("[")
  local first = true
  for k, v in pairs(attrs) do
    if first then first = false else b:put(",") end
    put_key(b, k)
    put_any(b, v, 0)
    b:put("}")
  end
  b:put("]")
end

local function put_span(b, s)
  b:put('{"traceId":"', s.trace_id, '","spanId":"', s.span_id, '"')
  if s.parent_id then b:put(',"parentSpanId":"', s.parent_id, '"') end
  if s.tracestate then b:put(',"traceState":'); put_str(b, s.tracestate) end
  b:put(',"name":')
  put_str(b, s.name)
  b:put(',"kind":', s.kind, ',"startTimeUnixNano":')
  put_nanos(b, s.t0)
  b:put(',"endTimeUnixNano":')
  put_nanos(b, s.t1)
  b:put(',"attributes":')
  put_attrs(b, s.attrs)
  if s.events then
    b:put(',"events":[')
    for i, e in ipairs(s.events) do
      if i > 1 then b:put(",") end
      b:put('{"timeUnixNano":')
      put_nanos(b, e.t)
      b:put(',"name":')
      put_str(b, e.name)
      if e.attrs then b:put(',"attributes":'); put_attrs(b, e.attrs) end
      b:put("}")
    end
    b:put("]")
  end
  b:put(',"status":{"code":', s.status)
  if s.message then b:put(',"message":'); put_str(b, s.message) end
  b:put("}}")
end

-- encode(spans, resource, version) -> an ExportTraceServiceRequest in
-- OTLP JSON: spans (finished, sampled) of one resource (a table of
-- attributes), in the scope orrery.trace at version.
function M.encode(spans, resource, version)
  local b = buffer.new(4096)
  b:put('{"resourceSpans":[{"resource":{"attributes":')
  put_attrs(b, resource)
  b:put('},"scopeSpans":[{"scope":{"name":"orrery.trace","version":')
  put_str(b, version)
  b:put('},"spans":[')
  for i = 1, #spans do
    if i > 1 then b:put(",") end
    put_span(b, spans[i])
  end
  b:put("]}]}]}")
  return b:tostring()
end


return M
