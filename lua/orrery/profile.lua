-- SPDX-License-Identifier: MIT
-- orrery.profile -- CPU profiles of the running service: LuaJIT's sampling
-- profiler (jit.profile), written as pprof's profile.proto (what `go tool
-- pprof` reads), as folded stacks (flamegraph.pl) or as a top list.
--
-- The sampler is a timer signal that counts the process's CPU time; at the
-- next instruction the VM runs, LuaJIT calls our callback in the coroutine
-- that was running, which counts the sample under that coroutine's stack.
-- Taking a profile is a wait like any other (the caller sleeps while the
-- samples come in), so the loop goes on serving. One profile at a time:
-- the VM has one sampler.
local jprof = require "jit.profile"
local bit = require "bit"
local time = require "orrery.time"
local C = require "orrery.ffi"

local band, bxor, rshift, bnot = bit.band, bit.bxor, bit.rshift, bit.bnot
local char, byte, floor, concat = string.char, string.byte, math.floor, table.concat

local M = {}

local Profile = {}
Profile.__index = Profile
M.Profile = Profile

-- One frame per line, root first: "name\tchunk:line". The name is how the
-- caller called the function, else its chunk and first line; the line is
-- the one running in that frame. 'p' keeps full paths.
local FMT = "pf\tl\n"

-- vmstate as jit.profile reports it -> the sample's label, and for the two
-- states that are not the Lua code's own work, a frame of their own on top
-- of the stack that caused them.
local STATES = { N = "compiled", I = "interpreted", C = "C", G = "GC", J = "JIT compiler" }
local PSEUDO = { G = "[GC]", J = "[JIT compiler]" }

local running -- the profile being taken, if any

local function opt_num(fname, opts, k, default, lo, hi)
  local v = opts[k]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < lo or v > hi then
    error(("%s: option %s must be a number from %s to %s"):format(fname, k, lo, hi), 3)
  end
  return v
end

local OPTS = { interval = true, depth = true }

local function check_opts(fname, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s: bad argument (options table expected, got %s)"):format(fname, type(opts)), 3)
  end
  for k in pairs(opts) do
    if not OPTS[k] then error(("%s: unknown option '%s'"):format(fname, tostring(k)), 3) end
  end
  return opts
end

--- profile.start([opts]) -> profile | nil, "busy": starts sampling.
-- opts.interval: seconds between samples of CPU time (default 0.01; the
-- sampler counts whole milliseconds); opts.depth: frames kept per sample,
-- nearest the leaf (default 64).
function M.start(opts)
  opts = check_opts("orrery.profile.start", opts)
  local interval = opt_num("orrery.profile.start", opts, "interval", 0.01, 0.001, 1)
  local depth = opt_num("orrery.profile.start", opts, "depth", 64, 1, 1000)
  if running then return nil, "busy" end
  local ms = floor(interval * 1000 + 0.5)
  local counts, states = {}, {}
  local p = setmetatable({ counts = counts, states = states, samples = 0, interval = ms / 1000,
    started = C.orrery_ffi_now(), wall = os.time(), depth = depth }, Profile)
  local dumpstack = jprof.dumpstack
  jprof.start("li" .. ms, function(th, n, vmstate)
    local k = vmstate .. dumpstack(th, FMT, -depth)
    counts[k] = (counts[k] or 0) + n
    p.samples = p.samples + n
  end)
  running = p
  return p
end

--- profile:stop() -> profile: stops sampling (once; later calls do nothing).
function Profile:stop()
  if running == self then
    jprof.stop()
    running = nil
    self.duration = C.orrery_ffi_now() - self.started
  end
  return self
end

--- profile.busy() -> true while a profile is being taken.
function M.busy() return running ~= nil end

--- profile.collect(seconds [, opts]) -> profile | nil, err: samples for
-- seconds while the calling coroutine waits (the loop keeps running), then
-- stops. err is "busy" when another profile is being taken, or the wait's
-- "canceled" (the sampler is stopped either way).
function M.collect(seconds, opts)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds <= 0 then
    error("orrery.profile.collect: bad argument #1 (seconds expected, got " .. tostring(seconds) .. ")", 2)
  end
  local p, err = M.start(opts)
  if not p then return nil, err end
  local ok, slept, why = pcall(time.sleep, seconds)
  p:stop()
  if not ok then error(slept, 0) end
  if not slept then return nil, why end
  return p
end

-- The samples as { frames = { {name, file, line}, ... root first },
-- state = "compiled" ..., count }, in a stable order.
function Profile:stacks()
  local out = {}
  for k, n in pairs(self.counts) do
    local st = k:sub(1, 1)
    local frames = {}
    for name, loc in k:sub(2):gmatch("([^\t\n]*)\t([^\n]*)\n") do
      local file, line = loc:match("^(.*):(%d+)$")
      -- A chunk has no name: the main chunk shows as "chunk:0".
      if file and name == file .. ":0" then name = "main chunk" end
      frames[#frames + 1] = { name = name, file = file or loc, line = tonumber(line) or 0 }
    end
    if PSEUDO[st] then frames[#frames + 1] = { name = PSEUDO[st], file = "", line = 0 } end
    out[#out + 1] = { key = k, frames = frames, state = STATES[st] or st, count = n }
  end
  table.sort(out, function(a, b)
    if a.count ~= b.count then return a.count > b.count end
    return a.key < b.key
  end)
  return out
end

-- A frame as the folded format and the top list show it.
local function label(f)
  if f.file == "" then return f.name end
  -- An anonymous function is named by its chunk and line: the chunk's
  -- path is shortened as in the location.
  local s = f.name:gsub("^.*/([^/]*:%d+)$", "%1")
  if f.line > 0 then
    local at = f.file:match("([^/]*)$") .. ":" .. f.line
    if s ~= at then s = s .. " " .. at end
  end
  return (s:gsub(";", ","))
end

--- profile:folded() -> text: one line per distinct stack, root first,
-- frames separated by ';', then the sample count (flamegraph.pl's input).
function Profile:folded()
  local out = {}
  for _, s in ipairs(self:stacks()) do
    local t = {}
    for i, f in ipairs(s.frames) do t[i] = label(f) end
    if #t == 0 then t[1] = "[no Lua frame]" end
    out[#out + 1] = concat(t, ";") .. " " .. s.count
  end
  return concat(out, "\n") .. (#out > 0 and "\n" or "")
end

--- profile:top([n]) -> text: the n (default 20) functions with the most
-- samples of their own (flat), with the samples under them (cum), as
-- `go tool pprof -top` lists them.
function Profile:top(n)
  n = n or 20
  local flat, cum, order = {}, {}, {}
  local total = 0
  for _, s in ipairs(self:stacks()) do
    total = total + s.count
    local seen = {}
    for i, f in ipairs(s.frames) do
      local k = f.file == "" and f.name or (f.name .. " " .. f.file:match("([^/]*)$"))
      if not flat[k] then flat[k], cum[k], order[#order + 1] = 0, 0, k end
      if i == #s.frames then flat[k] = flat[k] + s.count end
      if not seen[k] then cum[k] = cum[k] + s.count; seen[k] = true end
    end
  end
  table.sort(order, function(a, b)
    if flat[a] ~= flat[b] then return flat[a] > flat[b] end
    if cum[a] ~= cum[b] then return cum[a] > cum[b] end
    return a < b
  end)
  local out = { ("%d samples, %.2fs of CPU in %.2fs"):format(total, total * self.interval,
    self.duration or (C.orrery_ffi_now() - self.started)),
    ("%8s %6s %8s %6s  %s"):format("flat", "flat%", "cum", "cum%", "function") }
  for i = 1, math.min(n, #order) do
    local k = order[i]
    out[#out + 1] = ("%8d %5.1f%% %8d %5.1f%%  %s"):format(flat[k], 100 * flat[k] / total, cum[k],
      100 * cum[k] / total, k)
  end
  return concat(out, "\n")
end

-- -- profile.proto --
--
-- A minimal protobuf writer: varints for non-negative integers below 2^53
-- (every number a profile holds), length-delimited strings and
-- sub-messages, packed repeated integers.

local function varint(out, v)
  while v >= 128 do
    out[#out + 1] = char(v % 128 + 128)
    v = floor(v / 128)
  end
  out[#out + 1] = char(v)
end

local function field_int(out, f, v)
  if v == 0 then return end -- proto3: a zero is the default, left out
  varint(out, f * 8)
  varint(out, v)
end

local function field_bytes(out, f, s)
  varint(out, f * 8 + 2)
  varint(out, #s)
  out[#out + 1] = s
end

local function message(build, ...)
  local out = {}
  build(out, ...)
  return concat(out)
end

local function packed(out, f, list)
  local p = {}
  for _, v in ipairs(list) do varint(p, v) end
  field_bytes(out, f, concat(p))
end

--- profile:proto() -> bytes: the profile as an uncompressed profile.proto
-- message (sample types samples/count and cpu/nanoseconds, as Go's CPU
-- profile; one function per name and chunk, one location per line in it;
-- each sample labelled with the VM state).
function Profile:proto()
  local strings, sindex = { "" }, { [""] = 0 }
  local function str(s)
    local i = sindex[s]
    if not i then
      i = #strings
      strings[i + 1] = s
      sindex[s] = i
    end
    return i
  end
  local period = floor(self.interval * 1e9 + 0.5)
  local funcs, fid, locs, lid = {}, {}, {}, {}
  local samples = {}
  for _, s in ipairs(self:stacks()) do
    local ids = {}
    for i = #s.frames, 1, -1 do -- pprof lists a sample's locations leaf first
      local f = s.frames[i]
      local fk = f.name .. "\0" .. f.file
      local fn = fid[fk]
      if not fn then
        fn = #funcs + 1
        fid[fk] = fn
        funcs[fn] = message(function(o)
          field_int(o, 1, fn)
          field_int(o, 2, str(f.name))
          field_int(o, 3, str(f.name))
          field_int(o, 4, str(f.file))
        end)
      end
      local lk = fn .. ":" .. f.line
      local loc = lid[lk]
      if not loc then
        loc = #locs + 1
        lid[lk] = loc
        locs[loc] = message(function(o)
          field_int(o, 1, loc)
          field_int(o, 2, 1)
          field_bytes(o, 4, message(function(l)
            field_int(l, 1, fn)
            field_int(l, 2, f.line)
          end))
        end)
      end
      ids[#ids + 1] = loc
    end
    samples[#samples + 1] = message(function(o)
      packed(o, 1, ids)
      packed(o, 2, { s.count, s.count * period })
      field_bytes(o, 3, message(function(l)
        field_int(l, 1, str("vmstate"))
        field_int(l, 2, str(s.state))
      end))
    end)
  end
  local out = {}
  local function value_type(f, ty, unit)
    field_bytes(out, f, message(function(o)
      field_int(o, 1, str(ty))
      field_int(o, 2, str(unit))
    end))
  end
  value_type(1, "samples", "count")
  value_type(1, "cpu", "nanoseconds")
  for _, s in ipairs(samples) do field_bytes(out, 2, s) end
  -- One mapping that says the functions are resolved already, so pprof
  -- does not look for a binary to symbolize addresses with.
  field_bytes(out, 3, message(function(o)
    field_int(o, 1, 1)
    field_int(o, 5, str("orrery"))
    for f = 7, 9 do field_int(o, f, 1) end
  end))
  for _, l in ipairs(locs) do field_bytes(out, 4, l) end
  for _, f in ipairs(funcs) do field_bytes(out, 5, f) end
  -- Strings are interned while the rest is written; the table goes last,
  -- which protobuf allows (fields may come in any order).
  field_int(out, 9, self.wall * 1e9)
  field_int(out, 10, floor((self.duration or (C.orrery_ffi_now() - self.started)) * 1e9))
  value_type(11, "cpu", "nanoseconds")
  field_int(out, 12, period)
  for _, s in ipairs(strings) do field_bytes(out, 6, s) end
  return concat(out)
end

-- -- gzip --
--
-- orrery has no deflate: the gzip container holds the protobuf in stored
-- blocks, which every gunzip (and pprof) reads. It adds 5 bytes per 64 kB.

local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if band(c, 1) ~= 0 then c = bxor(rshift(c, 1), 0xEDB88320) else c = rshift(c, 1) end
  end
  crc_table[i] = c
end

--- profile.crc32(s) -> number: the CRC-32 of s (ISO 3309, as gzip uses).
function M.crc32(s)
  local c = bnot(0)
  for i = 1, #s do
    c = bxor(crc_table[band(bxor(c, byte(s, i)), 255)], rshift(c, 8))
  end
  c = bnot(c)
  return c < 0 and c + 2 ^ 32 or c
end

local function le32(v)
  return char(v % 256, floor(v / 256) % 256, floor(v / 65536) % 256, floor(v / 16777216) % 256)
end

--- profile.gzip(s) -> bytes: s in a gzip container of stored blocks.
function M.gzip(s)
  local out = { "\31\139\8\0\0\0\0\0\0\255" } -- magic, deflate, no flags, no mtime, unknown OS
  local n, i = #s, 1
  repeat
    local len = math.min(65535, n - i + 1)
    local final = i + len > n
    out[#out + 1] = char(final and 1 or 0, len % 256, floor(len / 256), 255 - len % 256,
      255 - floor(len / 256))
    out[#out + 1] = s:sub(i, i + len - 1)
    i = i + len
  until final
  out[#out + 1] = le32(M.crc32(s))
  out[#out + 1] = le32(n % 2 ^ 32)
  return concat(out)
end

--- profile:pprof() -> bytes: profile:proto() gzipped, the format `go tool
-- pprof` and Go's /debug/pprof/profile use.
function Profile:pprof()
  return M.gzip(self:proto())
end

return M
