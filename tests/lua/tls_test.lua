-- SPDX-License-Identifier: MIT
-- tls_test.lua -- TLS on both sides: orrery's server and client over
-- loopback, verification failures with their reasons, the insecure
-- opt-out, a plain-HTTP client on a TLS port, the SIGHUP certificate
-- reload, and openssl s_client against the server. The certificates are
-- made here with the openssl command (docs/tls.md has the same recipe).
local T = require "orrery.test"
local orrery = require "orrery"
local net = require "orrery.net"
local http = require "orrery.http"
local sched = require "orrery.sched"
local context = require "orrery.context"
local ffi = require "ffi"

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local have_openssl = sh("command -v openssl >/dev/null 2>&1")
local have_bash = sh("command -v bash >/dev/null 2>&1")

local D -- the directory of the certificates
local function q(s) return T.shquote(s) end

-- A test CA; leaves signed by it for 127.0.0.1/localhost (two, to tell a
-- reload apart), an expired one and one for another host; a self-signed
-- one. EC P-256 keys: quick to make.
local function make_certs()
  local p = io.popen("mktemp -d")
  D = p:read("*l") .. "/"
  p:close()
  local EC = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  local function run(cmd) assert(sh("cd " .. q(D) .. " && " .. cmd .. " >/dev/null 2>&1"), cmd) end
  run("openssl req -x509 " .. EC .. " -keyout ca.key -out ca.crt -days 30 -subj '/CN=Orrery Test CA'")
  local function leaf(name, cn, san, days)
    run(("openssl req %s -keyout %s.key -out %s.csr -subj '/CN=%s'"):format(EC, name, name, cn))
    local f = io.open(D .. name .. ".ext", "w")
    f:write("subjectAltName=", san, "\nbasicConstraints=CA:FALSE\n")
    f:close()
    run(("openssl x509 -req -in %s.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out %s.crt -days %d -extfile %s.ext")
      :format(name, name, days, name))
  end
  leaf("good", "localhost", "DNS:localhost,IP:127.0.0.1", 30)
  leaf("good2", "localhost-2", "DNS:localhost,IP:127.0.0.1", 30)
  leaf("wrong", "other.example", "DNS:other.example", 30)
  -- -days -1: valid until a day before it was made.
  leaf("expired", "localhost", "DNS:localhost,IP:127.0.0.1", -1)
  run("openssl req -x509 " .. EC .. " -keyout self.key -out self.crt -days 30 -subj '/CN=localhost'"
    .. " -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1'")
end

local function need_certs()
  if not have_openssl then T.skip("the openssl command is missing (scripts/deps.sh openssl)") end
  if not D then make_certs() end
end

local function cp(from, to)
  assert(sh(("cp %s %s"):format(q(D .. from), q(D .. to))))
end

-- A TLS echo server with the leaf `name`: each connection answers every
-- line with the line, and its certificate subject as the server sees it.
local function echo_server(name, extra)
  local tls = { cert = D .. name .. ".crt", key = D .. name .. ".key" }
  for k, v in pairs(extra or {}) do tls[k] = v end
  local lis = assert(net.listen { port = 0, tls = tls })
  local srv = { lis = lis, port = lis.port, errors = orrery.chan(100) }
  orrery.go(function()
    while true do
      local c = lis:accept()
      if not c then return end
      orrery.go(function()
        while true do
          local l, err = c:read_until("\n", 1000000, 5)
          if not l then
            if err ~= "eof" then srv.errors:try_send(err) end
            break
          end
          c:write(l)
        end
        c:close()
      end)
    end
  end)
  return srv
end

local function dial(port, tls, host)
  return net.connect { host = host or "127.0.0.1", port = port, timeout = 5, tls = tls }
end

