-- SPDX-License-Identifier: MIT
-- orrery.console -- a console into a running service: a unix socket that
-- the same user attaches to with `orrery attach PATH`, and the commands an
-- operator runs there (plain functions, usable from scripts too).
--
-- Each attached operator gets a session: a coroutine of its own that runs
-- what is typed inside the service, with its own globals (reads fall back
-- to _G) and its own print, while the service goes on. Detaching (exit,
-- Ctrl-D, a dropped connection) ends the session and never the service.
--
-- The wire protocol is lines. Server to client: "o <text>" is a line of
-- output, "p <prompt>" asks for input. Client to server: "l <text>" is a
-- line of input, "i" interrupts the running command (Ctrl-C), "c <text>"
-- asks for the completions of text (Tab), answered by one line "c " and
-- the candidates separated by tabs, "a" drops the lines typed so far
-- (Ctrl-C at the prompt).
local orrery = require "orrery"
local net = require "orrery.net"
local sched = require "orrery.sched"
local chan = require "orrery.chan"
local context = require "orrery.context"
local eval = require "orrery.eval"
local profile = require "orrery.profile"
local leaks = require "orrery.leaks"
local C = require "orrery.ffi"
local bit = require "bit"

local M = {}

-- -- Commands --

local function matches(c, f)
  if f.state and c.state ~= f.state then return false end
  if f.wait then
    -- What it waits on, with the name or role of the channel.
    local w = (c.wait or "") .. " " .. (c.name or c.role or "")
    if not w:find(f.wait, 1, true) then return false end
  end
  if f.site and not (c.site and c.site:find(f.site, 1, true)) then return false end
  return true
end

local function filter_arg(fname, f)
  if f == nil then return {} end
  if type(f) ~= "table" then
    error(("orrery.console.%s: bad argument #1 (filter table expected, got %s)"):format(fname, type(f)), 3)
  end
  for k in pairs(f) do
    local known = k == "state" or k == "wait" or k == "site" or k == "leaked"
    if not known and not (k == "group" and fname == "dump") then
      error(("orrery.console.%s: unknown filter %s (state, wait, site, leaked%s)"):format(fname, tostring(k),
        fname == "dump" and ", group" or ""), 3)
    end
  end
  return f
end

-- The coroutines a filter looks at: with leaked, only those parked for
-- good on channels nothing can reach (orrery.leaks).
local function listing(f)
  if f.leaked then return (leaks.find()) end
  return orrery.coroutines()
end

