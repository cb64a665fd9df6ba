-- console_test.lua -- a console into a running service: `orrery attach`
-- runs commands inside it, sessions keep their own globals, detaching
-- leaves the service running, and the socket is its user's only.
local T = require "orrery.test"

-- The service: opens a console, starts `orrery attach` in the background
-- with the given input, waits for that session to come and go, then
-- prints what the operator saw and its own state.
local SERVICE = [[
local orrery = require "orrery"
local console = require "orrery.console"
local exe, dir, input = arg[1], arg[2], arg[3]
local sock = dir .. "/c.sock"
local srv = assert(console.listen(sock))
local jobs = orrery.chan(0, "jobs")
orrery.go(function() jobs:recv() end)
served = 41
local f = io.open(dir .. "/in", "w"); f:write(input); f:close()
os.execute(("%s attach %s < %s/in > %s/out 2>&1 &"):format(exe, sock, dir, dir))
for _ = 1, 2000 do -- the session's end is the event; this bounds the wait
  if srv.attached > 0 and srv.sessions == 0 then break end
  orrery.sleep(0.01)
end
local p = io.popen("stat -c %a " .. sock); print("mode " .. p:read("*l")); p:close()
f = io.open(dir .. "/out"); io.write(f:read("*a")); f:close()
print("service served " .. served .. ", sessions " .. srv.attached)
srv:close()
]]

local function run(input)
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local st, out, err = T.script(SERVICE, { args = { T.exe, dir, input }, timeout = 30 })
  os.execute("rm -rf " .. dir)
  return st, out, err
end

T.test("orrery attach runs commands inside the live service and detaches", function()
  local st, out, err = run(table.concat({
    "_G.served = served + 1", -- the service's own global
    "=served",
    "x = 5",                   -- a global of this session
    "=x * 2",
    'coroutines{ wait = "jobs" }[1].name',
    'print("printed", 1)',
    'error("boom")',
    "help",                    -- commands typed as words
    "profile 0.05",
    "waits 3600",
    "exit",
    "",
  }, "\n"))
  T.eq(st, 0, err)
  T.match(out, "^mode 600\n")
  T.match(out, "console, pid %d+; help%(%) lists the commands\n")
  T.match(out, "\n42\n10\n\"jobs\"\nprinted\t1\nconsole:1: boom\n")
  T.match(out, "\nconsole commands %(also in require")
  T.match(out, "\n%d+ samples, [%d.]+s of CPU in [%d.]+s\n +flat +flat%% +cum")
  T.match(out, "\n{}\n")
  T.match(out, "service served 42, sessions 1\n$")
end)

