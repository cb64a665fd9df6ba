-- SPDX-License-Identifier: MIT
-- listen_test.lua -- host/listen.c: accepting, and running out of
-- descriptors.
local T = require "orrery.test"

-- nginx logs "accept4() failed (24: Too many open files)"; the server used
-- to close such connections without a word. The child fills its table of
-- descriptors, then connects to itself three times with one descriptor
-- free: each accept fails, the connection is closed at once, and the
-- report comes once for the three.
T.test("accepting at the descriptor limit closes the connection and says so", function()
  local script = os.tmpname() .. ".lua"
  local f = assert(io.open(script, "w"))
  f:write([[
local orrery = require "orrery"
local net = require "orrery.net"
local core = require "orrery.net.core"
local l = assert(net.listen { host = "127.0.0.1", port = 0 })
local held = {}
orrery.go(function()
  while true do
    local c = l:accept()
    if not c then return end
    held[#held + 1] = c
  end
end)
local files = {}
while true do
  local fh = io.open("/dev/null")
  if not fh then break end
  files[#files + 1] = fh
end
local results = {}
for _ = 1, 3 do
  files[#files]:close() -- one descriptor for the client's socket
  files[#files] = nil
  local c = assert(net.connect("127.0.0.1", l.port, { timeout = 2 }))
  results[#results + 1] = select(2, c:read(10, 2))
  c:close()
  local fh = io.open("/dev/null")
  if fh then files[#files + 1] = fh end
end
for _, fh in ipairs(files) do fh:close() end
local st = core.stats()
print(table.concat(results, " "), #held, st.emfile, st.shed)
l:close()
]])
  f:close()
  local st, out, err = T.run({ "-c", "ulimit -n 64 && exec " .. T.shquote(T.exe) .. " " .. T.shquote(script) },
    { exe = "/bin/sh" })
  os.remove(script)
  T.eq(st, 0, err)
  local results, held, emfile, shed = out:match("^(%S+ %S+ %S+)%s+(%d+)%s+(%d+)%s+(%d+)")
  T.ok(results, out .. err)
  for r in results:gmatch("%S+") do T.ok(r == "eof" or r == "reset", results) end
  T.eq(tonumber(held), 0)
  T.eq(tonumber(emfile), 3)
  T.eq(tonumber(shed), 3)
  local _, lines = err:gsub("accept4%(%) failed %(24: Too many open files%), closed 1 connection", "")
  T.eq(lines, 1, err)
end)
