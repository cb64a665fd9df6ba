-- SPDX-License-Identifier: MIT
-- options_test.lua -- http.listen, http.serve, net.listen and net.connect
-- check their options like the breaker does: an unknown option or a bad
-- port raises, naming the function, the option and the caller's line.
local T = require "orrery.test"
local http = require "orrery.http"
local net = require "orrery.net"

local function handler() return 200, "ok" end

-- The error of fn(), which must name this file's line.
local function raised(fn)
  local ok, err = pcall(fn)
  T.ok(not ok, "expected an error")
  T.match(err, "^[^:]*options_test%.lua:%d+:", "error points at the caller")
  return err
end

-- fn() raises an error containing text (plain), at the caller's line.
local function expect(fn, text)
  local err = raised(fn)
  T.ok(err:find(text, 1, true), ("expected %q in %q"):format(text, err))
end

T.test("http.listen { prot = 9000 } raises instead of listening on 8080", function()
  expect(function() http.listen(handler, { prot = 9000 }) end,
    "orrery.http.listen: unknown option 'prot'")
  expect(function() http.listen(handler, { timeout = 3 }) end, "unknown option 'timeout'")
  expect(function() http.serve(handler, { prot = 1 }) end,
    "orrery.http.serve: unknown option 'prot'")
end)

T.test("http.listen rejects ports that are not integers from 0 to 65535", function()
  for _, p in ipairs { 70000, -1, 1.5, "abc", 0 / 0 } do
    local err = raised(function() http.listen(handler, { host = "127.0.0.1", port = p }) end)
    T.ok(err:find("orrery.http.listen: bad option 'port' (integer from 0 to 65535 expected, got ", 1, true), err)
  end
end)

T.test("http.listen checks the type of every option", function()
  local bad = {
    { { host = 1 }, "bad option 'host' (string expected, got number)" },
    { { max_headers = 0 }, "bad option 'max_headers' (positive integer expected, got 0)" },
    { { max_body_size = "1" }, "bad option 'max_body_size'" },
    { { idle_timeout = -1 }, "bad option 'idle_timeout' (seconds or false expected, got -1)" },
    { { access_log = "yes" }, "bad option 'access_log'" },
    { { on_bad_request = true }, "bad option 'on_bad_request' (function expected, got boolean)" },
    { { ctx = {} }, "bad option 'ctx' (context expected, got table)" },
    { { backlog = 0 }, "bad option 'backlog'" },
    { { log = 1 }, "option log must be a function" },
  }
  for _, case in ipairs(bad) do
    case[1].port = 0
    expect(function() http.listen(handler, case[1]) end, case[2])
  end
  expect(function() http.listen(handler, 5) end, "bad argument #2 (options table expected, got number)")
end)

T.test("http.listen still takes every documented option", function()
  local srv = assert(http.listen(handler, { host = "127.0.0.1", port = 0, backlog = 16,
    max_header_bytes = 4096, max_uri_length = 1024, max_headers = 10, max_body_size = 100,
    max_connections = 10, read_header_timeout = 1, read_body_timeout = false, write_timeout = 1,
    idle_timeout = 1, handler_timeout = 1, shutdown_timeout = 1, linger = 0, access_log = false,
    log = function() end, on_bad_request = function() end, ctx = require("orrery.context").background(),
    background = true }))
  T.ok(select(2, srv:addr()) > 0)
  srv:close()
end)

T.test("net.listen rejects unknown options and bad ports and hosts", function()
  expect(function() net.listen { prot = 9000 } end, "orrery.net.listen: unknown option 'prot'")
  expect(function() net.listen { port = 70000 } end, "bad option 'port' (integer from 0 to 65535 expected, got 70000)")
  expect(function() net.listen { port = "abc" } end, "bad option 'port' (integer from 0 to 65535 expected, got string)")
  expect(function() net.listen { host = 1 } end, "bad option 'host' (string expected, got number)")
  expect(function() net.listen "x" end, "bad argument #1 (options table expected, got string)")
end)

T.test("net.connect rejects unknown options and bad ports", function()
  expect(function() net.connect("127.0.0.1", 70000) end,
    "orrery.net.connect: bad argument #2 (integer from 0 to 65535 expected, got 70000)")
  expect(function() net.connect("127.0.0.1", "80") end, "bad argument #2")
  expect(function() net.connect("127.0.0.1", 1, { tmeout = 1 }) end, "unknown option 'tmeout'")
  expect(function() net.connect("127.0.0.1", 1, 5) end, "bad argument #3 (options table expected")
  expect(function() net.connect { host = "127.0.0.1", port = 1.5 } end, "bad option 'port'")
  expect(function() net.connect { host = "127.0.0.1", port = 9, timeout = "1" } end,
    "bad option 'timeout' (seconds expected, got string)")
  expect(function() net.connect { host = 5, port = 9 } end, "bad option 'host' (string expected, got number)")
end)
