-- signal_test.lua -- SIGQUIT dumps and keeps running; SIGTERM and SIGINT
-- cancel the root context, run the on_shutdown handlers and give the
-- coroutines a grace period. Each case is a child process that signals
-- itself and prints what happened.
local T = require "orrery.test"

-- Prepended to every child: its own pid and a way to signal itself.
-- kill() is the system call through the FFI: os.execute("kill ...") works
-- for SIGTERM, but system() ignores SIGINT and SIGQUIT in the caller while
-- the command runs, so those would be lost.
local PRELUDE = [[
local orrery = require "orrery"
local ffi = require "ffi"
ffi.cdef "int kill(int pid, int sig);"
local pid = orrery.pid()
local SIG = { INT = 2, QUIT = 3, TERM = 15 }
local function kill(sig) ffi.C.kill(tonumber(pid), SIG[sig]) end
io.stdout:setvbuf("line")
]]

local function child(src)
  return T.script(PRELUDE .. src, { timeout = 20 })
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

T.test("SIGQUIT prints the coroutine dump and the process keeps running", function()
  local st, out, err = child([[
    -- Learn when the dump has been written (the dispatcher's hook).
    local sched = require "orrery.sched"
    local dumped = orrery.chan(1)
    local dump = sched.handlers.dump
    sched.handlers.dump = function(...) dump(...); dumped:try_send(true) end

    local inbox = orrery.chan(0, "inbox")
    orrery.go(function() inbox:recv() end)
    orrery.yield()
    kill("QUIT")
    -- The timeout only keeps a timer pending: with nothing pending, the
    -- deadlock check would run before the loop reads the signal.
    dumped:recv(10)
    print("still running")
    orrery.sleep(0.001)
    print("done")
  ]])
  T.eq(out, "still running\ndone\n")
  T.eq(st, 0)
  T.match(err, "SIGQUIT")
  T.match(err, "coroutine 1 %(main%)")
  T.match(err, "coroutine 2 %[chan receive on chan #%d+")
  T.match(err, "created at [^\n]*%.lua:%d+")
end)

T.test("SIGTERM cancels the root context and runs the on_shutdown handlers", function()
  local st, out, err = child([[
    local wg = orrery.waitgroup()
    wg:add(2)
    orrery.on_shutdown(function(sig)
      print("handler", sig, orrery.context.background():err())
      -- Waits work during the grace period.
      print("handler slept", orrery.sleep(0.001))
      wg:done()
    end)
    local inbox = orrery.chan()
    orrery.go(function()
      print("worker woke", inbox:recv())
      print("worker cleanup", orrery.sleep(0.001))
      wg:done()
    end)
    orrery.go(function() os.execute("kill -TERM " .. pid) end)
    print("main woke", orrery.sleep(60))
    print("main waits", wg:wait())
    print("root done closed", (select(2, orrery.context.background():done():recv())))
  ]])
  T.eq(err, "")
  T.eq(st, 0, "main returned after a graceful shutdown")
  local l = lines(out)
  T.eq(l[1], "handler\t15\tcanceled", "the handler runs first, with the signal number")
  T.eq(l[2], "main woke\tnil\tcanceled", "the parked sleep ended with canceled")
  T.eq(l[3], "worker woke\tnil\tfalse\tcanceled", "the parked recv ended with canceled")
  local rest = { l[4], l[5], l[6] }
  table.sort(rest)
  T.eq(rest, { "handler slept\ttrue", "main waits\ttrue", "worker cleanup\ttrue" })
  T.eq(l[7], "root done closed\tfalse")
  T.eq(#l, 7)
end)

T.test("a handler runs even when main returns as soon as it is woken", function()
  local st, out = child([[
    orrery.on_shutdown(function(sig) print("handler", sig) end)
    orrery.go(function() kill("TERM") end)
    orrery.sleep(60)
    print("main returns")
  ]])
  T.eq(out, "handler\t15\nmain returns\n")
  T.eq(st, 0)
end)

T.test("contexts derived from the root are cancelled by SIGTERM", function()
  local st, out = child([[
    local ctx = orrery.context.with_timeout(60)
    orrery.go(function() kill("TERM") end)
    print(orrery.with_context(ctx, function() return orrery.sleep(60) end))
    print(ctx:err())
  ]])
  T.eq(out, "nil\tcanceled\ncanceled\n")
  T.eq(st, 0)
end)

T.test("waits under a without_cancel context are not woken by the shutdown", function()
  local st, out = child([[
    local detached = orrery.context.without_cancel()
    local drained = orrery.chan()
    orrery.with_context(detached, function()
      orrery.go(function()
        local ok, err = orrery.sleep(0.05)      -- not cut short by SIGTERM
        drained:send({ ok, err })
      end)
    end)
    orrery.go(function() kill("TERM") end)
    print("main woke", orrery.sleep(60))
    local r = drained:recv()
    print("drainer", r[1], r[2])
  ]])
  T.eq(out, "main woke\tnil\tcanceled\ndrainer\ttrue\tnil\n")
  T.eq(st, 0)
end)

-- Regression: a signal that has been delivered but not yet read from
-- libuv's signal pipe when the last coroutine parks must be handled, not
-- lost to the deadlock check (host/sched.c checks uv_loop_alive() before
-- polling, and signal handles do not keep the loop alive).
T.test("a signal delivered just before the loop goes idle is not a deadlock", function()
  local st, out, err = child([[
    orrery.on_shutdown(function(sig) print("handler", sig) end)
    kill("TERM")
    print(orrery.context.background():done():recv())
  ]])
  T.eq(err, "")
  T.eq(out, "handler\t15\nnil\tfalse\tclosed\n")
  T.eq(st, 0)
end)

T.test("SIGINT does the same with signal number 2", function()
  local st, out = child([[
    orrery.on_shutdown(function(sig) print("handler", sig) end)
    orrery.go(function() kill("INT") end)
    print("main woke", orrery.sleep(60))
  ]])
  T.eq(out, "handler\t2\nmain woke\tnil\tcanceled\n")
  T.eq(st, 0)
end)

T.test("when the grace period runs out the process exits with 128 + signal", function()
  local st, out, err = child([[
    orrery.set_grace(0.05)
    orrery.go(function() kill("TERM") end)
    print("main woke", orrery.sleep(60))
    orrery.chan():recv() -- never finishes its cleanup
    print("not reached")
  ]])
  T.eq(out, "main woke\tnil\tcanceled\n")
  T.match(err, "grace period")
  T.eq(st, 143)

  st, out = child([[
    orrery.set_grace(0.05)
    orrery.go(function() kill("INT") end)
    orrery.sleep(60)
    orrery.sleep(60)
  ]])
  T.eq(st, 130)
end)

T.test("a second signal ends the process at once", function()
  local st, out, err = child([[
    orrery.set_grace(60)
    orrery.on_shutdown(function() print("handler"); kill("TERM") end)
    orrery.go(function() kill("TERM") end)
    orrery.sleep(60)
    orrery.sleep(60)
    print("not reached")
  ]])
  T.eq(out, "handler\n")
  T.match(err, "second signal")
  T.eq(st, 143)
end)

-- Regression: signals were handled inside the loop, so a coroutine that
-- never yields made SIGINT/SIGTERM (twice) and SIGQUIT do nothing.
T.test("a second SIGTERM ends a process whose loop is stuck", function()
  local st, out = child([[
    print("spinning")
    kill("TERM") -- relayed to a loop that never runs again
    kill("TERM")
    while true do end
  ]])
  T.eq(out, "spinning\n")
  T.eq(st, 143)
end)

T.test("the watchdog reports a stuck coroutine and exits as configured", function()
  local st, out, err = T.script([[
    local orrery = require "orrery"
    orrery.watchdog { timeout = 0.2, action = "exit" }
    orrery.go(function()
      while true do end
    end)
    orrery.sleep(0)
  ]], { timeout = 20 })
  T.eq(st, 70)
  T.match(err, "watchdog: the loop has not completed a turn for [%d.]+s: coroutine 2 %(created at [^)]*%.lua:3%) is running; exiting")
end)

T.test("the watchdog interrupts a stuck coroutine with an error and the loop goes on", function()
  local st, out, err = T.script([[
    local orrery = require "orrery"
    orrery.watchdog { timeout = 0.2, action = "interrupt" }
    -- Interpreted: LuaJIT's hook cannot stop a compiled loop (the watchdog
    -- then exits instead, see docs/runtime.md).
    local function spin() local n = 0; while true do n = n + 1 end end
    jit.off(spin)
    local ok, e = pcall(spin)
    print(ok, e)
    orrery.watchdog(false)
    print("after", orrery.sleep(0))
  ]], { timeout = 20 })
  T.eq(st, 0, err)
  T.match(out, "^false\t[^\n]*watchdog: interrupted, the loop was blocked too long\nafter\ttrue\n$")
  T.match(err, "interrupting it")
end)

T.test("the watchdog exits when its interrupt cannot stop a compiled loop", function()
  local st, _, err = T.script([[
    local orrery = require "orrery"
    orrery.watchdog { timeout = 0.2, action = "interrupt" }
    while true do end
  ]], { timeout = 20 })
  T.eq(st, 70)
  T.match(err, "the interrupt did not take")
end)

T.test("watchdog rejects bad options", function()
  local orrery = require "orrery"
  T.raises(function() orrery.watchdog() end, "orrery.watchdog: bad argument #1")
  T.raises(function() orrery.watchdog { timeout = 0 } end, "timeout")
  T.raises(function() orrery.watchdog { timeout = 1, action = "kill" } end, "action")
  T.raises(function() orrery.watchdog { timout = 1 } end, "unknown option timout")
end)

T.test("on_shutdown and set_grace reject bad arguments", function()
  local orrery = require "orrery"
  T.raises(function() orrery.on_shutdown("x") end, "orrery.on_shutdown: bad argument #1")
  T.raises(function() orrery.set_grace(-1) end, "grace")
  T.raises(function() orrery.set_grace("x") end, "set_grace")
end)

T.test("SIGHUP ends the process until on_hup asks for it; then each one runs the handlers", function()
  local st = child([[
    ffi.C.kill(tonumber(pid), 1)
    orrery.sleep(5)
    print("not reached")
  ]])
  T.eq(st, 129)
  local st2, out, err = child([[
    local got = orrery.chan(10)
    print(orrery.on_hup(function(sig) got:send("first " .. sig) end))
    orrery.on_hup(function(sig) got:send("second " .. sig) end)
    for _ = 1, 2 do
      ffi.C.kill(tonumber(pid), 1)
      print((got:recv(10)))
      print((got:recv(10)))
    end
    print("still running")
  ]])
  T.eq(st2, 0, err)
  T.eq(out, "true\nfirst 1\nsecond 1\nfirst 1\nsecond 1\nstill running\n")
  T.raises(function() require("orrery").on_hup("x") end, "orrery.on_hup: bad argument #1")
end)
