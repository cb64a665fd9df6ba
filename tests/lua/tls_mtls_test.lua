-- SPDX-License-Identifier: MIT
-- tls_mtls_test.lua -- client certificates (mutual TLS): a server that
-- requires or accepts them (tls.ca_file, tls.verify), what it sees of the
-- client (conn:tls_info(), req.tls), and what a client is told when the
-- server wants no part of its certificate: none sent, or one from a CA
-- the server does not trust. Both over orrery.net and orrery.http, TLS
-- 1.3 from orrery's client and TLS 1.2 from openssl s_client.
local T = require "orrery.test"
local orrery = require "orrery"
local net = require "orrery.net"
local http = require "orrery.http"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local certs = dofile(here .. "tls_certs.lua")
local sh, q = certs.sh, certs.q

-- Servers' certificates come from one CA, clients' from another, and a
-- third CA signs a client certificate that the servers do not trust.
local S
local function need_certs()
  if not certs.available() then T.skip("the openssl command is missing (scripts/deps.sh openssl)") end
  if S then return end
  S = certs.new()
  S:ca("ca", "Orrery Test CA"):ca("clients", "Orrery Clients CA"):ca("other", "Other CA")
  S:leaf("server", { ca = "ca", cn = "localhost", san = "DNS:localhost,IP:127.0.0.1", usage = "serverAuth" })
  S:leaf("alice", { ca = "clients", cn = "alice", usage = "clientAuth" })
  S:leaf("bob", { ca = "clients", cn = "bob", usage = "clientAuth" })
  S:leaf("mallory", { ca = "other", cn = "mallory", usage = "clientAuth" })
end

local function server_tls(extra)
  local t = S:tls("server")
  t.ca_file = S:path("clients", "crt")
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- A client's tls option: the test CA, and the client certificate `who`.
local function client_tls(who)
  local t = who and S:tls(who) or {}
  t.ca_file = S:path("ca", "crt")
  return t
end

-- A TLS echo server: every line comes back; what each connection saw
-- (its tls_info, or its read error) goes to srv.seen. With once, each
-- connection is closed after its first line.
local function echo_server(tls, once)
  local lis = assert(net.listen { port = 0, tls = tls })
  local srv = { lis = lis, port = lis.port, seen = orrery.chan(100) }
  orrery.go(function()
    while true do
      local c = lis:accept()
      if not c then return end
      orrery.go(function()
        local l, err = c:read_until("\n", 1000, 5)
        srv.seen:send(l and c:tls_info() or { err = err })
        while l do
          c:write(l)
          if once then break end
          l = c:read_until("\n", 1000, 5)
        end
        c:close(1)
      end)
    end
  end)
  return srv
end

-- One line there and back: the line read, or nil, err.
local function round_trip(port, tls)
  local c, err = net.connect { host = "127.0.0.1", port = port, timeout = 5, tls = tls }
  if not c then return nil, err end
  c:write("ping\n")
  local l
  l, err = c:read_until("\n", 100, 5)
  local info = c:tls_info()
  c:close()
  return l, err, info
end

T.test("verify = require: a client certificate from the CA is accepted, and the server sees it", function()
  need_certs()
  local srv = echo_server(server_tls { verify = "require" })
  local l, err, info = round_trip(srv.port, client_tls("alice"))
  T.eq(l, "ping\n", err)
  T.eq(info.peer_subject, "CN=localhost")
  T.ok(info.verified)
  local seen = srv.seen:recv(5)
  T.eq(seen.peer_subject, "CN=alice")
  T.eq(seen.peer_issuer, "CN=Orrery Clients CA")
  T.match(seen.peer_serial, "^%x+$")
  T.eq(seen.verified, true)
  srv.lis:close()
end)

