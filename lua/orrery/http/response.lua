-- SPDX-License-Identifier: MIT
-- orrery.http.response -- the HTTP client's responses: reading events
-- off a connection through the parser (host/http_client.c), fields,
-- bodies whole or streamed, and the end of an exchange (docs/http-client.md).
-- Internal: orrery.http.client is the documented surface.
local sched = require "orrery.sched"
local check = require "orrery.check"
local pool = require "orrery.http.pool"
local transport = require "orrery.http.transport"
local C = require "orrery.ffi"
local ffi = require "ffi"

local type, tostring, tonumber, setmetatable, error, pcall, rawget =
  type, tostring, tonumber, setmetatable, error, pcall, rawget
local concat = table.concat
local ffi_string, ffi_gc, ffi_new, ffi_cast = ffi.string, ffi.gc, ffi.new, ffi.cast
local wait_err, limit = transport.wait_err, transport.limit
local checkin, discard = pool.checkin, pool.discard
local co_slot = C.orrery_ffi_co_slot
local hfeed, heof = C.orrery_ffi_hresp_feed, C.orrery_ffi_hresp_eof
local EV_NEED, EV_BODY, EV_DONE, EV_ERROR =
  C.ORRERY_HRESP_NEED, C.ORRERY_HRESP_BODY, C.ORRERY_HRESP_DONE, C.ORRERY_HRESP_ERROR

local M = {}

-- feed(conn) -> event: the parser reads what the connection has buffered,
-- in place; the bytes it parsed are consumed, and a body piece is copied
-- out first (conn.piece). After an event the parser is fed even without
-- new bytes (conn.more): the end of a body is an event of its own.
local function feed(conn)
  local t, r = conn.t, conn.r
  local n = t:avail()
  if n == 0 then
    if not conn.more then return EV_NEED end
    local ev = hfeed(r, "", 0, 0)
    conn.more = ev ~= EV_NEED
    return ev
  end
  local p = t:data()
  local ev = hfeed(r, p, 0, n)
  if ev == EV_BODY then conn.piece = ffi_string(p + r.body_off, r.body_len) end
  conn.more = ev ~= EV_NEED
  t:consume(r.pos)
  return ev
end

-- read_feed(st, conn, phase, tmo) -> event (NEED: feed more) | nil, err:
-- one wait for bytes from the connection, fed to the parser.
local function read_feed(st, conn, phase, tmo)
  local ok, err = conn.t:fill(limit(tmo, st.deadline))
  if not ok then
    if err == "again" then return EV_NEED end
    if err == "eof" then
      local ev = heof(conn.r)
      if ev == EV_NEED then return nil, "closed: connection closed before the response" end
      return ev
    end
    return nil, wait_err(st, err, phase)
  end
  st.got = true
  return feed(conn)
end

-- next_event(st, conn, phase, tmo) -> event | nil, err: feeds the parser
-- from what is buffered, then from the connection. The common cases (an
-- event in what is buffered, or in the next read) run no loop: a loop
-- that runs once per call is one the JIT aborts its traces on.
local function next_event(st, conn, phase, tmo)
  local ev = feed(conn)
  if ev ~= EV_NEED then return ev end
  local err
  ev, err = read_feed(st, conn, phase, tmo)
  if ev ~= EV_NEED then return ev, err end
  repeat
    ev, err = read_feed(st, conn, phase, tmo)
  until ev ~= EV_NEED
  return ev, err
end

local function parse_err(r)
  local why = r.reason ~= nil and ffi_string(r.reason) or "bad response"
  if r.too_large ~= 0 then return "too_large: " .. why end
  return "bad_response: " .. why
end

-- -- Responses --

local Res = {}
local Headers = {}
Headers.__index = function(t, k)
  if type(k) == "string" then
    local l = k:lower()
    if l ~= k then return rawget(t, l) end
  end
end

