-- SPDX-License-Identifier: MIT
-- examples_test.lua -- every script in examples/ runs. Services that never
-- end on their own are marked with a line "-- example: service" and are
-- exercised by their own tests (named in that line); the rest must exit 0.
local T = require "orrery.test"

local root = (debug.getinfo(1, "S").source:match("^@(.*)tests/lua/examples_test%.lua$") or "")
local p = io.popen("ls " .. T.shquote(root .. "examples") .. "/*.lua 2>/dev/null")
local files = {}
for f in p:lines() do files[#files + 1] = f end
p:close()

T.test("examples/ has examples", function() T.ok(#files > 0) end)

for _, f in ipairs(files) do
  local h = io.open(f)
  local src = h:read("*a")
  h:close()
  local tested_by = src:match("%-%- example: service, tested by ([%w_%.]+)")
  if tested_by then
    T.test(f:match("examples/.*") .. " is covered by " .. tested_by, function()
      local t = io.open(root .. "tests/lua/" .. tested_by)
      T.ok(t, "missing test file " .. tested_by)
      local body = t:read("*a")
      t:close()
      T.ok(body:find(f:match("examples/.*"), 1, true), tested_by .. " runs the example")
    end)
  else
    T.test(f:match("examples/.*") .. " runs and exits 0", function()
      local st, out, err = T.run({ f })
      T.eq(st, 0, "exit status (stderr: " .. err:sub(1, 300) .. ")")
      T.ok(#out > 0, "prints something")
    end)
  end
end