T.test("a TLS client and server talk TLS 1.3, verified against a CA file", function()
  need_certs()
  local srv = echo_server("good")
  local c = assert(dial(srv.port, { ca_file = D .. "ca.crt" }))
  local info = assert(c:tls_info())
  T.eq(info.protocol, "TLSv1.3")
  T.ok(info.verified)
  T.eq(info.peer_subject, "CN=localhost")
  T.eq(info.peer_issuer, "CN=Orrery Test CA")
  T.match(info.peer_serial, "^%x+$")
  assert(c:write("hello\n"))
  T.eq(c:read_until("\n"), "hello\n")
  -- A large write comes back whole (records split and joined).
  local big = ("x"):rep(300000) .. "\n"
  assert(c:write(big))
  local back, err = c:read_until("\n", 400000)
  T.eq(back and #back, #big, err)
  T.ok(back == big)
  c:close()
  -- localhost resolves, and the name is what is checked (and sent as SNI).
  local c2 = assert(dial(srv.port, { ca_file = D .. "ca.crt" }, "localhost"))
  T.eq(c2:tls_info().peer_subject, "CN=localhost")
  c2:close()
  srv.lis:close()
end)

T.test("a client resumes its session with the same peer, not with another name", function()
  need_certs()
  local srv = echo_server("good")
  local tls = { ca_file = D .. "ca.crt" }
  local function once(host)
    local c = assert(dial(srv.port, tls, host))
    -- A round trip: TLS 1.3 tickets come after the handshake.
    c:write("x\n")
    c:read_until("\n")
    local info = c:tls_info()
    c:close()
    return info
  end
  T.eq(once("127.0.0.1").resumed, false)
  local again = once("127.0.0.1")
  T.eq(again.resumed, true)
  T.ok(again.verified)
  T.eq(again.peer_subject, "CN=localhost")
  T.eq(once("localhost").resumed, false)
  T.eq(once("localhost").resumed, true)
  srv.lis:close()
end)

T.test("server_name overrides the name checked; a TLS server sees the SNI", function()
  need_certs()
  local lis = assert(net.listen { port = 0, tls = { cert = D .. "wrong.crt", key = D .. "wrong.key" } })
  local got = orrery.chan(1)
  orrery.go(function()
    local c = assert(lis:accept())
    c:read_until("\n", 100, 5)
    got:send(c:tls_info())
    c:close()
  end)
  local c = assert(dial(lis.port, { ca_file = D .. "ca.crt", server_name = "other.example" }))
  c:write("x\n")
  local info = got:recv()
  T.eq(info.server_name, "other.example")
  T.eq(info.protocol, "TLSv1.3")
  c:close()
  lis:close()
end)

T.test("certificates that fail verification: nil, tls: <reason>", function()
  need_certs()
  local cases = {
    { "expired", { ca_file = D .. "ca.crt" }, "tls: certificate has expired" },
    { "wrong", { ca_file = D .. "ca.crt" }, "tls: hostname mismatch" },
    { "self", { ca_file = D .. "ca.crt" }, "tls: self[- ]signed certificate" },
    -- The system store does not know the test CA.
    { "good", true, "tls: unable to get local issuer certificate" },
    { "good", {}, "tls: unable to get local issuer certificate" },
  }
  for _, case in ipairs(cases) do
    local srv = echo_server(case[1])
    local c, err = dial(srv.port, case[2], "localhost")
    T.eq(c, nil, case[1])
    T.match(err, "^" .. case[3] .. "$", case[1])
    -- The server sees the client's alert.
    T.match(srv.errors:recv(5), "^tls: ", case[1])
    srv.lis:close()
  end
end)

T.test("an IP address is checked against the certificate's IP entries", function()
  need_certs()
  local srv = echo_server("wrong")
  local c, err = dial(srv.port, { ca_file = D .. "ca.crt" }, "127.0.0.1")
  T.eq(c, nil)
  T.eq(err, "tls: IP address mismatch")
  srv.lis:close()
end)

T.test("insecure = true connects to a self-signed server and warns once", function()
  need_certs()
  local st, out, err = T.script(([[
    local net = require "orrery.net"
    local orrery = require "orrery"
    local lis = assert(net.listen { port = 0, tls = { cert = %q, key = %q } })
    orrery.go(function()
      while true do
        local c = lis:accept()
        if not c then return end
        orrery.go(function() c:read_until("\n", 100, 5); c:write("ok\n"); c:close(1) end)
      end
    end)
    for _ = 1, 2 do
      local c = assert(net.connect { host = "127.0.0.1", port = lis.port, timeout = 5, tls = { insecure = true } })
      c:write("hi\n")
      io.write(c:read_until("\n"), tostring(c:tls_info().verified), "\n")
      c:close()
    end
    lis:close()
  ]]):format(D .. "self.crt", D .. "self.key"))
  T.eq(st, 0, err)
  T.eq(out, "ok\nfalse\nok\nfalse\n")
  local _, n = err:gsub("verification is off", "")
  T.eq(n, 1, err)
end)

T.test("tls options are checked; bad certificate paths raise naming the option", function()
  need_certs()
  T.raises(function() net.listen { port = 0, tls = { cert = "/nonexistent.crt", key = D .. "good.key" } } end,
    "orrery.net.listen: option tls.cert: cannot load certificate /nonexistent.crt: No such file or directory")
  T.raises(function() http.listen(function() return 200 end,
    { port = 0, tls = { cert = D .. "good.crt", key = "/nope.key" } }) end,
    "orrery.http.listen: option tls.key: cannot load key /nope.key: No such file or directory")
  T.raises(function() http.listen(function() return 200 end,
    { port = 0, tls = { cert = D .. "good.crt", key = D .. "good2.key" } }) end,
    "good2.key: key values mismatch")
  T.raises(function() http.listen(function() return 200 end, { port = 0, tls = { cert = D .. "good.crt" } }) end,
    "orrery.http.listen: option 'tls.key' is required")
  T.raises(function() net.listen { port = 0, tls = { cert = D .. "good.crt", key = D .. "good.key", insecure = true } } end,
    "unknown option 'tls.insecure'")
  T.raises(function() net.connect { host = "127.0.0.1", port = 1, tls = { verfy = true } } end,
    "orrery.net.connect: unknown option 'tls.verfy'")
  T.raises(function() net.connect { host = "127.0.0.1", port = 1, tls = { ca_file = "/no/ca.pem" } } end,
    "option tls.ca_file: cannot load CA file /no/ca.pem")
  local ok, err = pcall(function()
    http.listen(function() return 200 end, { port = 0, tls = { cert = "/x", key = "/y" } })
  end)
  T.eq(ok, false)
  T.match(err, "^[^:]*tls_test%.lua:%d+: orrery.http.listen: option tls.cert")
end)

-- A raw HTTP request over a TLS connection; the response is read whole
-- (the server closes after it: Connection: close).
local function https_get(port, path, tls)
  local c, err = dial(port, tls)
  if not c then return nil, err end
  assert(c:write("GET " .. path .. " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
  local res = c:read_all(5)
  local info = c:tls_info()
  c:close()
  return res, info
end

T.test("http.listen with tls serves HTTPS; ALPN says http/1.1", function()
  need_certs()
  local srv = assert(http.listen(function(req) return 200, "hello " .. req.path end,
    { host = "127.0.0.1", port = 0, tls = { cert = D .. "good.crt", key = D .. "good.key" } }))
  local res, info = https_get(srv.port, "/x", { ca_file = D .. "ca.crt", alpn = { "h2", "http/1.1" } })
  T.match(res, "^HTTP/1.1 200 OK\r\n")
  T.match(res, "\r\n\r\nhello /x$")
  T.eq(info.alpn, "http/1.1")
  -- Keep-alive over TLS: two requests on one connection.
  local c = assert(dial(srv.port, { ca_file = D .. "ca.crt" }))
  for i = 1, 2 do
    assert(c:write("GET /k" .. i .. " HTTP/1.1\r\nHost: l\r\n\r\n"))
    local head = assert(c:read_until("\r\n\r\n"))
    T.match(head, "^HTTP/1.1 200")
    local n = tonumber(head:match("[Cc]ontent%-[Ll]ength: (%d+)"))
    T.eq(c:readn(n), "hello /k" .. i)
  end
  c:close()
  srv:shutdown(1)
end)

T.test("large request bodies over TLS: reading pauses at the buffer limit and resumes", function()
  need_certs()
  local srv = assert(http.listen(function(req)
    if req.path == "/stream" then
      local n = 0
      while true do
        local chunk, err = req:read()
        if not chunk then
          if err then return 500, err end
          break
        end
        n = n + #chunk
      end
      return 200, tostring(n)
    end
    local b, err = req:body()
    if not b then return 500, err end
    return 200, tostring(#b) .. " " .. b:sub(-3)
  end, { host = "127.0.0.1", port = 0, max_body_size = 4 * 1048576,
         tls = { cert = D .. "good.crt", key = D .. "good.key" } }))
  local c = assert(dial(srv.port, { ca_file = D .. "ca.crt" }))
  local body = ("0123456789"):rep(60000) .. "end"
  for _, path in ipairs { "/whole", "/stream", "/whole" } do
    assert(c:write("POST " .. path .. " HTTP/1.1\r\nHost: l\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body))
    local head = assert(c:read_until("\r\n\r\n", 65536, 10))
    T.match(head, "^HTTP/1.1 200")
    local n = tonumber(head:match("[Cc]ontent%-[Ll]ength: (%d+)"))
    T.eq(c:readn(n, 10), path == "/stream" and tostring(#body) or (#body .. " end"))
  end
  c:close()
  srv:shutdown(1)
end)

T.test("plain HTTP or a broken handshake on a TLS port closes only that connection", function()
  need_certs()
  local logged = {}
  local srv = assert(http.listen(function() return 200, "ok" end,
    { host = "127.0.0.1", port = 0, tls = { cert = D .. "good.crt", key = D .. "good.key" },
      log = function(m) logged[#logged + 1] = m end }))
  local tls = { ca_file = D .. "ca.crt" }
  -- One TLS connection stays open across the bad ones.
  local keep = assert(dial(srv.port, tls))
  local plain = assert(net.connect("127.0.0.1", srv.port, { timeout = 5 }))
  assert(plain:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
  -- Closed without an answer (read_all reads "" up to the end).
  local data, err = plain:read_all(5)
  T.ok(data == "" or err == "reset", err)
  plain:close()
  local junk = assert(net.connect("127.0.0.1", srv.port, { timeout = 5 }))
  assert(junk:write("\22\3\1\0\5hello")) -- a handshake record that is not one
  data, err = junk:read_all(5)
  T.ok(err == "eof" or err == "reset" or data ~= nil, err)
  junk:close()
  -- A client that goes away in the middle of its handshake.
  local half = assert(net.connect("127.0.0.1", srv.port, { timeout = 5 }))
  assert(half:write("\22\3\1"))
  half:close()
  assert(keep:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
  T.match(keep:read_until("\r\n\r\n"), "^HTTP/1.1 200")
  keep:close()
  local res = https_get(srv.port, "/", tls)
  T.match(res, "^HTTP/1.1 200")
  T.eq(#logged, 0, table.concat(logged, "\n"))
  srv:shutdown(1)
end)

T.test("the handshake is bounded by the connect timeout and ends when the context is cancelled", function()
  need_certs()
  -- A plain listener that accepts and never answers the ClientHello.
  local lis = assert(net.listen { port = 0 })
  local held = {}
  orrery.go(function()
    while true do
      local c = lis:accept()
      if not c then return end
      held[#held + 1] = c
    end
  end)
  local c, err = net.connect { host = "127.0.0.1", port = lis.port, timeout = 0.05, tls = { ca_file = D .. "ca.crt" } }
  T.eq(c, nil)
  T.eq(err, "timeout")
  local ctx, cancel = context.with_cancel()
  local out, id = T.spawn(function()
    return sched.with_ctx(ctx, net.connect, { host = "127.0.0.1", port = lis.port, tls = { ca_file = D .. "ca.crt" } })
  end)
  T.settle { id }
  cancel()
  local r = out:recv()
  T.eq(r[1], true)
  T.eq(r[2], nil)
  T.eq(r[3], "canceled")
  -- A server that closes during the handshake.
  for _, h in ipairs(held) do h:close() end
  local lis2 = assert(net.listen { port = 0 })
  orrery.go(function() local s = lis2:accept(); s:read(); s:close() end)
  c, err = net.connect { host = "127.0.0.1", port = lis2.port, timeout = 5, tls = { ca_file = D .. "ca.crt" } }
  T.eq(c, nil)
  T.eq(err, "tls: connection closed during the handshake")
  lis:close()
  lis2:close()
end)

T.test("SIGHUP reloads the certificate: new connections see it, open ones keep theirs", function()
  need_certs()
  pcall(ffi.cdef, "int kill(int pid, int sig); int getpid(void);")
  cp("good.crt", "srv.crt")
  cp("good.key", "srv.key")
  local srv = assert(http.listen(function(req) return 200, req.path end,
    { host = "127.0.0.1", port = 0, tls = { cert = D .. "srv.crt", key = D .. "srv.key" } }))
  local tls = { ca_file = D .. "ca.crt" }
  local old = assert(dial(srv.port, tls))
  T.eq(old:tls_info().peer_subject, "CN=localhost")
  local hups = orrery.chan(10)
  T.ok(orrery.on_hup(function(sig) hups:send(sig) end))
  cp("good2.crt", "srv.crt")
  cp("good2.key", "srv.key")
  ffi.C.kill(ffi.C.getpid(), 1)
  T.eq(hups:recv(10), 1)
  local _, info = https_get(srv.port, "/new", tls)
  T.eq(info.peer_subject, "CN=localhost-2")
  -- The connection made before still works, with its certificate.
  assert(old:write("GET /old HTTP/1.1\r\nHost: l\r\n\r\n"))
  T.match(old:read_until("\r\n\r\n"), "^HTTP/1.1 200")
  T.eq(old:tls_info().peer_subject, "CN=localhost")
  old:close()
  -- A reload that fails (a key that does not match) keeps the last good
  -- certificate, and the server keeps serving.
  cp("good.crt", "srv.crt")
  ffi.C.kill(ffi.C.getpid(), 1)
  T.eq(hups:recv(10), 1)
  _, info = https_get(srv.port, "/again", tls)
  T.eq(info.peer_subject, "CN=localhost-2")
  srv:shutdown(1)
end)

-- Runs cmd in the background (bash), then tells us on a plain listener
-- that it has ended: waiting is on an event, not on time.
local function background(cmd)
  local done = assert(net.listen { port = 0 })
  local out = os.tmpname()
  local script = ("%s >%s 2>&1; exec 3<>/dev/tcp/127.0.0.1/%d; echo done >&3")
    :format(cmd, q(out), done.port)
  assert(sh("bash -c " .. q(script) .. " </dev/null >/dev/null 2>&1 &"))
  return function()
    local c = assert(done:accept(30))
    c:read_until("\n", 100, 30)
    c:close()
    done:close()
    local f = io.open(out)
    local s = f:read("*a")
    f:close()
    os.remove(out)
    return s
  end
end

T.test("openssl s_client: TLS 1.3 with ALPN http/1.1, TLS 1.2 with an ECDHE AEAD suite, no TLS 1.1", function()
  need_certs()
  if not have_bash then T.skip("bash is missing") end
  local srv = assert(http.listen(function() return 200, "ok" end,
    { host = "127.0.0.1", port = 0, tls = { cert = D .. "good.crt", key = D .. "good.key" } }))
  local base = ("openssl s_client -connect 127.0.0.1:%d -CAfile %s -servername localhost")
    :format(srv.port, q(D .. "ca.crt"))
  local out = background(base .. " -alpn http/1.1")()
  T.match(out, "New, TLSv1.3, Cipher is TLS_")
  T.match(out, "ALPN protocol: http/1.1")
  T.match(out, "Verify return code: 0 %(ok%)")
  out = background(base .. " -tls1_2 -brief")()
  T.match(out, "Protocol version: TLSv1.2")
  T.match(out, "Ciphersuite: ECDHE%-ECDSA%-AES%d+%-GCM%-SHA%d+")
  -- The client allows TLS 1.1 here (security level 0); the server does not.
  out = background(base .. " -tls1_1 -cipher DEFAULT@SECLEVEL=0")()
  T.match(out, "alert protocol version")
  T.ok(not out:find("Protocol version: TLSv1.1", 1, true), out)
  -- And the server is still there.
  local res = https_get(srv.port, "/", { ca_file = D .. "ca.crt" })
  T.match(res, "^HTTP/1.1 200")
  srv:shutdown(1)
end)

T.test("sslscan: no SSLv3, TLS 1.0 or 1.1, and only forward-secret AEAD suites", function()
  need_certs()
  if not have_bash then T.skip("bash is missing") end
  if not sh("command -v sslscan >/dev/null 2>&1") then T.skip("sslscan is missing (scripts/deps.sh sslscan)") end
  local srv = assert(http.listen(function() return 200, "ok" end,
    { host = "127.0.0.1", port = 0, tls = { cert = D .. "good.crt", key = D .. "good.key" } }))
  local out = background(("sslscan --no-colour 127.0.0.1:%d"):format(srv.port))()
  for _, v in ipairs { "SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1" } do
    T.match(out, "\n" .. v:gsub("%.", "%%.") .. "%s+disabled", v)
  end
  T.match(out, "\nTLSv1%.2%s+enabled")
  T.match(out, "\nTLSv1%.3%s+enabled")
  local n = 0
  for proto, suite in out:gmatch("\n%a+%s+(TLSv1%.%d)%s+%d+ bits%s+(%S+)") do
    n = n + 1
    if proto == "TLSv1.2" then
      T.match(suite, "^ECDHE%-[%u]+%-", suite)
      T.ok(suite:find("GCM", 1, true) or suite:find("CHACHA20", 1, true), suite)
    else
      T.match(suite, "^TLS_", suite)
    end
  end
  T.ok(n >= 4, out)
  T.match(out, "renegotiation not supported")
  srv:shutdown(1)
end)

T.test("net.connect tls over a unix socket", function()
  need_certs()
  local path = D .. "tls.sock"
  local lis = assert(net.listen { unix = path, tls = { cert = D .. "good.crt", key = D .. "good.key" } })
  orrery.go(function()
    local c = assert(lis:accept())
    local l = c:read_until("\n", 100, 5)
    c:write(l)
    c:close(1)
  end)
  local c = assert(net.connect { unix = path, timeout = 5, tls = { ca_file = D .. "ca.crt", server_name = "localhost" } })
  c:write("unix\n")
  T.eq(c:read_until("\n"), "unix\n")
  c:close()
  lis:close()
end)

T.test("tls_info on a plain connection", function()
  local lis = assert(net.listen { port = 0 })
  orrery.go(function() local s = lis:accept(); s:read(); s:close() end)
  local c = assert(net.connect("127.0.0.1", lis.port))
  local info, err = c:tls_info()
  T.eq(info, nil)
  T.eq(err, "not_tls")
  c:close()
  lis:close()
end)

T.test("cleanup: the certificate directory", function()
  if D then sh("rm -rf " .. q(D)) end
end)

-- The HTTP client over TLS: https URLs are verified against the URL's
-- host by default, connections are pooled and reused like plain ones.
T.test("the HTTP client speaks https: verified, pooled, and refused on a bad certificate", function()
  D = nil -- the reload tests above replaced some files: make a fresh set
  need_certs()
  local srv = assert(http.listen(function(req) return 200, { path = req.path } end,
    { host = "127.0.0.1", port = 0, tls = { cert = D .. "good.crt", key = D .. "good.key" } }))
  local c = http.client { tls = { ca_file = D .. "ca.crt" } }
  for i = 1, 3 do
    local res, err = c:get(("https://localhost:%d/p%d"):format(srv.port, i))
    T.eq(err, nil)
    T.eq(res.status, 200)
    T.eq(res:json().path, "/p" .. i)
  end
  local st = c:stats()[("https://localhost:%d"):format(srv.port)]
  T.eq({ st.created, st.reused }, { 1, 2 })
  -- The system store does not know the test CA.
  local res, err = http.get(("https://localhost:%d/"):format(srv.port), { timeout = 5 })
  T.eq(res, nil)
  T.match(err, "^tls: ")
  -- A certificate for another host.
  local wrong = assert(http.listen(function() return 200, "x" end,
    { host = "127.0.0.1", port = 0, tls = { cert = D .. "wrong.crt", key = D .. "wrong.key" } }))
  res, err = c:get(("https://localhost:%d/"):format(wrong.port))
  T.eq(res, nil)
  T.match(err, "^tls: hostname mismatch")
  T.raises(function() http.client { tls = "yes" } end, "option tls must be a table")
  c:close_idle()
  wrong:close()
  srv:close()
  sh("rm -rf " .. q(D))
end)