T.test("the console's commands are plain functions", function()
  local orrery = require "orrery"
  local console = require "orrery.console"
  local ch = orrery.chan(0, "console_test inbox")
  local id = orrery.go(function() ch:recv() end)
  T.settle({ id })
  local list = console.coroutines { wait = "console_test inbox" }
  T.eq(#list, 1)
  T.eq(list[1].id, id)
  T.match(console.dump { wait = "console_test inbox" }, "coroutine " .. id .. " %[chan receive on chan #%d+ \"console_test inbox\"")
  local found
  for _, c in ipairs(console.channels()) do
    if c.name == "console_test inbox" then found = c end
  end
  T.eq(found and found.cap, 0)
  T.ok(console.memory().lua_bytes > 0)
  T.ok(console.lag() >= 0)
  T.raises(function() console.coroutines { color = 1 } end, "unknown filter color")
  T.raises(function() console.listen(42) end, "orrery.console.listen: bad argument #1")
  ch:send(1)
end)

T.test("orrery attach to a socket nobody listens on fails clearly", function()
  local st, _, err = T.run({ "attach", "/nonexistent/orrery.sock" })
  T.eq(st, 1)
  T.match(err, "cannot connect to /nonexistent/orrery.sock")
end)

T.test("--console opens the console before the script runs; a bad path fails at start", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local sock = dir .. "/svc.sock"
  local st, out, err = T.run({ "--console", sock, "-e",
    'print(os.execute("test -S ' .. sock .. '") == 0)' })
  T.eq(st, 0, err)
  T.eq(out, "true\n")
  st, _, err = T.run({ "--console", dir .. "/no/such/dir/x.sock", "-e", "print(1)" })
  T.eq(st, 1)
  T.match(err, "cannot open the console")
  st, out = T.run({ "-e", 'print(os.execute("test -S ' .. dir .. '/env.sock") == 0)' },
    { env = { ORRERY_CONSOLE = dir .. "/env.sock" } })
  T.eq(out, "true\n")
  os.execute("rm -rf " .. dir)
end)

T.test("a grouped dump shows identical stacks once; waits groups long waits by site", function()
  local orrery = require "orrery"
  local console = require "orrery.console"
  local ch = orrery.chan(0, "console_test stuck")
  local ids = {}
  for i = 1, 25 do ids[i] = orrery.go(function() ch:recv() end) end
  T.settle(ids)
  local text = console.dump { wait = "console_test stuck", group = true }
  T.match(text, "^25 coroutines %[chan receive on chan \"console_test stuck\", up to [%d.]+s%]: "
    .. ids[1] .. ", " .. ids[2] .. ", ")
  T.match(text, "%.%.%.\ncreated at [^\n]*console_test%.lua:%d+\n")
  local _, n = text:gsub("coroutines? %[", "")
  T.eq(n, 1)
  local w = console.waits(0)
  local mine
  for _, g in ipairs(w) do if g.wait:find("console_test stuck", 1, true) then mine = g end end
  T.eq(mine.count, 25)
  T.match(mine.site, "console_test%.lua:%d+$")
  T.eq(#console.waits(3600), 0)
  -- one channel per coroutine (a leak of one per request): still one group
  local own = {}
  for i = 1, 5 do
    local c = orrery.chan(0, "console_test per request")
    own[i] = orrery.go(function() c:recv() end)
  end
  T.settle(own)
  local per = console.dump { wait = "console_test per request", group = true }
  T.match(per, "^5 coroutines %[chan receive on chan \"console_test per request\"")
  local _, groups = per:gsub("coroutines? %[", "")
  T.eq(groups, 1)
  T.raises(function() console.waits("x") end, "orrery.console.waits: bad argument #1")
  ch:close()
end)

-- A raw client of the console protocol: sends lines, reads what comes.
local function raw_session(path)
  local net = require "orrery.net"
  local c = assert(net.connect { unix = path, timeout = 5 })
  local function until_kind(kind)
    while true do
      local line = assert(c:read_until("\n", 65536, 5))
      if line:sub(1, 1) == kind then return line:sub(3, -2) end
    end
  end
  return c, until_kind
end

T.test("Tab over the console protocol: completions from the session's globals and the service's", function()
  local console = require "orrery.console"
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local srv = assert(console.listen(dir .. "/c.sock"))
  _G.console_test_inventory = 1
  local c, until_kind = raw_session(dir .. "/c.sock")
  until_kind("p")
  c:write("l mine_own = 1\n")
  until_kind("p")
  c:write("c x = console_test_inv\n")
  T.eq(until_kind("c"), "console_test_inventory")
  c:write("c mine_\n")
  T.eq(until_kind("c"), "mine_own")
  c:write("c orrery.sl\n")
  T.eq(until_kind("c"), "orrery.sleep")
  c:write("c nothing_matches_this\n")
  T.eq(until_kind("c"), "")
  -- "a" (Ctrl-C at the prompt) drops an unfinished statement.
  c:write("l y = 1 +\n")
  T.eq(until_kind("p"), ">> ")
  c:write("a\n")
  T.eq(until_kind("o"), "(interrupted; exit or Ctrl-D detaches)")
  T.eq(until_kind("p"), "> ")
  c:write("l =y\n")
  T.eq(until_kind("o"), "nil")
  c:close()
  srv:close()
  _G.console_test_inventory = nil
  os.execute("rm -rf " .. dir)
end)
