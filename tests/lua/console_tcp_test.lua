-- console_tcp_test.lua -- a console on loopback TCP: every connection must
-- send the token first, a wrong one is refused and counted, too many shut
-- the TCP console; `orrery --console tcp://...` makes a token and writes
-- it to a file only its user can read; `orrery attach --token-file`.
local T = require "orrery.test"
local orrery = require "orrery"
local console = require "orrery.console"
local net = require "orrery.net"

local TOKEN = "0123456789abcdef-test-token"

-- Connects to srv, sends the token line, returns the connection and a
-- reader of the next line of a kind ("o", "p"), or nil once it closes.
local function dial(srv, token)
  local c = assert(net.connect("127.0.0.1", srv.port, { timeout = 5 }))
  assert(c:write("t " .. token .. "\n"))
  local function next_of(kind)
    while true do
      local line = c:read_until("\n", 65536, 5)
      if not line then return nil end
      if line:sub(1, 1) == kind then return line:sub(3, -2) end
    end
  end
  return c, next_of
end

T.test("a TCP console serves the right token and refuses a wrong one", function()
  local srv = assert(console.listen("tcp://127.0.0.1:0", { token = TOKEN }))
  T.match(srv.url, "^tcp://127%.0%.0%.1:%d+$")
  T.eq(console.opened[#console.opened], srv)

  local c, next_of = dial(srv, "0123456789abcdef-test-tokem")
  T.eq(next_of("o"), "permission denied: bad token")
  T.eq(next_of("o"), nil, "and the connection is closed")
  c:close()
  T.eq(srv.failures, 1)
  T.eq(srv.attached, 0)

  c, next_of = dial(srv, TOKEN .. "x") -- a longer token is no better
  T.eq(next_of("o"), "permission denied: bad token")
  c:close()

  c, next_of = dial(srv, TOKEN)
  T.match(next_of("o"), "console, pid %d+")
  T.eq(next_of("p"), "> ")
  c:write("l =6 * 7\n")
  T.eq(next_of("o"), "42")
  c:close()
  T.eq(srv.attached, 1)
  srv:close()
  for _, s in ipairs(console.opened) do T.ne(s, srv, "closed consoles leave the list") end
end)

T.test("after max_failures bad tokens the TCP console stops accepting", function()
  local srv = assert(console.listen("tcp://127.0.0.1:0", { token = TOKEN, max_failures = 2 }))
  for _ = 1, 2 do
    local c, next_of = dial(srv, "not the token at all")
    T.eq(next_of("o"), "permission denied: bad token")
    c:close()
  end
  T.ok(srv.locked)
  local c, err = net.connect("127.0.0.1", srv.port, { timeout = 5 })
  T.eq(c, nil, "even the right token cannot get in now")
  T.eq(err, "refused")
  srv:close()
end)

T.test("a TCP console is loopback only and needs a token", function()
  T.raises(function() console.listen("tcp://0.0.0.0:0", { token = TOKEN }) end, "is not loopback")
  T.raises(function() console.listen("tcp://127.0.0.1:0") end, "needs option token")
  T.raises(function() console.listen("tcp://127.0.0.1:0", { token = "short" }) end, "16 characters")
  T.raises(function() console.listen("tcp://127.0.0.1", { token = TOKEN }) end, "tcp://host:port expected")
  T.raises(function() console.listen("/tmp/x.sock", { token = TOKEN }) end, "for tcp:// consoles")
  T.raises(function() console.listen("tcp://127.0.0.1:0", { token = TOKEN, tokn = 1 }) end,
    "unknown option 'tokn'")
  local srv = assert(console.listen("tcp://[::1]:0", { token = TOKEN }))
  T.match(srv.url, "^tcp://%[::1%]:%d+$")
  srv:close()
end)

-- The service, run with --console tcp://127.0.0.1:0: it finds its console,
-- attaches to it twice in the background (a wrong token file, then the
-- right one with the given input), waits for both, prints what it saw.
local SERVICE = [[
local orrery = require "orrery"
local console = require "orrery.console"
local exe, dir, input = arg[1], arg[2], arg[3]
local srv = console.opened[1]
local tokfile = os.getenv("ORRERY_CONSOLE_TOKEN_FILE")
local p = io.popen("stat -c %a " .. tokfile); print("mode " .. p:read("*l")); p:close()
local f = io.open(dir .. "/wrong", "w"); f:write("not-the-token-0123456789\n"); f:close()
f = io.open(dir .. "/in", "w"); f:write(input); f:close()
os.execute(("(%s attach %s --token-file %s/wrong; echo $?) > %s/out1 2>&1 &"):format(exe, srv.url,
  dir, dir))
os.execute(("%s attach %s --token-file %s < %s/in > %s/out2 2>&1 &"):format(exe, srv.url, tokfile,
  dir, dir))
for _ = 1, 3000 do -- the session's end is the event; this bounds the wait
  local o = io.open(dir .. "/out1") -- the refused client has exited too
  local refused = o and o:read("*a"):find("\n%d+\n$")
  if o then o:close() end
  if refused and srv.failures == 1 and srv.attached == 1 and srv.sessions == 0 then break end
  orrery.sleep(0.01)
end
f = io.open(dir .. "/out1"); io.write("wrong: ", f:read("*a")); f:close()
f = io.open(dir .. "/out2"); io.write("right: ", f:read("*a")); f:close()
]]

T.test("orrery --console tcp:// writes a token file; orrery attach --token-file uses it", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local tokfile = dir .. "/console.token"
  local st, out, err = T.script(SERVICE, {
    args = { T.exe, dir, "=6 * 7\nexit\n" }, timeout = 60,
    env = { ORRERY_CONSOLE = "tcp://127.0.0.1:0", ORRERY_CONSOLE_TOKEN_FILE = tokfile },
  })
  T.eq(st, 0, err .. out)
  T.match(err, "^orrery: console on tcp://127%.0%.0%.1:%d+, token in " .. tokfile:gsub("%p", "%%%0") .. "\n")
  T.match(out, "^mode 600\n")
  T.match(out, "wrong: permission denied: bad token\n1\n")
  T.match(out, "right: orrery [%d.]+ console, pid %d+; help%(%) lists the commands\n42\n$")
  local f = io.open(tokfile)
  T.eq(f, nil, "the token file is removed at exit")
  if f then f:close() end
  os.execute("rm -rf " .. dir)
end)

T.test("ORRERY_CONSOLE_TOKEN gives the token, and no file is written", function()
  local st, _, err = T.run({ "--console", "tcp://127.0.0.1:0", "-e",
    'local c = require("orrery.console").opened[1]; assert(c.token == "' .. TOKEN .. '")' },
    { env = { ORRERY_CONSOLE_TOKEN = TOKEN } })
  T.eq(st, 0, err)
  T.match(err, "token from ORRERY_CONSOLE_TOKEN\n$")
  st, _, err = T.run({ "attach", "tcp://127.0.0.1:1" })
  T.eq(st, 1)
  T.match(err, "needs %-%-token%-file FILE or ORRERY_CONSOLE_TOKEN")
  st, _, err = T.run({ "attach", "/x.sock", "--token-file", "f" })
  T.eq(st, 2)
  T.match(err, "usage: orrery attach")
end)
