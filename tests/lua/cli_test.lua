-- cli_test.lua -- the orrery command line, run as a child process: scripts
-- and their arguments, exit statuses, errors with tracebacks, panics in
-- coroutines, -e, -v, --help, orrery.exit and the deadlock report.
local T = require "orrery.test"
local orrery = require "orrery"

-- Runs src as a script file; returns status, stdout, stderr and the
-- script's path as it appears in messages.
local function script(src, args)
  return T.script(src, { args = args })
end

T.test("a script runs as the main coroutine and exits 0 at its end", function()
  local st, out, err = script([[
    local orrery = require "orrery"
    orrery.sleep(0.001)
    print("done", orrery.id() > 0)
  ]])
  T.eq(err, "")
  T.eq(out, "done\ttrue\n")
  T.eq(st, 0)
end)

T.test("arguments: arg[0] is the script, arg[1..] and ... are its arguments", function()
  local st, out = script([[
    print(arg[0]:match("[^/]*$"), arg[1], arg[2], #arg, select("#", ...), ...)
  ]], { "one", "two words" })
  T.eq(st, 0)
  T.match(out, "^[^\t]+%.lua\tone\ttwo words\t2\t2\tone\ttwo words\n$")
end)

T.test("orrery run script.lua args is the same as orrery script.lua args", function()
  local f = os.tmpname() .. ".lua"
  local h = io.open(f, "w")
  h:write('print(arg[0] ~= nil, ...)\n')
  h:close()
  local st, out = T.run({ "run", f, "x", "y" })
  os.remove(f)
  T.eq(st, 0)
  T.eq(out, "true\tx\ty\n")
end)

T.test("an error in the main script exits 1 with the message and a traceback", function()
  local st, out, err = script([[
    print("before")
    local function inner() error("boom") end
    local function outer() inner() end
    outer()
    print("after")
  ]])
  T.eq(st, 1)
  T.eq(out, "before\n")
  T.match(err, "%.lua:2: boom", "message with file:line")
  T.match(err, "stack traceback:")
  T.match(err, "%.lua:2: in function 'inner'")
  T.match(err, "%.lua:3: in function 'outer'")
  T.match(err, "%.lua:4: in main chunk")
end)

T.test("a non-string error in the main script is reported too", function()
  local st, _, err = script([[error(setmetatable({}, { __tostring = function() return "custom error" end }))]])
  T.eq(st, 1)
  T.match(err, "custom error")
  st, _, err = script([[error({ code = 42 })]])
  T.eq(st, 1)
  T.match(err, "table")
end)

T.test("a syntax error in the script exits 1 naming file and line", function()
  local st, out, err = script("print('ok')\nlocal x = = 1\n")
  T.eq(st, 1)
  T.eq(out, "")
  T.match(err, "%.lua:2:")
end)

T.test("a missing script exits 1", function()
  local st, _, err = T.run({ "/nonexistent/script.lua" })
  T.eq(st, 1)
  T.match(err, "cannot open")
end)

T.test("an error escaping another coroutine is a panic: its traceback, status 2", function()
  local st, out, err = script([[
    local orrery = require "orrery"
    local function fail(t) return t.missing.field end
    orrery.go(function()
      orrery.sleep(0.001)
      fail({})
    end)
    orrery.sleep(10)
    print("main went on")
  ]])
  T.eq(st, 2)
  T.eq(out, "", "the process ended at the panic")
  T.match(err, "panic in coroutine %d+")
  T.match(err, "%.lua:2: attempt to index field 'missing'", "the message has file:line")
  T.match(err, "stack traceback:")
  T.match(err, "%.lua:5: in function <[^>]*%.lua:3>", "the coroutine's own frames")
end)

T.test("an error raised with error() in a coroutine shows the coroutine's traceback", function()
  local st, _, err = script([[
    local orrery = require "orrery"
    local function check(v) if not v then error("check failed") end end
    orrery.go(function() check(false) end)
    orrery.sleep(10)
  ]])
  T.eq(st, 2)
  T.match(err, "panic in coroutine %d+: [^\n]*%.lua:2: check failed")
  T.match(err, "%.lua:2: in function 'check'")
  T.match(err, "%.lua:3: in function")
end)

T.test("an error in a timer callback coroutine is a panic too", function()
  local st, _, err = script([[
    local orrery = require "orrery"
    orrery.timer(0.001, function() error("timer boom") end)
    orrery.sleep(10)
  ]])
  T.eq(st, 2)
  T.match(err, "timer boom")
end)

T.test("orrery.group collects a coroutine's error instead of a panic", function()
  local st, out, err = script([[
    local orrery = require "orrery"
    local g = orrery.group()
    g:go(function() error("collected") end)
    local e = g:wait()
    print("wait returned", e:match("collected") ~= nil)
  ]])
  T.eq(err, "")
  T.eq(out, "wait returned\ttrue\n")
  T.eq(st, 0)
end)

T.test("-e runs code as the main coroutine", function()
  local st, out, err = T.run({ "-e", 'local o = require "orrery"; o.sleep(0); print(arg[0], arg[1], ...)', "a1", "a2" })
  T.eq(err, "")
  T.eq(out, "-e\ta1\ta1\ta2\n")
  T.eq(st, 0)
  st, _, err = T.run({ "-e", 'error("from -e")' })
  T.eq(st, 1)
  T.match(err, "command line%)?:1: from %-e")
  st, _, err = T.run({ "-e" })
  T.eq(st, 2)
  T.match(err, "%-e")
end)

T.test("-v prints the version and exits 0", function()
  local st, out = T.run({ "-v" })
  T.eq(st, 0)
  T.match(out, "^orrery " .. orrery.version:gsub("%.", "%%.") .. " ")
  T.match(out, "LuaJIT")
  local st2, out2 = T.run({ "--version" })
  T.eq(st2, 0)
  T.eq(out2, out)
end)

T.test("--help and -h print the usage on stdout and exit 0", function()
  for _, flag in ipairs({ "--help", "-h" }) do
    local st, out, err = T.run({ flag })
    T.eq(st, 0, flag)
    T.eq(err, "")
    T.match(out, "^usage: orrery")
    T.match(out, "%-e")
    T.match(out, "repl")
    T.match(out, "test")
  end
end)

T.test("no arguments or an unknown option: usage on stderr, status 2", function()
  local st, out, err = T.run({})
  T.eq(st, 2)
  T.eq(out, "")
  T.match(err, "usage: orrery")
  st, out, err = T.run({ "--frobnicate" })
  T.eq(st, 2)
  T.eq(out, "")
  T.match(err, "unknown option")
end)

T.test("orrery.exit(n) ends the process with status n, output flushed", function()
  local st, out = script([[
    local orrery = require "orrery"
    io.write("partial line")
    orrery.exit(7)
    print("not reached")
  ]])
  T.eq(st, 7)
  T.eq(out, "partial line")
  st, out = script([[
    local orrery = require "orrery"
    orrery.go(function() print("from a coroutine"); orrery.exit(3) end)
    orrery.sleep(10)
    print("not reached")
  ]])
  T.eq(st, 3)
  T.eq(out, "from a coroutine\n")
  T.eq((script([[require("orrery").exit()]])), 0)
  local st2, _, err = script([[require("orrery").exit("x")]])
  T.eq(st2, 1)
  T.match(err, "orrery.exit: bad argument #1")
end)

T.test("the process exits when main returns, even with coroutines still waiting", function()
  local st, out, err = script([[
    local orrery = require "orrery"
    orrery.go(function() orrery.chan():recv() end)
    orrery.go(function() orrery.sleep(100) end)
    orrery.yield()
    print("main done")
  ]])
  T.eq(err, "")
  T.eq(out, "main done\n")
  T.eq(st, 0)
end)

T.test("deadlock: the report, a dump of every coroutine, non-zero status", function()
  local st, out, err = script([[
    local orrery = require "orrery"
    local jobs = orrery.chan(0, "jobs")
    local function worker() jobs:send("job") end
    orrery.go(function()
      local results = orrery.chan()
      results:recv()
    end)
    orrery.go(worker)
    local quit = orrery.chan()
    print("waiting")
    orrery.select { quit:recv_case(), false }
  ]])
  T.eq(out, "waiting\n")
  T.ok(st ~= 0, "non-zero status")
  T.eq(st, 2)
  T.match(err, "^all coroutines are asleep %- deadlock!\n")
  -- One block per coroutine: id, state / what it waits on, where it was
  -- created, and its traceback.
  T.match(err, "coroutine 1 %(main%) %[select %[recv #%d+%]")
  T.match(err, "coroutine 2 %[chan receive on chan #%d+")
  T.match(err, 'coroutine 3 %[chan send on chan #%d+ "jobs", ', "the channel's name")
  T.match(err, "created at [^\n]*%.lua:4\n", "where coroutine 2 was created")
  T.match(err, "created at [^\n]*%.lua:8\n", "where coroutine 3 was created")
  T.match(err, "%.lua:11", "main's traceback")
  T.match(err, "%.lua:6", "coroutine 2's traceback")
  T.match(err, "%.lua:3: in function", "coroutine 3's traceback")
end)

T.test("deadlock: the report names waitgroup, mutex and semaphore waits", function()
  local st, _, err = script([[
    local orrery = require "orrery"
    local mu, sem, wg = orrery.mutex(), orrery.semaphore(1), orrery.waitgroup()
    mu:lock()
    sem:acquire()
    wg:add(1)
    orrery.go(function() mu:lock() end)
    orrery.go(function() sem:acquire() end)
    wg:wait()
  ]])
  T.eq(st, 2)
  T.match(err, "^all coroutines are asleep %- deadlock!\n")
  T.match(err, "coroutine 1 %(main%) %[waitgroup wait %(chan #%d+%), ")
  T.match(err, "coroutine 2 %[mutex lock %(chan #%d+%), ")
  T.match(err, "coroutine 3 %[semaphore acquire %(chan #%d+%), ")
  T.match(err, "%.lua:8: in main chunk", "main's traceback")
  T.ok(not err:find("[C]: in function 'wait'", 1, true), "no runtime frames")
end)

T.test("deadlock: a main blocked on an empty select or a lone receive", function()
  local st, _, err = script([[require("orrery").select {}]])
  T.eq(st, 2)
  T.match(err, "all coroutines are asleep %- deadlock!")
  st, _, err = script([[local ch = require("orrery").chan(); ch:recv()]])
  T.eq(st, 2)
  T.match(err, "all coroutines are asleep %- deadlock!")
  T.match(err, "chan receive")
end)

T.test("no deadlock while a timer is pending", function()
  local st, out = script([[
    local orrery = require "orrery"
    local ch = orrery.chan()
    orrery.timer(0.01, function() ch:send("late") end)
    print(ch:recv())
  ]])
  T.eq(st, 0)
  T.eq(out, "late\ttrue\n")
end)

-- A fresh directory holding files = { [name] = source }; returns its path
-- and a function that removes it.
local function tree(files)
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. T.shquote(dir))
  for name, src in pairs(files) do
    local sub = name:match("^(.*)/[^/]*$")
    if sub then os.execute("mkdir -p " .. T.shquote(dir .. "/" .. sub)) end
    local h = io.open(dir .. "/" .. name, "w")
    h:write(src)
    h:close()
  end
  return dir, function() os.execute("rm -rf " .. T.shquote(dir)) end