-- Fields into a case-insensitive table (repeated fields joined with ", ",
-- but Set-Cookie, which cannot be joined, keeps its first value) and a
-- flat list name1, value1, ... in order for header_values. fb holds the
-- names and values, sp their spans (4 per field, see ffi_cdef.h).
local function fields_of(fb, sp, from, to)
  local h, list = setmetatable({}, Headers), {}
  for i = from, to - 1 do
    local s = sp + 4 * i
    local name = ffi_string(fb + s[0], s[1]):lower()
    local value = ffi_string(fb + s[2], s[3])
    local last = value:byte(-1)
    if last == 32 or last == 9 then value = value:match("^(.-)[ \t]*$") end
    list[#list + 1] = name
    list[#list + 1] = value
    local old = rawget(h, name)
    if old == nil then
      h[name] = value
    elseif name ~= "set-cookie" then
      h[name] = old .. ", " .. value
    end
  end
  return h, list
end

local function fields(r, from, to)
  return fields_of(r.fields, r.spans, from, to)
end

local function keep_alive_timeout(h)
  local ka = h["keep-alive"]
  if ka then
    local t = tonumber(ka:lower():match("timeout%s*=%s*(%d+)"))
    if t then return t end
  end
  return false
end

-- Ends the exchange: the connection goes back to the pool when the
-- response ended cleanly and both sides may reuse it; else it is closed.
local function finish(st, conn, clean)
  if st.finished then return end
  st.finished = true
  local cl = st.cl
  local r = conn.r
  if clean and not st.no_reuse and r.keep_alive ~= 0 and not conn.closed
      and conn.t:avail() == 0 then
    conn.uses = conn.uses + 1
    checkin(cl, conn)
  else
    discard(cl, conn)
  end
end

-- The body pieces of a streamed response: next piece | nil at the end |
-- nil, err (the connection is closed then).
local function read_piece(st, res)
  local conn = res._conn
  if st.finished then return nil, st.ended_err end
  local ev, err = next_event(st, conn, "idle read", st.o.read_timeout)
  if ev == EV_BODY then
    local piece = conn.piece
    conn.piece = false
    return piece
  elseif ev == EV_DONE then
    local r = conn.r
    if r.nfields > r.nhead then res.trailers = fields(r, r.nhead, r.nfields) end
    finish(st, conn, true)
    return nil
  end
  if ev == EV_ERROR then err = parse_err(conn.r) end
  finish(st, conn, false)
  st.ended_err = err
  return nil, err
end

-- Runs fn under the request's context (the coroutine's binding is the
-- one every wait inside checks).
local function under(st, fn, a, b)
  local ctx = st.bind
  if not ctx then return fn(a, b) end
  local slot = co_slot()
  local old = sched.bind(slot, ctx)
  local ok, x, y = pcall(fn, a, b)
  sched.bind(slot, old)
  if not ok then error(x, 0) end
  return x, y
end

local function res_read(self)
  local st = self._st
  if self._buffered then
    local b = self._buffered
    self._buffered = false
    if b ~= "" then return b end
    return nil
  end
  return under(st, read_piece, st, self)
end

--- res:read() -> the next piece of the body | nil at its end | nil, err
function Res:read()
  check.self(self, Res, "res:read", "response")
  return res_read(self)
end

local function body_over(st, res, max)
  finish(st, res._conn, false)
  st.ended_err = "too_large: body over " .. max .. " bytes"
  return nil, st.ended_err
end

local function read_all(self, max)
  if self._buffered then
    local b = self._buffered
    self._buffered = false
    return b
  end
  local st = self._st
  if st.finished then return nil, st.ended_err or "closed: body already read" end
  local cl = self._conn.r.content_length
  if cl > max then
    finish(st, self._conn, false)
    st.ended_err = "too_large: body of " .. tostring(cl):gsub("LL$", "") .. " bytes"
    return nil, st.ended_err
  end
  -- A body in one piece (the common case) needs no table, nor a loop.
  local first, err = read_piece(st, self)
  if not first then
    if err then return nil, err end
    return ""
  end
  if #first > max then return body_over(st, self, max) end
  local piece
  piece, err = read_piece(st, self)
  if not piece then
    if err then return nil, err end
    return first
  end
  local parts, n = { first }, #first
  repeat
    n = n + #piece
    if n > max then return body_over(st, self, max) end
    parts[#parts + 1] = piece
    piece, err = read_piece(st, self)
  until not piece
  if err then return nil, err end
  return concat(parts)
end

--- res:body() -> the whole body (at most max_body_size bytes) | nil, err
function Res:body()
  check.self(self, Res, "res:body", "response")
  if self._whole then return self._whole end
  local st = self._st
  local b, err = under(st, read_all, self, st.o.max_body_size)
  if b then self._whole = b end
  return b, err
end

--- res:json() -> the body decoded | nil, err
function Res:json()
  check.self(self, Res, "res:json", "response")
  local b, err = self:body()
  if not b then return nil, err end
  local v, jerr = require("orrery.json").decode(b)
  if v == nil and jerr then return nil, "bad_response: invalid JSON: " .. jerr end
  return v
end

--- res:header_values(name) -> { value, ... } in the order received
function Res:header_values(name)
  check.self(self, Res, "res:header_values", "response")
  local l, out = name:lower(), {}
  local list = self._list
  for i = 1, #list, 2 do
    if list[i] == l then out[#out + 1] = list[i + 1] end
  end
  return out
end

--- res:close(): gives up the rest of a streamed body (the connection is
-- closed unless the body had been read to its end).
function Res:close()
  check.self(self, Res, "res:close", "response")
  local st = self._st
  if not st.finished then finish(st, self._conn, false) end
  st.ended_err = st.ended_err or "closed: response closed"
end

-- res.headers and res._list are made at their first use, from a copy of
-- the head's fields taken when it arrived (the parser's buffer is the
-- connection's, and the next exchange on it reuses it): most responses
-- are read for their status and body only.
local CHARP, U32P = ffi.typeof("const char *"), ffi.typeof("const uint32_t *")
Res.__index = function(res, k)
  local m = Res[k]
  if m ~= nil or (k ~= "headers" and k ~= "_list") then return m end
  local raw = rawget(res, "_raw")
  if not raw then return nil end
  local h, list = fields_of(ffi_cast(CHARP, raw), ffi_cast(U32P, res._spans), 0, res._nf)
  res.headers, res._list, res._raw, res._spans = h, list, false, false
  if k == "headers" then return h end
  return list
end
Res.__tostring = function(r) return ("http response %d"):format(r.status) end

local VERSIONS = { [0] = "1.0", [1] = "1.1" }

-- The response of the head that just arrived on conn (event HEAD).
local function head_res(st, conn)
  local r = conn.r
  local nh = r.nhead
  local raw, spans = "", ""
  if nh > 0 then raw, spans = ffi_string(r.fields, r.head_len), ffi_string(r.spans, 16 * nh) end
  local res = setmetatable({ status = r.status, _raw = raw, _spans = spans, _nf = nh, _st = st,
    _conn = conn, _buffered = false, url = st.url, version = VERSIONS[r.minor] }, Res)
  -- The connection's Keep-Alive timeout, when the server sent one.
  conn.server_keep = r.ka_field ~= 0 and keep_alive_timeout(res.headers) or false
  return res
end

-- A cdata whose finalizer ends an unfinished exchange. Its own function:
-- a closure over exchange's locals would make every return of exchange
-- close upvalues, which the JIT does not compile (NYI UCLO).
local function guard(st, conn)
  return ffi_gc(ffi_new("char[1]"), function()
    if not st.finished then finish(st, conn, false) end
  end)
end

M.Res, M.next_event, M.parse_err, M.fields, M.keep_alive_timeout = Res, next_event, parse_err, fields, keep_alive_timeout
M.finish, M.read_all, M.under, M.guard = finish, read_all, under, guard
M.head_res = head_res

return M
