-- repl_test.lua -- `orrery repl` fed by standard input: expressions print
-- their values, statements print nothing, input may span lines, each
-- input runs in a coroutine, errors are reported and the session goes on,
-- and the REPL exits at the end of input.
local T = require "orrery.test"

-- Runs the REPL on the given lines; skips the case if this build has no
-- REPL module yet.
local function repl(input)
  local st, out, err = T.run({ "repl" }, { stdin = input, timeout = 20 })
  if err:find("module 'orrery.repl' not found", 1, true) then T.skip("no orrery.repl module") end
  return st, out, err
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

T.test("expressions print their values; statements print nothing", function()
  local st, out = repl("1 + 1\nx = 20\nx * 2\n")
  T.eq(lines(out), { "2", "40" })
  T.eq(st, 0)
end)

T.test("an expression with several values prints them all", function()
  local st, out = repl("1, 2, 3\n")
  T.eq(st, 0)
  T.match(out, "^1%s+2%s+3\n$")
end)

T.test("multi-line input: an unfinished block continues on the next line", function()
  local st, out = repl(table.concat({
    "function triple(a)",
    "  return a * 3",
    "end",
    "triple(5)",
    "t = {",
    "  10,",
    "  20,",
    "}",
    "#t",
    "s = [[one",
    "two]]",
    "#s",
  }, "\n") .. "\n")
  T.eq(lines(out), { "15", "2", "7" })
  T.eq(st, 0)
end)

T.test("input runs inside a coroutine: sleep, channels and go work", function()
  local st, out = repl(table.concat({
    'orrery = require "orrery"',
    "orrery.id() > 0",
    "orrery.sleep(0.001)",
    "c = orrery.chan()",
    "id = orrery.go(function() c:send(42) end)",
    "(c:recv())",
  }, "\n") .. "\n")
  T.eq(lines(out), { "true", "true", "42" })
  T.eq(st, 0)
end)

T.test("coroutines started at the prompt keep running between inputs", function()
  local st, out = repl(table.concat({
    'orrery = require "orrery"',
    "n = 0",
    "done = orrery.chan(1)",
    "id = orrery.go(function() for i = 1, 3 do orrery.sleep(0.001); n = n + 1 end done:send(true) end)",
    "(done:recv())",
    "n",
  }, "\n") .. "\n")
  T.eq(lines(out), { "true", "3" })
  T.eq(st, 0)
end)

T.test("errors are reported and the session goes on", function()
  local st, out, err = repl('error("oops")\nlocal = 1\n2 + 3\n')
  local all = out .. err
  T.match(all, "oops")
  T.match(all, "stdin:1:", "the syntax error names the input line")
  T.match(out, "5\n$", "the next input still runs")
  T.eq(st, 0)
end)

T.test("the REPL exits 0 at the end of input, also without a final newline", function()
  local st, out = repl("6 * 7")
  T.eq(out, "42\n")
  T.eq(st, 0)
  st, out = repl("")
  T.eq(out, "")
  T.eq(st, 0)
end)

-- Regression: Ctrl-C (SIGINT) cancelled the root context and ended the
-- session after the grace period, with status 130.
T.test("SIGINT interrupts the running command and the session goes on", function()
  local st, out, err = repl(table.concat({
    'ffi = require "ffi"; ffi.cdef "int getpid(void); int kill(int, int);"',
    -- A coroutine sends the signal while the command waits. It arrives
    -- while Lua code runs (the sender's), which is stopped with the error
    -- "interrupted", as Lua code that computes would be; the waiting
    -- command wakes with "canceled".
    'orrery.go(function() ffi.C.kill(ffi.C.getpid(), 2) end); print(orrery.sleep(30))',
    'print("alive", orrery.context.background():err())',
    "",
  }, "\n"))
  T.eq(st, 0, err)
  T.eq(lines(out), { "nil\tcanceled", "alive\tnil" })
  T.match(err, "panic in coroutine %d+: interrupted")
end)

T.test("a panic in a coroutine started at the prompt is printed and the session goes on", function()
  local st, out, err = repl(table.concat({
    "x = 41",
    "orrery.go(function() local cfg; print(cfg.port) end); orrery.sleep(0)",
    "x + 1",
    "",
  }, "\n"))
  T.eq(st, 0)
  T.match(err, "panic in coroutine %d+: stdin:1: attempt to index local 'cfg'")
  T.eq(lines(out), { "42" })
end)

T.test("=expr, and errors shown with their position without the REPL's frames", function()
  local st, out = repl('=1 + 2\nerror("boom")\n')
  T.eq(st, 0)
  local l = lines(out)
  T.eq(l[1], "3")
  T.eq(l[2], "stdin:1: boom")
  T.ok(not out:find("[orrery]", 1, true), "the REPL's own frames are left out")
end)

T.test("orrery repl takes no arguments", function()
  local st, _, err = T.run({ "repl", "extra" }, { stdin = "", timeout = 20 })
  T.eq(st, 2)
  T.match(err, "unexpected argument 'extra'")
end)

T.test("complete(line) offers globals, fields and methods for the end of the line", function()
  local eval = require "orrery.eval"
  local env = setmetatable({ orrery = require "orrery", greeting = "hi", tbl = { alpha = 1, alps = 2, [3] = 0 } },
    { __index = _G })
  T.eq(eval.complete("orrery.sl", env), { "orrery.sleep" })
  T.eq(eval.complete("x = orrery.sl", env), { "orrery.sleep" }, "only the end of the line")
  T.eq(eval.complete("tbl.al", env), { "tbl.alpha", "tbl.alps" })
  T.eq(eval.complete("gree", env), { "greeting" })
  T.eq(eval.complete("greeting:up", env), { "greeting:upper" }, "a string's methods")
  T.eq(eval.complete("ret", env), { "return" }, "keywords")
  T.eq(eval.complete("tabl", env), { "table" }, "the globals env falls back to")
  local ch = env.orrery.chan()
  env.ch = ch
  local m = eval.complete("ch:tr", env)
  T.eq(m, { "ch:try_recv", "ch:try_send" }, "methods from the metatable's __index")
  T.eq(eval.complete("nothing.here", env), {})
  T.eq(eval.complete("12.5", env), {})
  T.eq(eval.complete("a:b.c", env), {})
  -- No metamethod runs: an __index function is not called.
  local called = false
  env.trap = setmetatable({}, { __index = function() called = true end })
  T.eq(eval.complete("trap.x.y", env), {})
  T.ok(not called)
end)