T.test("verify = require: no client certificate is refused, and the client says why", function()
  need_certs()
  local srv = echo_server(server_tls { verify = "require" })
  -- TLS 1.3: the client's handshake ends before the server has looked
  -- at its (missing) certificate; the refusal is the answer to the
  -- client's first read.
  local l, err = round_trip(srv.port, client_tls(nil))
  T.eq(l, nil)
  T.match(err, "^tls: client certificate required %(tlsv13 alert certificate required%)$")
  T.match(srv.seen:recv(5).err, "^tls: peer did not return a certificate")
  srv.lis:close()
end)

T.test("a client certificate from a CA the server does not trust is refused", function()
  need_certs()
  for _, mode in ipairs { "require", "optional" } do
    local srv = echo_server(server_tls { verify = mode })
    local l, err = round_trip(srv.port, client_tls("mallory"))
    T.eq(l, nil)
    T.match(err, "^tls: client certificate rejected %(tlsv1 alert unknown ca%)$")
    T.match(srv.seen:recv(5).err, "^tls: unable to get local issuer certificate")
    srv.lis:close()
  end
  -- A server's own certificate is no client certificate either: its CA
  -- is not the clients' CA.
  local srv = echo_server(server_tls())
  local l, err = round_trip(srv.port, client_tls("server"))
  T.eq(l, nil)
  T.match(err, "^tls: client certificate rejected")
  srv.lis:close()
end)

T.test("verify = optional: a client without a certificate is let in, unverified", function()
  need_certs()
  local srv = echo_server(server_tls { verify = "optional" })
  local l, err = round_trip(srv.port, client_tls(nil))
  T.eq(l, "ping\n", err)
  local seen = srv.seen:recv(5)
  T.eq(seen.peer_subject, nil)
  T.eq(seen.verified, false)
  l, err = round_trip(srv.port, client_tls("bob"))
  T.eq(l, "ping\n", err)
  seen = srv.seen:recv(5)
  T.eq(seen.peer_subject, "CN=bob")
  T.eq(seen.verified, true)
  srv.lis:close()
end)

T.test("a server without ca_file asks for no certificate; a client that has one connects", function()
  need_certs()
  local srv = echo_server(S:tls("server"))
  local l, err = round_trip(srv.port, client_tls("alice"))
  T.eq(l, "ping\n", err)
  local seen = srv.seen:recv(5)
  T.eq(seen.peer_subject, nil)
  T.eq(seen.verified, false)
  srv.lis:close()
end)

T.test("a resumed session keeps the client's certificate", function()
  need_certs()
  local srv = echo_server(server_tls())
  local tls = client_tls("alice")
  for i = 1, 2 do
    local l, err, info = round_trip(srv.port, tls)
    T.eq(l, "ping\n", err)
    T.eq(info.resumed, i == 2)
    local seen = srv.seen:recv(5)
    T.eq(seen.resumed, i == 2)
    T.eq(seen.peer_subject, "CN=alice")
    T.eq(seen.verified, true)
  end
  srv.lis:close()
end)

T.test("HTTP: req.tls shows the client certificate; the client presents tls.cert", function()
  need_certs()
  local srv = assert(http.listen(function(req)
    local t = req.tls
    return 200, { subject = t.peer_subject, issuer = t.peer_issuer, verified = t.verified,
      protocol = t.protocol, alpn = t.alpn }
  end, { host = "127.0.0.1", port = 0, tls = server_tls() }))
  local url = ("https://localhost:%d/"):format(srv.port)
  local c = http.client { tls = client_tls("alice") }
  for _ = 1, 2 do
    local res, err = c:get(url)
    T.eq(err, nil)
    T.eq(res.status, 200)
    T.eq(res:json(), { subject = "CN=alice", issuer = "CN=Orrery Clients CA", verified = true,
      protocol = "TLSv1.3", alpn = "http/1.1" })
  end
  T.eq(c:stats()[("https://localhost:%d"):format(srv.port)].reused, 1)
  -- Without a certificate: refused, and the error says so.
  local res, err = http.client { tls = client_tls(nil) }:get(url)
  T.eq(res, nil)
  T.eq(http.err_code(err), "tls")
  T.match(err, "^tls: client certificate required")
  -- From the wrong CA.
  res, err = http.client { tls = client_tls("mallory") }:get(url)
  T.eq(res, nil)
  T.match(err, "^tls: client certificate rejected")
  c:close_idle()
  srv:close()
end)