--- console.coroutines([filter]) -> list of orrery.coroutines() entries;
-- filter = { state = "waiting", wait = "chan receive", site = "app.lua",
-- leaked = true } (wait and site match substrings; wait also matches the
-- channel's name; leaked keeps the coroutines leaks() reports).
function M.coroutines(filter)
  local f = filter_arg("coroutines", filter)
  local out = {}
  for _, c in ipairs(listing(f)) do
    if matches(c, f) then out[#out + 1] = c end
  end
  return out
end

-- A wait as groups see it: without its duration and without the ids of
-- the channels, mutexes, ... it names (a leak of one coroutine per
-- request parks each on its own channel: one group, not one per id).
local function wait_kind(what)
  return (what:gsub(", %d+%.%d+s.*$", ""):gsub(" %(chan #%d+%)", ""):gsub(" #%d+", ""))
end

--- console.dump([filter]) -> text: orrery.dump() of the matching coroutines.
-- With filter.group, coroutines with the same wait, creation site and
-- stack are shown once with their count and ids, largest group first (as
-- Go's debug=1 profile does), so that a dump of 100k coroutines stays
-- readable.
function M.dump(filter)
  local f = filter_arg("dump", filter)
  local now = C.orrery_ffi_now()
  local groups, order = {}, {}
  local out = {}
  for _, c in ipairs(listing(f)) do
    if matches(c, f) then
      local what, tb = orrery.describe(c, now)
      local site = c.main and "startup" or c.site or "?"
      if f.group then
        local kind = wait_kind(what)
        local key = kind .. "\0" .. site .. "\0" .. tb
        local g = groups[key]
        if not g then
          g = { kind = kind, site = site, tb = tb, ids = {}, oldest = 0 }
          groups[key] = g
          order[#order + 1] = g
        end
        g.ids[#g.ids + 1] = c.id
        if c.since and now - c.since > g.oldest then g.oldest = now - c.since end
      else
        out[#out + 1] = string.format("coroutine %d%s [%s]:\ncreated at %s\n%s\n",
          c.id, c.main and " (main)" or "", what, site, tb)
      end
    end
  end
  if f.group then
    table.sort(order, function(a, b) return #a.ids > #b.ids end)
    for _, g in ipairs(order) do
      local ids = {}
      for i = 1, math.min(#g.ids, 10) do ids[i] = tostring(g.ids[i]) end
      if #g.ids > 10 then ids[#ids + 1] = "..." end
      out[#out + 1] = string.format("%d coroutine%s [%s%s]: %s\ncreated at %s\n%s\n", #g.ids,
        #g.ids == 1 and "" or "s", g.kind, g.oldest > 0 and string.format(", up to %.3fs", g.oldest) or "",
        table.concat(ids, ", "), g.site, g.tb)
    end
  end
  return table.concat(out, "\n")
end

--- console.waits([older]) -> list of { wait, site, count, oldest, ids }:
-- coroutines parked longer than older seconds (default 60), grouped by
-- what they wait on and where they were created, largest group first:
-- the usual shape of a leak (a coroutine per request, parked forever on
-- a channel nobody sends to).
function M.waits(older)
  if older == nil then older = 60 end
  if type(older) ~= "number" or older ~= older or older < 0 then
    error("orrery.console.waits: bad argument #1 (seconds expected, got " .. type(older) .. ")", 2)
  end
  local now = C.orrery_ffi_now()
  local list = {}
  for _, c in ipairs(orrery.coroutines()) do
    if c.state == "waiting" and c.since and now - c.since >= older then list[#list + 1] = c end
  end
  return M.group(list, now)
end

--- console.group(list [, now]) -> list of { wait, site, count, oldest,
-- ids }: coroutines() entries grouped by what they wait on (without its
-- duration) and where they were created, largest group first.
function M.group(list, now)
  now = now or C.orrery_ffi_now()
  local groups, order = {}, {}
  for _, c in ipairs(list) do
    local what = wait_kind(orrery.describe(c, now))
    local key = what .. "\0" .. (c.site or "?")
    local g = groups[key]
    if not g then
      g = { wait = what, site = c.site or "?", count = 0, oldest = 0, ids = {} }
      groups[key] = g
      order[#order + 1] = g
    end
    g.count = g.count + 1
    g.ids[#g.ids + 1] = c.id
    if c.since and now - c.since > g.oldest then g.oldest = now - c.since end
  end
  table.sort(order, function(a, b) return a.count > b.count end)
  return order
end

--- console.leaks() -> list of { wait, site, count, oldest, ids }: the
-- coroutines parked for good on channels that nothing live can reach
-- (orrery.leaks), grouped as waits() groups them.
function M.leaks()
  return M.group((leaks.find()))
end

--- console.channels() -> list of { id, name, role, len, cap, closed } for
-- the live channels that have a name or a role.
function M.channels()
  local out = {}
  for id, ch in pairs(chan.by_id) do
    out[#out + 1] = { id = id, name = ch.name, role = ch.role, len = ch:len(),
      cap = ch:cap(), closed = ch:closed() }
  end
  table.sort(out, function(a, b) return a.id < b.id end)
  return out
end

--- console.breakers() -> orrery.breaker.list(); console.limiters() ->
-- orrery.limit.list() (state and counts of each).
function M.breakers() return require("orrery.breaker").list() end
function M.limiters() return require("orrery.limit").list() end

--- console.sagas() -> list of def:stats(): each saga definition of this
-- process with its instances in flight by state and those it finished
-- (empty when the service does not use orrery.saga).
function M.sagas()
  local saga = package.loaded["orrery.saga"]
  local out = {}
  if not saga then return out end
  for i, d in ipairs(saga.list()) do out[i] = d:stats() end
  return out
end

--- console.memory() -> { lua_bytes, used, limit, failures, rss_bytes }
function M.memory()
  local m = orrery.memory and orrery.memory() or {}
  local r = { lua_bytes = collectgarbage("count") * 1024, used = m.used, limit = m.limit,
    failures = m.failures }
  local f = io.open("/proc/self/statm")
  if f then
    local pages = f:read("*n") and f:read("*n")
    f:close()
    if pages then r.rss_bytes = pages * 4096 end
  end
  return r
end

--- console.lag() -> seconds: how long a coroutine that asks to run now
-- waits for its turn (the loop's lag).
function M.lag()
  local t0 = C.orrery_ffi_now()
  orrery.sleep(0)
  return C.orrery_ffi_now() - t0
end

--- console.profile([seconds [, opts]]) -> text | nil, err: samples the
-- CPU for seconds (default 10) while the caller waits, then returns the
-- functions with the most samples (opts.top of them, default 20), or with
-- opts.file writes the profile there (opts.format "pprof", the default,
-- for `go tool pprof`, or "folded" for flamegraph.pl) and says so.
-- err is "busy" while another profile is being taken, or "canceled".
local PROFILE_OPTS = { file = true, format = true, top = true, interval = true }

function M.profile(seconds, opts)
  local F = "orrery.console.profile"
  if seconds == nil then seconds = 10 end
  if type(seconds) ~= "number" or seconds ~= seconds or seconds <= 0 then
    error(F .. ": bad argument #1 (seconds expected, got " .. type(seconds) .. ")", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error(F .. ": bad argument #2 (options table expected)", 2) end
  for k in pairs(opts) do
    if not PROFILE_OPTS[k] then error(("%s: unknown option '%s'"):format(F, tostring(k)), 2) end
  end
  local format = opts.format or "pprof"
  if format ~= "pprof" and format ~= "folded" then
    error(F .. ": option format must be \"pprof\" or \"folded\"", 2)
  end
  local p, err = profile.collect(seconds, { interval = opts.interval })
  if not p then return nil, err end
  if not opts.file then return p:top(opts.top) end
  local f, ferr = io.open(opts.file, "wb")
  if not f then return nil, ferr end
  local ok, werr = f:write(format == "folded" and p:folded() or p:pprof())
  f:close()
  if not ok then return nil, werr end
  return ("%d samples in %s (%s)"):format(p.samples, opts.file, format)
end

local HELP = [[
console commands (also in require "orrery.console"):
  coroutines{state=, wait=, site=}   live coroutines, filtered
  dump{state=, wait=, site=, group=} their dump, as on SIGQUIT; group=true
                                     shows identical stacks once, counted
  waits(older)                       coroutines parked over older s (60),
                                     grouped by wait and creation site
  leaks()                            coroutines parked for good on channels
                                     nothing can reach any more, grouped;
                                     also a filter: dump{leaked=true}
  channels()                         named channels: len, cap, closed
  breakers(), limiters()             circuit breakers and rate limiters
  sagas()                            sagas in flight by state, and finished
  memory(), lag(), stats()           memory, loop lag, scheduler counts
  profile(seconds, {file=, format=}) a CPU profile: the top functions, or
                                     written to file (pprof or folded)
  exit (or Ctrl-D)                   detach; the service goes on
A command can be typed as a word and its arguments: `profile 5`, `dump`
(its text is printed as it is). Anything else is Lua, run inside the
service in this session's coroutine; Ctrl-C interrupts it.]]

-- -- Sessions --

local function send(conn, kind, text)
  for line in (tostring(text) .. "\n"):gmatch("([^\n]*)\n") do
    if not conn:write(kind .. " " .. line .. "\n") then return false end
  end
  return true
end

-- The session's commands; a line that is one of them alone, or one of them
-- followed by arguments that do not make Lua of the line, is a call
-- (`profile 5`, `waits 60`, `dump`).
local COMMANDS = { coroutines = true, dump = true, waits = true, leaks = true, channels = true, breakers = true,
  limiters = true, sagas = true, memory = true, lag = true, profile = true, stats = true, help = true }

-- compile(src) -> f, err, more, command: as eval.compile, and whether the
-- line was a command typed as a word.
local function compile(src)
  local name, args = src:match("^%s*([%a_][%w_]*)%s*(.-)%s*$")
  if name and COMMANDS[name] then
    if args == "" then return loadstring("return " .. name .. "()", "=console"), nil, nil, true end
    local f, err, more = eval.compile(src, "=console")
    if f or more then return f, err, more end
    f = loadstring("return " .. name .. "(" .. args .. ")", "=console")
    if f then return f, nil, nil, true end
    return nil, err
  end
  return eval.compile(src, "=console")
end

local function new_env(conn)
  local env = {}
  env.print = function(...)
    local t = {}
    for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
    send(conn, "o", table.concat(t, "\t"))
  end
  env.help = function() send(conn, "o", HELP) end
  for k in pairs(COMMANDS) do env[k] = env[k] or M[k] end
  env.stats = orrery.stats
  env.orrery = orrery
  return setmetatable(env, { __index = _G })
end

-- Runs one session until the operator detaches.
local function session(srv, conn)
  local env = new_env(conn)
  local input = chan.new(16, "console input")
  local current -- cancel function of the running command
  -- The reader takes the operator's lines while a command runs, so that
  -- "i" (Ctrl-C) can interrupt it.
  orrery.go(function()
    while true do
      local line = conn:read_until("\n", 65536)
      if not line then break end
      line = line:sub(1, -2)
      if line == "i" then
        if current then current() end
      elseif line:sub(1, 2) == "c " then -- Tab: the candidates, in one line
        local ok, list = pcall(eval.complete, line:sub(3), env)
        if not conn:write("c " .. table.concat(ok and list or {}, "\t") .. "\n") then break end
      elseif line:sub(1, 2) == "l " then
        input:send(line:sub(3))
      elseif line == "a" then -- Ctrl-C at the prompt: drop what was typed
        input:send(false)
      end
    end
    input:close()
  end)
  send(conn, "o", ("orrery %s console, pid %s; help() lists the commands"):format(orrery.version,
    tostring(srv.pid)))
  local buf
  while true do
    if not send(conn, "p", buf and ">> " or "> ") then break end
    local line, ok = input:recv()
    if not ok then break end
    if line == false then
      buf = nil
      send(conn, "o", "(interrupted; exit or Ctrl-D detaches)")
    elseif not buf and (line == "exit" or line == "quit") then
      break
    else
      buf = buf and (buf .. "\n" .. line) or line
      local f, err, more, command = compile(buf)
      if f or not more then
        buf = nil
        if not f then
          send(conn, "o", err)
        else
          setfenv(f, env)
          local ctx, cancel = context.with_cancel(srv.ctx)
          current = cancel
          local slot = C.orrery_ffi_co_slot()
          local old = sched.bind(slot, ctx)
          local r = sched.pack(xpcall(f, eval.traceback))
          sched.bind(slot, old)
          current = nil
          cancel()
          if not r[1] then
            send(conn, "o", r[2])
          elseif command and type(r[2]) == "string" then
            send(conn, "o", r[2]) -- a command's text, as it is
          elseif r.n > 1 then
            local out = {}
            for i = 2, r.n do out[#out + 1] = eval.show(r[i]) end
            send(conn, "o", table.concat(out, "\t"))
          end
        end
      end
    end
  end
  conn:close()
end

local Console = {}
Console.__index = Console

-- -- Listening --

local LOOPBACK = { ["127.0.0.1"] = true, ["::1"] = true, localhost = true }

--- console.opened: the consoles open now, in the order they were opened
-- (the one of --console first).
M.opened = {}

-- Whether token equals the expected one, in time that depends only on the
-- expected token's length (never on where the two first differ).
local function same_token(token, expected)
  local diff = #token == #expected and 0 or 1
  for i = 1, #expected do
    diff = bit.bor(diff, bit.bxor(token:byte(i) or 0, expected:byte(i)))
  end
  return diff == 0
end

-- tcp://host:port -> host, port; nil when addr is not a TCP address.
local function tcp_addr(addr)
  local rest = addr:match("^tcp://(.*)$")
  if not rest then return nil end
  local host, port = rest:match("^%[([^%]]+)%]:(%d+)$")
  if not host then host, port = rest:match("^([^:/%[%]]+):(%d+)$") end
  if not host or tonumber(port) > 65535 then
    error("orrery.console.listen: bad address '" .. addr .. "' (tcp://host:port expected)", 3)
  end
  return host, tonumber(port)
end

local function start_session(srv, conn)
  srv.sessions = srv.sessions + 1
  srv.attached = srv.attached + 1
  sched.spawn(srv.ctx, function()
    session(srv, conn)
    srv.sessions = srv.sessions - 1
  end)
end

-- A TCP connection's first line is "t <token>", within a few seconds; a
-- bad token is counted, and after max_failures of them the console stops
-- accepting TCP connections.
local MAX_HANDSHAKES = 16 -- connections that have not sent their token yet

local function tcp_handshake(srv, conn)
  if srv.handshakes >= MAX_HANDSHAKES then return conn:close() end
  srv.handshakes = srv.handshakes + 1
  local line = conn:read_until("\n", 1024, 5)
  srv.handshakes = srv.handshakes - 1
  local token = line and line:match("^t ([^\r\n]*)\r?\n$")
  if token and same_token(token, srv.token) and not srv.locked then
    return start_session(srv, conn)
  end
  conn:write("o permission denied: bad token\n")
  conn:close()
  srv.failures = srv.failures + 1
  if srv.failures >= srv.max_failures and not srv.locked then
    srv.locked = true
    srv.lis:close()
    io.stderr:write(("orrery.console: %s: %d bad tokens, no longer accepting connections\n")
      :format(srv.url, srv.failures))
  end
end

local LISTEN_OPTS = { token = true, max_failures = true }

--- console.listen(addr [, opts]) -> console | nil, err. addr is a unix
-- socket path: the socket gets mode 0600 and accepts only the user the
-- service runs as (peer credentials are checked). Or tcp://host:port on
-- loopback: every connection must first send opts.token (at least 16
-- characters, compared in constant time); after opts.max_failures bad
-- tokens (default 5) the console stops accepting. `orrery attach addr`
-- connects. console.sessions is the number attached now,
-- console.attached the number since it opened; console.port the TCP port.
function M.listen(addr, opts)
  local F = "orrery.console.listen"
  if type(addr) ~= "string" or addr == "" then
    error(F .. ": bad argument #1 (socket path or tcp://host:port expected, got " .. type(addr) .. ")", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error(F .. ": bad argument #2 (options table expected)", 2) end
  for k in pairs(opts) do
    if not LISTEN_OPTS[k] then error(("%s: unknown option '%s'"):format(F, tostring(k)), 2) end
  end
  local host, port = tcp_addr(addr)
  local lis, err
  if host then
    if not LOOPBACK[host] then
      error(F .. ": '" .. host .. "' is not loopback (a TCP console listens only there)", 2)
    end
    if type(opts.token) ~= "string" or #opts.token < 16 or opts.token:find("[%s%c]") then
      error(F .. ": a TCP console needs option token (16 characters or more, no spaces)", 2)
    end
    local mf = opts.max_failures
    if mf ~= nil and (type(mf) ~= "number" or mf < 1 or mf % 1 ~= 0) then
      error(F .. ": option max_failures must be a positive integer", 2)
    end
    lis, err = net.listen { host = host == "localhost" and "127.0.0.1" or host, port = port }
  else
    if opts.token ~= nil or opts.max_failures ~= nil then
      error(F .. ": options token and max_failures are for tcp:// consoles", 2)
    end
    lis, err = net.listen { unix = addr, mode = 384 }
  end
  if not lis then return nil, err end
  local ctx, cancel = context.with_cancel(context.without_cancel(context.background()))
  local pid = orrery.pid()
  local srv = setmetatable({ lis = lis, path = not host and addr or nil, ctx = ctx, cancel = cancel,
    pid = pid, sessions = 0, attached = 0, failures = 0, handshakes = 0 }, Console)
  if host then
    srv.host, srv.port = lis.host, lis.port
    srv.url = ("tcp://%s:%d"):format(lis.host:find(":", 1, true) and "[" .. lis.host .. "]" or lis.host,
      lis.port)
    srv.token, srv.max_failures = opts.token, opts.max_failures or 5
  end
  M.opened[#M.opened + 1] = srv
  sched.spawn(ctx, function()
    while true do
      local conn = lis:accept()
      if not conn then break end
      if host then
        sched.spawn(ctx, tcp_handshake, srv, conn)
      else
        local _, _, same = conn:peer_cred()
        if not same then
          conn:write("o permission denied: not the service's user\n")
          conn:close()
        else
          start_session(srv, conn)
        end
      end
    end
  end)
  return srv
end

--- console:close(): stops accepting and ends every session.
function Console:close()
  if not self.locked then self.lis:close() end
  self.cancel()
  for i, s in ipairs(M.opened) do
    if s == self then table.remove(M.opened, i) break end
  end
end

return M
