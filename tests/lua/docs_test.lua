-- docs_test.lua -- every example in the core runtime's documentation runs.
--
-- In each document of DOCS below, each ```lua
-- block is a complete script: it is run with the orrery binary and must
-- exit 0, or with the status its fence names (```lua exit=2). A ```text
-- block right after it is the exact standard output it must print. A
-- block fenced ```lua fragment is not run.
local T = require "orrery.test"

local DOCS = { "docs/runtime.md", "docs/errors.md", "docs/go-guide.md", "docs/json.md", "docs/http.md",
  "docs/resilience.md", "docs/net.md", "docs/console.md", "docs/metrics.md", "docs/log.md",
  "docs/http-client.md", "docs/sqlite.md", "docs/saga.md", "docs/debugging.md",
  "docs/tracing.md", "docs/idempotency.md", "docs/pg.md", "docs/tls.md", "docs/admin.md" }

-- The repository root, from this file's own path (tests/lua/docs_test.lua).
local root = (debug.getinfo(1, "S").source:match("^@(.*)tests/lua/docs_test%.lua$") or "")

-- Splits a document into its ```lua blocks; a ```text block that follows
-- one (at most one blank line between) becomes its expected output.
local function blocks(text)
  local out = {}
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local i = 1
  while i <= #lines do
    local info = lines[i]:match("^```(.+)$")
    if info then
      local start = i
      local body = {}
      i = i + 1
      while i <= #lines and not lines[i]:match("^```%s*$") do
        body[#body + 1] = lines[i]
        i = i + 1
      end
      local block = { info = info, lang = info:match("^(%S+)"), line = start,
        src = table.concat(body, "\n") .. "\n", close = i }
      if block.lang == "text" and out[#out] and out[#out].lang == "lua"
          and start - out[#out].close <= 2 then
        out[#out].expect = #body > 0 and block.src or ""
      elseif block.lang == "lua" then
        out[#out + 1] = block
      end
    end
    i = i + 1
  end
  return out
end

for _, doc in ipairs(DOCS) do
  local path = root .. doc
  local f = io.open(path)
  if f then
    local text = f:read("*a")
    f:close()
    for _, b in ipairs(blocks(text)) do
      if not b.info:find("fragment", 1, true) then
        local want = tonumber(b.info:match("exit=(%d+)")) or 0
        T.test(("%s:%d runs"):format(doc, b.line), function()
          local st, out, err = T.script(b.src, { timeout = 30 })
          T.eq(st, want, "exit status (stderr: " .. err:sub(1, 300) .. ")")
          if b.expect then T.eq(out, b.expect, "standard output") end
        end, { timeout = 60 })
      end
    end
  else
    T.test(doc .. " exists", function() T.fail("cannot open " .. path) end)
  end
end
