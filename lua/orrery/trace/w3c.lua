-- SPDX-License-Identifier: MIT
-- orrery.trace.w3c -- W3C Trace Context level 1
-- (https://www.w3.org/TR/trace-context/): traceparent and tracestate read
-- strictly, remote span contexts. Internal to orrery.trace.
local bit = require "bit"

local type, pairs, setmetatable = type, pairs, setmetatable
local band = bit.band

local M = {}

local ZERO32, ZERO16 = ("0"):rep(32), ("0"):rep(16)

-- A span context from elsewhere: the ids of a remote parent.
local Remote = {}
Remote.__index = Remote
function Remote:__tostring() return ("span context %s-%s"):format(self.trace_id, self.span_id) end

-- parse_traceparent(s) -> trace_id, parent_id, sampled | nil. Version 00
-- is exactly 55 characters; a later version may be longer, with a dash
-- after the flags, and is read as far as 00 defines it. Version ff,
-- uppercase hex and all-zero ids are invalid.
local H2 = "[0-9a-f][0-9a-f]"
local TRACEPARENT = "^(" .. H2 .. ")%-(" .. ("[0-9a-f]"):rep(32) .. ")%-(" .. ("[0-9a-f]"):rep(16)
  .. ")%-(" .. H2 .. ")"

local function parse_traceparent(s)
  if type(s) ~= "string" then return nil end
  local n = #s
  if n ~= 55 then
    s = s:match("^[ \t]*(.-)[ \t]*$")
    n = #s
    if n < 55 then return nil end
  end
  local ver, tid, pid, flags = s:match(TRACEPARENT)
  if not ver or ver == "ff" then return nil end
  if n > 55 and (ver == "00" or s:byte(56) ~= 45) then return nil end -- 45: "-"
  if tid == ZERO32 or pid == ZERO16 then return nil end
  return tid, pid, band(tonumber(flags, 16), 1) == 1
end

-- A tracestate list member: key=value, the key simple (lowercase letter
-- first) or tenant@system, the value printable ASCII without "," and "="
-- that does not end in a space.
local function valid_member(m)
  local k, v = m:match("^([^=]+)=(.*)$")
  if not k or #k > 256 or #v == 0 or #v > 256 then return false end
  local tenant, system = k:match("^([^@]+)@([^@]+)$")
  if tenant then
    if #tenant > 241 or #system > 14 or not tenant:find("^[a-z0-9][a-z0-9_*/%-]*$")
        or not system:find("^[a-z][a-z0-9_*/%-]*$") then
      return false
    end
  elseif not k:find("^[a-z][a-z0-9_*/%-]*$") then
    return false
  end
  if v:find("[%z\1-\31,=\127-\255]") or v:sub(-1) == " " then return false end
  return true, k
end

-- parse_tracestate(s) -> the list with empty members and spaces around
-- members removed | nil when it is not a valid list (more than 32
-- members, a bad member, a key twice): then it is dropped as a whole.
local function parse_tracestate(s)
  if type(s) ~= "string" or #s == 0 then return nil end
  local out, seen = {}, {}
  for m in s:gmatch("[^,]+") do
    m = m:match("^[ \t]*(.-)[ \t]*$")
    if m ~= "" then
      local ok, k = valid_member(m)
      if not ok or seen[k] then return nil end
      seen[k] = true
      out[#out + 1] = m
      if #out > 32 then return nil end
    end
  end
  if #out == 0 then return nil end
  return table.concat(out, ",")
end

local function remote(tp, ts)
  local tid, pid, sampled = parse_traceparent(tp)
  if not tid then return false end
  return setmetatable({ trace_id = tid, span_id = pid, sampled = sampled, remote = true,
    tracestate = ts and parse_tracestate(ts) or false }, Remote)
end

-- Header lookup in a table of fields, case-insensitive; repeated fields
-- (a table of values) joined with ",".
local function field(headers, name)
  local v = headers[name]
  if v == nil then
    for k, x in pairs(headers) do
      if type(k) == "string" and k:lower() == name then v = x; break end
    end
  end
  if type(v) == "table" then return table.concat(v, ",") end
  return v
end


M.Remote, M.remote, M.field = Remote, remote, field
M.parse_traceparent, M.parse_tracestate = parse_traceparent, parse_tracestate

return M
