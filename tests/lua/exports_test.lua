-- SPDX-License-Identifier: MIT
-- exports_test.lua -- the binary exports exactly the FFI surface declared
-- in host/ffi_cdef.h: every function there resolves through ffi.C, and
-- internals (the scheduler, the HTTP parser, llhttp) do not.
local T = require "orrery.test"
local ffi = require "ffi"
local C = require "orrery.ffi"

-- The function names declared in the embedded cdef.
local function cdef_functions()
  local names = {}
  for name in require("orrery.core").cdef():gmatch("([%a_][%w_]*)%s*%(") do
    if name:find("^orrery_ffi_") then names[#names + 1] = name end
  end
  return names
end

local function resolves(name)
  return (pcall(function() return C[name] end))
end

T.test("every function declared in ffi_cdef.h resolves through ffi.C", function()
  local names = cdef_functions()
  T.ok(#names >= 20, "cdef names parsed: " .. #names)
  for _, name in ipairs(names) do T.ok(resolves(name), name .. " is not exported") end
end)

T.test("internal symbols are not exported", function()
  ffi.cdef [[
    void sched_wake(void *h, void *co, int32_t code);
    int hp_feed(void *hp, const char *base, size_t end);
    int llhttp_execute(void *p, const char *data, size_t len);
    void llhttp_init(void *p, int type, const void *settings);
    const char *json_strerror(int code);
    const void *embed_find(const char *name);
  ]]
  for _, name in ipairs { "sched_wake", "hp_feed", "llhttp_execute", "llhttp_init",
    "json_strerror", "embed_find" } do
    T.ok(not resolves(name), name .. " is exported")
  end
end)

T.test("the dynamic symbol table defines only orrery_ffi_* functions", function()
  local p = T.exe and io.popen("nm -D --defined-only " .. T.shquote(T.exe) .. " 2>/dev/null")
  local out = p and p:read("*a") or ""
  if p then p:close() end
  if out == "" then T.skip("nm is not available") end
  local declared = {}
  for _, name in ipairs(cdef_functions()) do declared[name] = true end
  local extra, seen = {}, 0
  for kind, name in out:gmatch("%x*%s+(%a)%s+([^%s]+)") do
    if kind == "T" or kind == "t" or kind == "W" or kind == "D" or kind == "B" then
      if name:find("^orrery_ffi_") then
        T.ok(declared[name], name .. " is exported but not declared in ffi_cdef.h")
        seen = seen + 1
      elseif not name:find("^_") and not name:find("@") and name ~= "data_start" then
        extra[#extra + 1] = name
      end
    end
  end
  T.eq(extra, {}, "exported symbols outside the FFI surface")
  T.eq(seen, #cdef_functions())
end)
