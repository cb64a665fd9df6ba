-- repl_tty_test.lua -- the REPL and `orrery attach` at a real terminal,
-- driven through a pseudo-terminal by python3's pty module: Tab completes
-- names and fields, Ctrl-C interrupts the running command and the session
-- goes on, Ctrl-D at an empty prompt exits. Skipped without python3.
local T = require "orrery.test"
local json = require "orrery.json"

-- The driver: forks the command on a pty and plays the steps, each
-- { "send", text } | { "expect", text } (output seen since the last
-- expect, echo included) | { "idle" } (until the process's main thread
-- sleeps: the loop is in its poll, no Lua code runs) | { "raw" } (until
-- the line editor has the terminal: what is typed before it has is read
-- in the terminal's line mode, where Ctrl-D is not a key). Then waits for the
-- exit and prints "EXIT status". With DRIVE_SERVICE set, that script runs
-- first (with the orrery binary and DRIVE_DIR as its arguments) and the
-- steps start once it printed "ready"; it is killed at the end.
local DRIVER = [==[
import os, pty, sys, time, select, json, subprocess, signal, termios
exe, steps, args = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
service = None
if os.environ.get("DRIVE_SERVICE"):
    service = subprocess.Popen([exe, os.environ["DRIVE_SERVICE"], exe, os.environ["DRIVE_DIR"]],
                               stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if service.stdout.readline().strip() != b"ready":
        print("SERVICE did not start"); sys.exit(6)
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execv(exe, [exe] + args)
buf, log = b"", []
def fail(what):
    print("%s; output: %r" % (what, b"".join(log)))
    os.kill(pid, signal.SIGKILL)
    if service: service.kill()
    sys.exit(3)
def read(timeout):
    global buf
    r, _, _ = select.select([fd], [], [], timeout)
    if not r: return True
    try: d = os.read(fd, 4096)
    except OSError: d = b""
    buf += d; log.append(d)
    return bool(d)
def expect(s):
    global buf
    end = time.monotonic() + 15
    while s.encode() not in buf:
        if time.monotonic() > end: fail("TIMEOUT waiting for %r" % s)
        if not read(0.1): fail("EOF waiting for %r" % s)
    buf = buf[buf.index(s.encode()) + len(s):]
def idle():
    end = time.monotonic() + 15
    while True:
        with open("/proc/%d/task/%d/stat" % (pid, pid)) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "S": return
        if time.monotonic() > end: fail("TIMEOUT waiting for the loop to sleep")
        read(0.01)
def raw():
    end = time.monotonic() + 15
    while termios.tcgetattr(fd)[3] & termios.ICANON:
        if time.monotonic() > end: fail("TIMEOUT waiting for the line editor")
        read(0.01)
for step in steps:
    if step[0] == "send": os.write(fd, step[1].encode())
    elif step[0] == "expect": expect(step[1])
    elif step[0] == "idle": idle()
    elif step[0] == "raw": raw()
end = time.monotonic() + 15
while True:
    wp, st = os.waitpid(pid, os.WNOHANG)
    if wp: break
    if time.monotonic() > end: fail("NO EXIT")
    read(0.05)
if service: service.kill(); service.wait()
print("EXIT %d" % (os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)))
]==]

local function have_python()
  return os.execute("command -v python3 >/dev/null 2>&1") == 0
end

-- drive(args, steps [, service [, env]]) -> exit status of the command, the
-- driver's report.
local function drive(args, steps, service, extra_env)
  if not have_python() then T.skip("python3 is not installed") end
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local py = dir .. "/drive.py"
  local f = io.open(py, "w")
  f:write(DRIVER)
  f:close()
  local env = {}
  for k, v in pairs(extra_env or {}) do env[k] = v end
  if service then
    env.DRIVE_SERVICE, env.DRIVE_DIR = dir .. "/service.lua", dir
    f = io.open(env.DRIVE_SERVICE, "w")
    f:write(service)
    f:close()
  end
  local full = { py, T.exe, json.encode(steps) }
  for _, a in ipairs(args) do full[#full + 1] = (a:gsub("DIR", dir)) end
  local _, out = T.run(full, { exe = "python3", env = env, timeout = 60 })
  os.execute("rm -rf " .. dir)
  return tonumber(out:match("EXIT (%d+)\n$")), out
end

T.test("Tab completes globals and fields at the REPL's prompt", function()
  local st, out = drive({ "repl" }, {
    { "expect", "> " }, { "raw" },
    -- orrery.sle<Tab> becomes orrery.sleep: the comparison is true only if
    -- the completion was inserted.
    { "send", "x = orrery.sle\t ~= nil\n" }, { "expect", "> " }, { "raw" },
    { "send", "greeting = 'hi'\n" }, { "expect", "> " }, { "raw" },
    { "send", "y = greet\t:up\t() == 'HI'\n" }, { "expect", "> " }, { "raw" },
    { "send", "print('x, y: ' .. tostring(x) .. ', ' .. tostring(y))\n" },
    { "expect", "x, y: true, true" }, { "expect", "> " }, { "raw" },
    { "send", "\4" },
  })
  T.eq(st, 0, out)
end)

T.test("a UTF-8 terminal's characters reach the REPL whole", function()
  local p = io.popen("locale -a 2>/dev/null")
  local locales = p:read("*a")
  p:close()
  if not locales:lower():find("c.utf8", 1, true) then T.skip("no C.UTF-8 locale") end
  local st, out = drive({ "repl" }, {
    { "expect", "> " }, { "raw" },
    { "send", "s = 'h\u{e9}'\n" }, { "expect", "> " }, { "raw" },
    { "send", "print('bytes', #s)\n" }, { "expect", "bytes\t3" }, { "expect", "> " }, { "raw" },
    { "send", "\4" },
  }, nil, { LC_ALL = "C.UTF-8" })
  T.eq(st, 0, out)
end)

T.test("Ctrl-C at a terminal interrupts the running command; the REPL goes on; Ctrl-D exits", function()
  local st, out = drive({ "repl" }, {
    { "expect", "> " }, { "raw" },
    -- The command parks in sleep; then the coroutine it started says so.
    { "send", "n = 41; orrery.go(function() io.write('sle', 'eping\\n') end); print(orrery.sleep(60))\n" },
    { "expect", "sleeping" }, { "idle" },
    { "send", "\3" },
    { "expect", "nil\tcanceled" }, { "expect", "> " }, { "raw" }, { "idle" },
    -- Ctrl-C at an idle prompt drops the lines typed, and neither exits
    -- nor cancels the root context.
    { "send", "n = n + 1000 +\n" }, { "expect", ">> " }, { "raw" }, { "send", "1" }, { "idle" },
    { "send", "\3" },
    { "expect", "(interrupted; Ctrl-D exits)" }, { "expect", "> " }, { "raw" },
    { "send", "print('n is', n + 1, orrery.context.background():err())\n" },
    { "expect", "n is\t42\tnil" }, { "expect", "> " }, { "raw" },
    { "send", "\4" },
  })
  T.eq(st, 0, out)
end)

-- The service for orrery attach: a console on DIR/c.sock with a global of
-- its own, "ready" once it listens.
local SERVICE = [[
local orrery = require "orrery"
local console = require "orrery.console"
local dir = arg[2]
assert(console.listen(dir .. "/c.sock"))
inventory_count = 7
print("ready")
io.stdout:flush()
orrery.sleep(3600)
]]

T.test("Tab in orrery attach completes from the service: its globals and the session's", function()
  local st, out = drive({ "attach", "DIR/c.sock" }, {
    { "expect", "> " }, { "raw" },
    { "send", "mine = 35\n" }, { "expect", "> " }, { "raw" },
    { "send", "=inventory_c\t + mi\t\n" },
    { "expect", "42" }, { "expect", "> " }, { "raw" },
    { "send", "=orrery.sle\t ~= nil\n" },
    { "expect", "true" }, { "expect", "> " }, { "raw" },
    { "send", "\4" },
  }, SERVICE)
  T.eq(st, 0, out)
end)

T.test("Ctrl-C in orrery attach interrupts the command in the service", function()
  local st, out = drive({ "attach", "DIR/c.sock" }, {
    { "expect", "> " }, { "raw" },
    { "send", "orrery.go(function() print('wai', 'ting') end); print(orrery.sleep(60))\n" },
    { "expect", "wai\tting" }, { "idle" },
    { "send", "\3" },
    { "expect", "nil\tcanceled" }, { "expect", "> " }, { "raw" },
    { "send", "=1 + 1\n" }, { "expect", "2" }, { "expect", "> " }, { "raw" },
    -- At the prompt, Ctrl-C drops the unfinished statement in the service.
    { "send", "x = 1 +\n" }, { "expect", ">> " }, { "raw" }, { "idle" },
    { "send", "\3" },
    { "expect", "(interrupted; exit or Ctrl-D detaches)" }, { "expect", "> " }, { "raw" },
    { "send", "=x\n" }, { "expect", "nil" }, { "expect", "> " }, { "raw" },
    { "send", "\4" },
  }, SERVICE)
  T.eq(st, 0, out)
end)