end

-- Runs orrery with args from the working directory cwd.
local function run_in(cwd, args, env)
  local cmd = { "cd", T.shquote(cwd), "&&", "exec", T.shquote(T.exe) }
  for _, a in ipairs(args) do cmd[#cmd + 1] = T.shquote(a) end
  return T.run({ "-c", table.concat(cmd, " ") }, { exe = "/bin/sh", env = env })
end

T.test("a script requires the modules next to it whatever the working directory", function()
  local dir, rm = tree({
    ["main.lua"] = 'print(require("httpc").name, require("lib").name)\n',
    ["httpc.lua"] = 'return { name = "httpc" }\n',
    ["lib/init.lua"] = 'return { name = "lib" }\n',
  })
  local st, out, err = run_in("/", { dir .. "/main.lua" })
  T.eq(err, "")
  T.eq(out, "httpc\tlib\n")
  T.eq(st, 0)
  -- A relative path to the script works the same.
  st, out, err = run_in(dir .. "/lib", { "../main.lua" })
  T.eq(err, "")
  T.eq(out, "httpc\tlib\n")
  T.eq(st, 0)
  rm()
end)

T.test("the script's directory comes before LUA_PATH, the embedded orrery.* before both", function()
  local dir, rm = tree({
    ["main.lua"] = [[
      print(require("which"), require("orrery").version ~= nil, require("orrery.json").encode({ 1 }))
      print((package.path:match("^[^;]*")))
    ]],
    ["which.lua"] = 'return "script dir"\n',
    ["orrery.lua"] = 'error("a file must not shadow the embedded orrery")\n',
    ["orrery/json.lua"] = 'error("nor orrery.json")\n',
  })
  local other, rm2 = tree({ ["which.lua"] = 'return "LUA_PATH"\n', ["only.lua"] = 'return 1\n' })
  local st, out, err = run_in("/", { dir .. "/main.lua" }, { LUA_PATH = other .. "/?.lua;;" })
  T.eq(err, "")
  T.eq(out, "script dir\ttrue\t[1]\n" .. dir .. "/?.lua\n")
  T.eq(st, 0)
  rm()
  rm2()
end)

T.test("LUA_PATH and LUA_CPATH are honoured, ';;' standing for the default path", function()
  local dir, rm = tree({ ["mod.lua"] = 'return "from LUA_PATH"\n' })
  local st, out, err = T.run({ "-e", [[
    print(require("mod"))
    print(package.path:find("./?.lua", 1, true) ~= nil, package.cpath:find("/cx/?.so", 1, true) == 1)
  ]] }, { env = { LUA_PATH = dir .. "/?.lua;;", LUA_CPATH = "/cx/?.so;;" } })
  T.eq(err, "")
  T.eq(out, "from LUA_PATH\ntrue\ttrue\n")
  T.eq(st, 0)
  -- Without ";;" the default is replaced: "./?.lua" is gone.
  st, out = T.run({ "-e", 'print(package.path)' }, { env = { LUA_PATH = dir .. "/?.lua" } })
  T.eq(st, 0)
  T.eq(out, dir .. "/?.lua\n")
  rm()
end)

T.test("-e and the REPL both have the global orrery", function()
  local st, out, err = T.run({ "-e", 'orrery.sleep(0.001); print(orrery.version == require("orrery").version)' })
  T.eq(err, "")
  T.eq(out, "true\n")
  T.eq(st, 0)
  st, out, err = T.run({ "repl" }, { stdin = 'orrery.sleep(0.001)\nprint(orrery == require("orrery"))\n' })
  T.eq(err, "")
  T.match(out, "true\n")
  T.eq(st, 0)
  -- A script requires it, as any module.
  st, out = script('print(orrery)')
  T.eq(out, "nil\n")
end)
