-- profile_test.lua -- CPU profiles: samples of a busy function come out in
-- pprof's format (read back here by a small gunzip and protobuf decoder,
-- and by `go tool pprof` when it is installed), as folded stacks and as a
-- top list, from orrery.profile, /debug/pprof/profile and the console.
local T = require "orrery.test"
local orrery = require "orrery"
local profile = require "orrery.profile"
local admin = require "orrery.admin"
local console = require "orrery.console"
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "http_helpers.lua")

local function busy_loop(n)
  local s = 0
  for i = 1, n do s = s + math.sin(i) end
  return s
end

-- Spins in busy_loop until done() says so, letting the loop run between
-- rounds: the samples are taken while the profile's owner waits.
local function spin(done)
  while not done() do
    busy_loop(20000)
    orrery.yield()
  end
end

-- -- Reading the output back --

-- gunzip of a container with stored blocks (all orrery writes).
local function gunzip(s)
  T.eq(s:sub(1, 3), "\31\139\8", "gzip magic and deflate")
  local i, out = 11, {}
  while true do
    local hdr = s:byte(i)
    T.eq(math.floor(hdr / 2) % 4, 0, "a stored block")
    local len = s:byte(i + 1) + 256 * s:byte(i + 2)
    local nlen = s:byte(i + 3) + 256 * s:byte(i + 4)
    T.eq(len + nlen, 65535, "LEN and NLEN")
    out[#out + 1] = s:sub(i + 5, i + 4 + len)
    i = i + 5 + len
    if hdr % 2 == 1 then break end
  end
  local data = table.concat(out)
  local function le32(j) return s:byte(j) + 256 * s:byte(j + 1) + 65536 * s:byte(j + 2) + 16777216 * s:byte(j + 3) end
  T.eq(le32(i), profile.crc32(data), "the CRC-32")
  T.eq(le32(i + 4), #data, "ISIZE")
  T.eq(#s, i + 7, "nothing after the trailer")
  return data
end

-- Decodes a protobuf message into { [field] = { values... } }: varints as
-- numbers, length-delimited fields as strings.
local function decode(s)
  local msg, i = {}, 1
  local function varint()
    local v, mul = 0, 1
    while true do
      local b = s:byte(i)
      i = i + 1
      v = v + (b % 128) * mul
      if b < 128 then return v end
      mul = mul * 128
    end
  end
  while i <= #s do
    local key = varint()
    local f, wt = math.floor(key / 8), key % 8
    local v
    if wt == 0 then
      v = varint()
    elseif wt == 2 then
      local n = varint()
      v = s:sub(i, i + n - 1)
      i = i + n
    else
      error("unexpected wire type " .. wt)
    end
    msg[f] = msg[f] or {}
    table.insert(msg[f], v)
  end
  return msg
end

local function packed(s)
  local out, i = {}, 1
  while i <= #s do
    local v, mul = 0, 1
    repeat
      local b = s:byte(i)
      i = i + 1
      v = v + (b % 128) * mul
      mul = mul * 128
    until b < 128
    out[#out + 1] = v
  end
  return out
end

-- The samples whose stack has a frame of the function named name:
-- { count, cpu nanoseconds }, and the sample types.
local function samples_of(pb, name)
  local p = decode(pb)
  local strings = p[6]
  local function str(i) return strings[(i or 0) + 1] end
  local types = {}
  for _, vt in ipairs(p[1]) do
    local m = decode(vt)
    types[#types + 1] = str(m[1][1]) .. "/" .. str(m[2][1])
  end
  local fn_named = {}
  for _, f in ipairs(p[5] or {}) do
    local m = decode(f)
    if str(m[2][1]) == name then fn_named[m[1][1]] = true end
  end
  local loc_in = {}
  for _, l in ipairs(p[4] or {}) do
    local m = decode(l)
    for _, line in ipairs(m[4] or {}) do
      if fn_named[decode(line)[1][1]] then loc_in[m[1][1]] = true end
    end
  end
  local count, ns = 0, 0
  for _, sm in ipairs(p[2] or {}) do
    local m = decode(sm)
    local hit = false
    for _, id in ipairs(packed(m[1][1])) do if loc_in[id] then hit = true end end
    if hit then
      local v = packed(m[2][1])
      count, ns = count + v[1], ns + v[2]
    end
  end
  return count, ns, types, p
end

-- -- Cases --

T.test("a profile counts a busy function's samples: pprof, folded and top", function()
  local p = assert(profile.start { interval = 0.001 })
  T.ok(profile.busy())
  T.eq({ profile.start() }, { nil, "busy" }, "one profile at a time")
  spin(function() return p.samples >= 30 end)
  p:stop()
  T.ok(not profile.busy())

  local folded = p:folded()
  T.match(folded, "busy_loop profile_test%.lua:%d+ %d+\n")
  for line in folded:gmatch("[^\n]+") do T.match(line, "^[^;]+[^\n]* %d+$") end

  local count, ns, types, raw = samples_of(gunzip(p:pprof()), "busy_loop")
  T.ok(count > 0, "busy_loop has samples")
  T.eq(ns, count * 1e6, "cpu nanoseconds: count times the interval")
  T.eq(types, { "samples/count", "cpu/nanoseconds" })
  T.eq(raw[12][1], 1e6, "the period")

  T.match(p:top(), "^%d+ samples, ")
  T.match(p:top(), "\n[ %d.%%]+busy_loop profile_test%.lua")
end)

T.test("go tool pprof -top reads the profile", function()
  if os.execute("command -v go >/dev/null 2>&1") ~= 0 then T.skip("go is not installed") end
  local p = assert(profile.start { interval = 0.001 })
  spin(function() return p.samples >= 30 end)
  p:stop()
  local file = os.tmpname()
  local f = io.open(file, "wb")
  f:write(p:pprof())
  f:close()
  local pp = io.popen("go tool pprof -top " .. T.shquote(file) .. " 2>&1")
  local out = pp:read("*a")
  pp:close()
  os.remove(file)
  T.match(out, "Type: cpu")
  T.match(out, "%d+ms +[%d.]+%% +[%d.]+%% +%d+ms +[%d.]+%%  busy_loop\n")
end)

T.test("crc32 and the gzip container", function()
  T.eq(profile.crc32("123456789"), 0xCBF43926)
  T.eq(profile.crc32(""), 0)
  local big = string.rep("orrery ", 20000) -- more than one stored block
  T.eq(gunzip(profile.gzip(big)), big)
  T.eq(gunzip(profile.gzip("")), "")
  if os.execute("command -v gzip >/dev/null 2>&1") == 0 then
    local file = os.tmpname()
    local f = io.open(file, "wb")
    f:write(profile.gzip(big))
    f:close()
    local pp = io.popen("gzip -dc < " .. T.shquote(file))
    T.eq(pp:read("*a"), big, "gzip -d agrees")
    pp:close()
    os.remove(file)
  end
end)

T.test("/debug/pprof/profile samples while the service runs", function()
  local srv = assert(admin.listen { port = 0 })
  local function fetch(path)
    local res
    orrery.go(function() res = H.get(srv, path) end)
    spin(function() return res ~= nil end)
    return res
  end
  local res = fetch("/debug/pprof/profile?seconds=0.3")
  T.eq(res.status, 200)
  T.eq(res.headers["content-type"], "application/octet-stream")
  T.ok(samples_of(gunzip(res.body), "busy_loop") > 0, "busy_loop has samples")

  res = fetch("/debug/pprof/profile?seconds=0.3&format=folded")
  T.eq(res.status, 200)
  T.match(res.body, "busy_loop profile_test%.lua:%d+ %d+\n")

  T.eq(H.get(srv, "/debug/pprof/profile?seconds=x").status, 400)
  T.eq(H.get(srv, "/debug/pprof/profile?format=svg").status, 400)
  local p = assert(profile.start())
  T.eq(H.get(srv, "/debug/pprof/profile?seconds=1").status, 409, "another profile is running")
  p:stop()
  srv:close()
end)

T.test("console.profile returns the top functions, or writes the profile to a file", function()
  local text
  orrery.go(function() text = console.profile(0.3, { interval = 0.001 }) end)
  spin(function() return text ~= nil end)
  T.match(text, "^%d+ samples, ")
  T.match(text, "busy_loop profile_test%.lua")

  local file = os.tmpname()
  local said
  orrery.go(function() said = console.profile(0.3, { file = file, format = "folded" }) end)
  spin(function() return said ~= nil end)
  T.match(said, "^%d+ samples in ")
  local f = io.open(file)
  T.match(f:read("*a"), "busy_loop")
  f:close()
  os.remove(file)

  T.raises(function() console.profile(-1) end, "orrery.console.profile: bad argument #1")
  T.raises(function() console.profile(1, { colour = 1 }) end, "unknown option 'colour'")
  T.raises(function() profile.start { interval = 5 } end, "option interval must be")
end)

T.test("a cancelled profile stops the sampler", function()
  local ctx, cancel = orrery.context.with_cancel()
  local got
  orrery.go(function()
    orrery.with_context(ctx, function() got = { profile.collect(30) } end)
  end)
  orrery.yield()
  T.ok(profile.busy())
  cancel()
  while not got do orrery.yield() end
  T.eq(got, { nil, "canceled" })
  T.ok(not profile.busy())
end)
