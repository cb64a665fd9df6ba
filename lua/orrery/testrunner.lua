-- SPDX-License-Identifier: MIT
-- orrery.testrunner -- `orrery test [paths...]`: finds *_test.lua files,
-- runs each file in its own process under a timeout and ends with the line
-- "N passed, N failed" summed over the files.
--
-- As in libuv's runner, a file that crashes (a signal, an exit from the
-- middle of a case, a hang past ORRERY_TEST_TIMEOUT) fails that file and
-- the run goes on with the next one. The parent runs
-- `orrery test --child REPORT FILE` through coreutils `timeout`; the child
-- prints the usual per-case lines and appends one line per finished case
-- to REPORT, then "done". What the report holds is what counts, so the
-- cases a crashed file finished before the crash still count, and a report
-- without "done" is the crash.
local orrery = require "orrery"
local T = require "orrery.test"

local DEFAULT_TIMEOUT = 300 -- seconds per file; ORRERY_TEST_TIMEOUT overrides
local TAIL_LINES = 10 -- lines of a crashed file's output kept in the summary

local SIGNALS = {
  [1] = "SIGHUP", [2] = "SIGINT", [3] = "SIGQUIT", [4] = "SIGILL", [5] = "SIGTRAP",
  [6] = "SIGABRT", [7] = "SIGBUS", [8] = "SIGFPE", [9] = "SIGKILL", [11] = "SIGSEGV",
  [13] = "SIGPIPE", [15] = "SIGTERM",
}