T.test("HTTP: req.tls is nil on a plain connection", function()
  local srv = assert(http.listen(function(req) return 200, tostring(req.tls) end, { host = "127.0.0.1", port = 0 }))
  local res = assert(http.get(("http://127.0.0.1:%d/"):format(srv.port)))
  T.eq(res:body(), "nil")
  srv:close()
end)

T.test("tls.verify and tls.ca_file on a server are checked", function()
  need_certs()
  local function listen(extra) return net.listen { port = 0, tls = server_tls(extra) } end
  T.raises(function() listen { verify = "maybe" } end,
    "orrery.net.listen: bad option 'tls.verify' (\"require\" or \"optional\" expected, got \"maybe\")")
  T.raises(function() listen { verify = true } end, "bad option 'tls.verify'")
  T.raises(function() net.listen { port = 0, tls = { cert = S:path("server", "crt"),
    key = S:path("server", "key"), verify = "require" } } end, "option 'tls.verify' needs 'tls.ca_file'")
  T.raises(function() listen { ca_file = "/nonexistent/ca.pem" } end,
    "option tls.ca_file: cannot load CA file /nonexistent/ca.pem: No such file or directory")
  T.raises(function() http.listen(function() return 200 end,
    { port = 0, tls = server_tls { ca_file = S:path("alice", "key") } }) end,
    "orrery.http.listen: option tls.ca_file: cannot load CA file")
end)

T.test("a reload reads the CA file again", function()
  need_certs()
  local ca = S.dir .. "reload-ca.crt"
  assert(sh(("cp %s %s"):format(q(S:path("clients", "crt")), q(ca))))
  local srv = echo_server(server_tls { ca_file = ca })
  T.eq(round_trip(srv.port, client_tls("alice")), "ping\n")
  srv.seen:recv(5)
  -- Now only the other CA's clients.
  assert(sh(("cp %s %s"):format(q(S:path("other", "crt")), q(ca))))
  assert(srv.lis:reload_tls())
  local l, err = round_trip(srv.port, client_tls("alice"))
  T.eq(l, nil)
  T.match(err, "^tls: client certificate rejected")
  srv.seen:recv(5)
  T.eq(round_trip(srv.port, client_tls("mallory")), "ping\n")
  T.eq(srv.seen:recv(5).peer_subject, "CN=mallory")
  srv.lis:close()
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

T.test("openssl s_client over TLS 1.2: with a client certificate served, without one refused", function()
  need_certs()
  if not sh("command -v bash >/dev/null 2>&1") then T.skip("bash is missing") end
  local srv = echo_server(server_tls(), true)
  local base = ("echo ping | openssl s_client -connect 127.0.0.1:%d -CAfile %s -tls1_2 -ign_eof")
    :format(srv.port, q(S:path("ca", "crt")))
  local out = background(("%s -cert %s -key %s"):format(base, q(S:path("alice", "crt")), q(S:path("alice", "key"))))()
  T.match(out, "Acceptable client certificate CA names\n[^\n]*CN ?= ?Orrery Clients CA")
  T.match(out, "Protocol  *: TLSv1.2")
  T.match(out, "\nping\n")
  T.eq(srv.seen:recv(5).peer_subject, "CN=alice")
  out = background(base)()
  T.match(out, "alert handshake failure")
  T.match(srv.seen:recv(5).err, "^tls: peer did not return a certificate")
  srv.lis:close()
end)

T.test("cleanup: the certificate directory", function()
  if S then S:remove() end
end)
