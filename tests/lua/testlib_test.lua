-- testlib_test.lua -- the orrery.test assertions and helpers, and the
-- `orrery test` runner (run as a child process on generated test files).
local T = require "orrery.test"
local orrery = require "orrery"

-- Asserts that fn fails an assertion whose message contains pattern and
-- names this file as the place of the failure.
local function fails(fn, pattern)
  local ok, err = pcall(fn)
  if ok then error("the assertion did not fail", 2) end
  if not tostring(err):find(pattern, 1, true) then
    error(("expected a failure containing %q, got %q"):format(pattern, tostring(err)), 2)
  end
  if not tostring(err):find("testlib_test.lua:%d+:") then
    error("the failure does not point at the caller: " .. tostring(err), 2)
  end
end

T.test("eq compares deeply; failures show both values", function()
  T.eq(1, 1)
  T.eq("a", "a")
  T.eq({ 1, { 2, x = "y" } }, { 1, { 2, x = "y" } })
  T.eq(0 / 0, 0 / 0)
  T.eq({ n = 0 / 0 }, { n = 0 / 0 })
  T.eq(nil, nil)
  fails(function() T.eq(1, 2) end, "expected 2, got 1")
  fails(function() T.eq({ 1 }, { 1, 2 }) end, "expected {1, 2}, got {1}")
  fails(function() T.eq({ a = 1 }, { a = 1, b = 2 }) end, "expected")
  fails(function() T.eq("x", "y", "label") end, 'label: expected "y", got "x"')
  local cyc = {}
  cyc.self = cyc
  local cyc2 = {}
  cyc2.self = cyc2
  T.eq(cyc, cyc2)
end)

T.test("ok, ne, near, match", function()
  T.eq(T.ok(5), 5)
  fails(function() T.ok(false) end, "expected a true value, got false")
  fails(function() T.ok(nil, "thing") end, "thing: expected a true value")
  T.ne(1, 2)
  fails(function() T.ne({ 1 }, { 1 }) end, "expected anything but {1}")
  T.near(0.1 + 0.2, 0.3)
  T.near(1.05, 1, 0.1)
  fails(function() T.near(1.5, 1, 0.1) end, "expected 1 +/- 0.1, got 1.5")
  fails(function() T.near("1", 1) end, "got \"1\"")
  T.match("hello world", "^hello %a+$")
  fails(function() T.match("hello", "^bye") end, "expected a string matching")
  fails(function() T.match(42, "4") end, "got 42")
end)

T.test("raises returns the message; fails without an error or on a mismatch", function()
  local msg = T.raises(function() error("kaboom", 0) end, "kaboom")
  T.eq(msg, "kaboom")
  T.raises(function() error({}) end)
  T.raises(function() error("a.b(c)") end, "a.b(c)", "the pattern is a plain substring")
  fails(function() T.raises(function() end) end, "expected an error, got none")
  fails(function() T.raises(function() error("x") end, "y") end, 'expected an error containing "y"')
end)

T.test("fail and show", function()
  fails(function() T.fail("custom") end, "custom")
  T.eq(T.show("a\nb"), [["a\nb"]], "newlines stay on one line")
  T.eq(T.show({ 1, 2, k = "v" }), '{1, 2, k = "v"}')
  T.eq(T.show({ [true] = 1 }), "{[true] = 1}")
  T.eq(T.show(nil), "nil")
end)

T.test("test() registers a case with its location", function()
  local saved = T.cases
  T.cases = {}
  T.test("inner", function() end, { timeout = 3 })
  T("called", function() end)
  local cases = T.cases
  T.cases = saved
  T.eq(#cases, 2)
  T.eq(cases[1].name, "inner")
  T.eq(cases[1].opts.timeout, 3)
  T.match(cases[1].where, "testlib_test.lua:%d+$")
  T.eq(cases[2].name, "called")
  T.raises(function() T.test(1, function() end) end, "bad argument #1")
  T.raises(function() T.test("x") end, "bad argument #2")
end)

T.test("run: status, stdout and stderr of a child; stdin and env", function()
  T.ok(T.exe and T.exe ~= "", "the orrery executable is known")
  local st, out, err = T.run({ "-e", "io.write(io.read('*a'):upper()); io.stderr:write(os.getenv('GREETING')); require('orrery').exit(3)" },
    { stdin = "quiet", env = { GREETING = "it's me" } })
  T.eq(st, 3)
  T.eq(out, "QUIET")
  T.eq(err, "it's me")
  local st2, out2 = T.script("print(...)", { args = { "a", "b c" } })
  T.eq(st2, 0)
  T.eq(out2, "a\tb c\n")
end)

T.test("run: a child that hangs is killed after opts.timeout", function()
  local t0 = orrery.now()
  local st = T.run({ "-e", "while true do end" }, { timeout = 0.2 })
  T.eq(st, 137)
  T.ok(orrery.now() - t0 >= 0.2)
end, { timeout = 30 })

-- The runner, on a directory of generated test files.
local function suite(files, env)
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. T.shquote(dir))
  for name, src in pairs(files) do
    local h = io.open(dir .. "/" .. name, "w")
    h:write('local T = require "orrery.test"\nlocal orrery = require "orrery"\n', src)
    h:close()
  end
  local st, out, err = T.run({ "test", dir }, { env = env })
  os.execute("rm -rf " .. T.shquote(dir))
  return st, out, err
end