-- Returns the test files under paths, and the paths that do not exist
-- (a mistyped path must not pass as "no tests").
local function find_files(paths)
  local files, missing = {}, {}
  for _, p in ipairs(paths) do
    local h = io.open(p, "r")
    if h then h:close() end
    if not h then
      missing[#missing + 1] = p
    elseif p:match("_test%.lua$") then
      files[#files + 1] = p
    else
      local h = io.popen("find " .. T.shquote(p) .. " -name '*_test.lua' -type f 2>/dev/null | sort")
      for line in h:lines() do files[#files + 1] = line end
      h:close()
    end
  end
  return files, missing
end

local function first_line(s)
  s = tostring(s)
  return s:match("^[^\n]*")
end

-- A report line holds one case; its message keeps to one line.
local function escape(s) return (s:gsub("\\", "\\\\"):gsub("\n", "\\n")) end
local function unescape(s) return (s:gsub("\\(.)", function(c) return c == "n" and "\n" or c end)) end

-- -- The child: one file's cases in this process --

local function run_child(report_path, file)
  io.stdout:setvbuf("line") -- what was printed survives a crash
  local report = assert(io.open(report_path, "w"))
  local function record(line)
    report:write(line, "\n")
    report:flush()
  end
  local filter = os.getenv("ORRERY_TEST_FILTER")
  T.cases = {}
  local chunk, lerr = loadfile(file)
  local ok, err = chunk ~= nil, lerr
  if chunk then ok, err = xpcall(chunk, debug.traceback) end
  -- Servers under test write an access line per request at info (their
  -- default): a file's output stays readable unless it asks for them
  -- (log.set_level, ORRERY_LOG_LEVEL). Only when the file loaded the log.
  local lg = package.loaded["orrery.log"]
  if lg and not os.getenv("ORRERY_LOG_LEVEL") then lg.set_level("warn") end
  if not ok then
    record("fail " .. escape(file .. ": cannot load: " .. tostring(err)))
    print("FAIL " .. file .. " (load)\n    " .. tostring(err):gsub("\n", "\n    "))
  end
  for _, case in ipairs(T.cases) do
    if not filter or case.name:find(filter, 1, true) or file:find(filter, 1, true) then
      local done = orrery.chan(1)
      local ctx, cancel = orrery.context.with_cancel(orrery.context.background())
      local t0 = orrery.now()
      orrery.with_context(ctx, function()
        orrery.go(function()
          local okc, e = xpcall(case.fn, function(m)
            if type(m) == "table" and m.skip then return m end
            return debug.traceback(tostring(m), 2)
          end)
          done:send({ ok = okc, err = e })
        end)
      end)
      local r, _, rerr = done:recv(case.opts.timeout or 60)
      cancel()
      local dt = orrery.now() - t0
      if not r then
        local msg = case.where .. ": " .. case.name .. ": did not finish within " ..
          (case.opts.timeout or 60) .. "s (" .. tostring(rerr) .. ")"
        record("fail " .. escape(msg))
        print("FAIL " .. msg)
      elseif r.ok then
        record("pass")
        print(("ok   %s (%.3fs)"):format(case.name, dt))
      elseif type(r.err) == "table" and r.err.skip then
        record("skip")
        print(("skip %s: %s"):format(case.name, r.err.skip))
      else
        local msg = case.where .. ": " .. case.name .. "\n    " .. first_line(r.err)
        record("fail " .. escape(msg))
        print("FAIL " .. msg)
        if os.getenv("ORRERY_TEST_VERBOSE") then print(r.err) end
      end
    end
  end
  record("done")
  report:close()
  io.stdout:flush()
  -- Failures are in the report; any other status is the process failing.
  orrery.exit(0)
end

-- -- The parent: one child per file --

local function slurp(path)
  local h = io.open(path, "r")
  if not h then return nil end
  local s = h:read("*a")
  h:close()
  return s
end

local function tail(s, n)
  local lines = {}
  for line in s:gmatch("[^\n]+") do
    lines[#lines + 1] = line
    if #lines > n then table.remove(lines, 1) end
  end
  return lines
end

-- Why a child's status says it did not end as a finished file does, or nil.
local function process_failure(status, finished, elapsed, limit)
  if status == nil then return "no exit status (the shell running it was interrupted)" end
  if status == 128 + 9 and elapsed >= limit then
    return ("did not finish within %gs (ORRERY_TEST_TIMEOUT)"):format(limit)
  end
  if status == 126 or status == 127 then return ("could not be started (status %d)"):format(status) end
  if status > 128 then
    local sig = status - 128
    return ("killed by signal %d (%s)"):format(sig, SIGNALS[sig] or "?")
  end
  if not finished then return ("exited with status %d before its cases finished"):format(status) end
  if status ~= 0 then return ("exited with status %d after its cases finished"):format(status) end
  return nil
end

-- Runs one file in a child; returns passed, failed, skipped and the
-- failure messages.
local function run_file(file, limit)
  local report, out = os.tmpname(), os.tmpname()
  -- SIGKILL at once: a file past its time is most likely spinning, which
  -- a SIGTERM would not interrupt (libuv only notes it for the loop), and
  -- what the child printed and reported is on disk already.
  -- --foreground keeps the child in our process group, so that a ^C
  -- reaches it; it also means a timeout kills the child only, whose own
  -- children (T.run) have timeouts of their own.
  local cmd = ("timeout --foreground -s KILL %g %s test --child %s %s </dev/null >%s 2>&1; echo $?")
    :format(limit, T.shquote(T.exe), T.shquote(report), T.shquote(file), T.shquote(out))
  local t0 = orrery.now()
  local p = io.popen(cmd)
  local status = tonumber((p:read("*a") or ""):match("(%d+)%s*$"))
  p:close()
  local elapsed = orrery.now() - t0
  local output = slurp(out) or ""
  io.write(output)
  if output ~= "" and output:sub(-1) ~= "\n" then io.write("\n") end
  local passed, failed, skipped, failures, finished = 0, 0, 0, {}, false
  for line in (slurp(report) or ""):gmatch("[^\n]+") do
    if line == "pass" then
      passed = passed + 1
    elseif line == "skip" then
      skipped = skipped + 1
    elseif line == "done" then
      finished = true
    elseif line:sub(1, 5) == "fail " then
      failed = failed + 1
      failures[#failures + 1] = unescape(line:sub(6))
    end
  end
  os.remove(report)
  os.remove(out)
  local why = process_failure(status, finished, elapsed, limit)
  if why then
    failed = failed + 1
    print("FAIL " .. file .. ": " .. why)
    local msg = { file .. ": " .. why }
    local last = tail(output, TAIL_LINES)
    if #last > 0 then
      msg[#msg + 1] = "    last lines of its output:"
      for _, l in ipairs(last) do msg[#msg + 1] = "    | " .. l end
    end
    failures[#failures + 1] = table.concat(msg, "\n")
  end
  io.stdout:flush()
  return passed, failed, skipped, failures
end

local function timeout_setting()
  local s = os.getenv("ORRERY_TEST_TIMEOUT")
  if s == nil or s == "" then return DEFAULT_TIMEOUT end
  local n = tonumber(s)
  if not n or n <= 0 then
    io.stderr:write("orrery test: ORRERY_TEST_TIMEOUT must be a positive number of seconds, got '", s, "'\n")
    orrery.exit(2)
  end
  return n
end

return function(...)
  local paths = { ... }
  if paths[1] == "--child" then
    if not paths[2] or not paths[3] then
      io.stderr:write("usage: orrery test --child REPORT FILE\n")
      orrery.exit(2)
      return
    end
    return run_child(paths[2], paths[3])
  end
  if #paths == 0 then paths = { "tests" } end
  local limit = timeout_setting()
  if not T.exe or T.exe == "" then
    io.stderr:write("orrery test: cannot find the orrery executable to run the files with\n")
    orrery.exit(2)
  end
  local files, missing = find_files(paths)
  local passed, failed, skipped = 0, 0, 0
  local failures, interrupted = {}, false
  for _, p in ipairs(missing) do
    failed = failed + 1
    failures[#failures + 1] = p .. ": no such file or directory"
    print("FAIL " .. p .. ": no such file or directory")
  end
  if #files == 0 and #missing == 0 then
    io.stderr:write("orrery test: no *_test.lua files under ", table.concat(paths, " "), "\n")
  end
  for _, file in ipairs(files) do
    local p, f, s, fl = run_file(file, limit)
    passed, failed, skipped = passed + p, failed + f, skipped + s
    for _, m in ipairs(fl) do failures[#failures + 1] = m end
    -- A ^C reaches the child too; once the loop has seen it, stop here
    -- rather than start the next file.
    orrery.sleep(0)
    if orrery.context.background():err() then
      print("\ninterrupted")
      interrupted = true
      break
    end
  end
  if #failures > 0 then
    print("\nfailures:")
    for _, f in ipairs(failures) do print("  " .. f) end
  end
  print(("%d passed, %d failed%s"):format(passed, failed, skipped > 0 and (", " .. skipped .. " skipped") or ""))
  io.stdout:flush()
  -- An interrupted run exits as a ^C does (130), whatever it counted.
  orrery.exit(interrupted and 130 or (failed > 0 and 1 or 0))
end
