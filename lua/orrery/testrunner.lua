-- SPDX-License-Identifier: MIT
-- orrery.testrunner -- `orrery test [paths...]`: finds *_test.lua files,
-- runs every case and ends with the line "N passed, N failed".
local orrery = require "orrery"
local T = require "orrery.test"

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

return function(...)
  local paths = { ... }
  if #paths == 0 then paths = { "tests" } end
  local filter = os.getenv("ORRERY_TEST_FILTER")
  local files, missing = find_files(paths)
  local passed, failed, skipped = 0, 0, 0
  local failures = {}
  for _, p in ipairs(missing) do
    failed = failed + 1
    failures[#failures + 1] = p .. ": no such file or directory"
    print("FAIL " .. p .. ": no such file or directory")
  end
  if #files == 0 and #missing == 0 then
    io.stderr:write("orrery test: no *_test.lua files under ", table.concat(paths, " "), "\n")
  end
  for _, file in ipairs(files) do
    T.cases = {}
    local chunk, lerr = loadfile(file)
    local ok, err = chunk ~= nil, lerr
    if chunk then ok, err = xpcall(chunk, debug.traceback) end
    if not ok then
      failed = failed + 1
      failures[#failures + 1] = file .. ": cannot load: " .. tostring(err)
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
          failed = failed + 1
          local msg = case.where .. ": " .. case.name .. ": did not finish within " ..
            (case.opts.timeout or 60) .. "s (" .. tostring(rerr) .. ")"
          failures[#failures + 1] = msg
          print("FAIL " .. msg)
        elseif r.ok then
          passed = passed + 1
          print(("ok   %s (%.3fs)"):format(case.name, dt))
        elseif type(r.err) == "table" and r.err.skip then
          skipped = skipped + 1
          print(("skip %s: %s"):format(case.name, r.err.skip))
        else
          failed = failed + 1
          local msg = case.where .. ": " .. case.name .. "\n    " .. first_line(r.err)
          failures[#failures + 1] = msg
          print("FAIL " .. msg)
          if os.getenv("ORRERY_TEST_VERBOSE") then print(r.err) end
        end
      end
    end
  end
  if #failures > 0 then
    print("\nfailures:")
    for _, f in ipairs(failures) do print("  " .. f) end
  end
  print(("%d passed, %d failed%s"):format(passed, failed, skipped > 0 and (", " .. skipped .. " skipped") or ""))
  io.stdout:flush()
  orrery.exit(failed > 0 and 1 or 0)
end