T.test("orrery test: passing cases, closing line and status 0", function()
  local st, out = suite({
    ["a_test.lua"] = [[
      T.test("one", function() T.eq(1, 1) end)
      T.test("two", function() orrery.sleep(0.001) end)
    ]],
    ["b_test.lua"] = [[T.test("three", function() end)]],
    ["helper.lua"] = [[error("not a test file")]],
  })
  T.eq(st, 0)
  T.match(out, "ok   one")
  T.match(out, "ok   two")
  T.match(out, "ok   three")
  T.match(out, "\n3 passed, 0 failed\n$")
end)

T.test("orrery test: failures, errors, timeouts, skips and load errors", function()
  local st, out = suite({
    ["a_test.lua"] = [[
      T.test("passes", function() end)
      T.test("fails", function() T.eq(1, 2) end)
      T.test("raises", function() local t = nil; return t.x end)
      T.test("hangs", function() orrery.chan():recv() end, { timeout = 0.05 })
      T.test("skips", function() T.skip("later") end)
    ]],
    ["b_test.lua"] = "this is not lua",
  })
  T.eq(st, 1)
  T.match(out, "FAIL [^\n]*a_test.lua:4: fails\n")
  T.match(out, "a_test.lua:4: expected 2, got 1")
  T.match(out, "FAIL [^\n]*a_test.lua:5: raises")
  T.match(out, "attempt to index")
  T.match(out, "hangs: did not finish within 0.05s %(timeout%)")
  T.match(out, "skip skips: later")
  T.match(out, "b_test.lua %(load%)")
  T.match(out, "\nfailures:\n")
  T.match(out, "\n1 passed, 4 failed, 1 skipped\n$")
end)

T.test("orrery test: each case runs under its own context, cancelled at its end", function()
  local st, out = suite({
    ["a_test.lua"] = [[
      leftover = orrery.chan(1)
      T.test("starts a sleeper", function()
        orrery.go(function() leftover:send({ orrery.sleep(100) }) end)
      end)
      T.test("sees it cancelled", function()
        T.eq(leftover:recv(), { nil, "canceled" })
      end)
    ]],
  })
  T.eq(st, 0, out)
  T.match(out, "2 passed, 0 failed")
end)

T.test("orrery test: ORRERY_TEST_FILTER selects cases by name or file", function()
  local files = {
    ["a_test.lua"] = [[
      T.test("alpha", function() end)
      T.test("beta", function() error("not selected") end)
    ]],
    ["b_test.lua"] = [[T.test("gamma", function() end)]],
  }
  local st, out = suite(files, { ORRERY_TEST_FILTER = "alpha" })
  T.eq(st, 0)
  T.match(out, "\n?1 passed, 0 failed\n$")
  st, out = suite(files, { ORRERY_TEST_FILTER = "b_test" })
  T.eq(st, 0)
  T.match(out, "ok   gamma")
  T.match(out, "1 passed, 0 failed")
end)

T.test("orrery test: a path that does not exist fails", function()
  local st, out = T.run({ "test", "/nonexistent/dir" })
  T.eq(st, 1)
  T.match(out, "/nonexistent/dir: no such file or directory")
  T.match(out, "0 passed, 1 failed")
end)

-- Each file runs in its own process: a file that dies takes only its own
-- cases with it, and the cases it finished before dying still count.
T.test("orrery test: a file that crashes fails alone and the run goes on", function()
  local st, out = suite({
    ["a_test.lua"] = [[
      T.test("before the exit", function() end)
      T.test("exits", function() os.exit(3) end)
      T.test("after the exit", function() end)
    ]],
    ["b_test.lua"] = [[
      local ffi = require "ffi"
      pcall(ffi.cdef, "void abort(void);")
      T.test("aborts", function() io.write("about to abort\n"); ffi.C.abort() end)
    ]],
    ["c_test.lua"] = [[
      T.test("exits 0 early", function() orrery.exit(0); orrery.yield() end)
    ]],
    ["d_test.lua"] = [[T.test("after the crashes", function() end)]],
  })
  T.eq(st, 1, out)
  T.match(out, "ok   before the exit")
  T.match(out, "FAIL [^\n]*a_test.lua: exited with status 3 before its cases finished\n")
  T.ok(not out:find("after the exit", 1, true), "a_test.lua stopped at the exit")
  T.match(out, "FAIL [^\n]*b_test.lua: killed by signal 6 %(SIGABRT%)\n")
  T.match(out, "FAIL [^\n]*c_test.lua: exited with status 0 before its cases finished\n")
  T.match(out, "ok   after the crashes")
  -- The summary repeats each crash with the tail of the file's output.
  T.match(out, "\nfailures:\n.*b_test.lua: killed by signal 6 %(SIGABRT%)\n    last lines of its output:\n" ..
    "    | about to abort\n")
  T.match(out, "\n2 passed, 3 failed\n$")
end)

T.test("orrery test: a file past ORRERY_TEST_TIMEOUT is killed and fails", function()
  local st, out = suite({
    ["a_test.lua"] = [[
      T.test("before the spin", function() end)
      T.test("spins", function() while true do end end)
    ]],
  }, { ORRERY_TEST_TIMEOUT = "0.2" })
  T.eq(st, 1, out)
  T.match(out, "ok   before the spin")
  T.match(out, "FAIL [^\n]*a_test.lua: did not finish within 0.2s %(ORRERY_TEST_TIMEOUT%)\n")
  T.match(out, "\n1 passed, 1 failed\n$")
end)

T.test("orrery test: ORRERY_TEST_TIMEOUT must be a positive number", function()
  local st, _, err = suite({ ["a_test.lua"] = [[T.test("x", function() end)]] }, { ORRERY_TEST_TIMEOUT = "soon" })
  T.eq(st, 2)
  T.match(err, "ORRERY_TEST_TIMEOUT must be a positive number of seconds, got 'soon'")
end)
