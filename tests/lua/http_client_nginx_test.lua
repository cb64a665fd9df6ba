-- SPDX-License-Identifier: MIT
-- http_client_nginx_test.lua -- the HTTP client against nginx (Debian's)
-- as an upstream: keep-alive with Keep-Alive: timeout=, keepalive_requests
-- closing the connection, chunked (SSI) and sendfile bodies, HEAD, 304,
-- redirects, request bodies; and nginx as an HTTPS upstream: verification
-- against the test CA, keep-alive and session resumption over TLS, a
-- client certificate nginx checks. nginx runs as its own instance in a
-- temporary directory on the loopback; it is installed with
-- scripts/deps.sh when missing, and the file is skipped (saying why) when
-- that fails.
local T = require "orrery.test"
local http = require "orrery.http"

local root = (debug.getinfo(1, "S").source:match("^@(.*)tests/lua/http_client_nginx_test%.lua$") or "")
local certs = dofile(root .. "tests/lua/tls_certs.lua")

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, out:gsub("rc=%d+%s*$", "")
end

local function find_nginx()
  for _, p in ipairs { "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx" } do
    local f = io.open(p)
    if f then f:close(); return p end
  end
end

local nginx = find_nginx()
local why
if not nginx then
  -- Within the per-file limit of orrery test (300 s by default).
  local rc, out = sh("timeout 240 " .. T.shquote(root .. "scripts/deps.sh") .. " nginx")
  nginx = find_nginx()
  if not nginx then why = ("nginx is not installed and scripts/deps.sh nginx failed (status %s): %s")
    :format(tostring(rc), out:sub(-300)) end
end

local dir, port, base
-- The HTTPS server: its URL, and the certificates (nil without openssl).
local tls_port, tls_base, S

-- The HTTPS server: a certificate for localhost from a test CA, client
-- certificates from another CA asked for (optional), and /conn answering
-- with what nginx knows of the connection.
local function tls_server()
  if not certs.available() then return "" end
  S = certs.new()
  S:ca("ca", "Orrery Test CA"):ca("clients", "Orrery Clients CA")
  S:leaf("server", { ca = "ca", cn = "localhost", san = "DNS:localhost,IP:127.0.0.1", usage = "serverAuth" })
  S:leaf("alice", { ca = "clients", cn = "alice", usage = "clientAuth" })
  tls_port = T.free_port()
  tls_base = "https://localhost:" .. tls_port
  return ([[
  server {
    listen 127.0.0.1:%d ssl;
    root %s/www;
    keepalive_requests 100;
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:TLS:1m;
    ssl_client_certificate %s;
    ssl_verify_client optional;
    location = /conn {
      return 200 "$connection $connection_requests $ssl_protocol $ssl_session_reused $ssl_client_verify $ssl_client_s_dn\n";
    }
    location = /ssi.html { ssi on; }
  }
]]):format(tls_port, dir, S:path("server", "crt"), S:path("server", "key"), S:path("clients", "crt"))
end

local function start()
  port = T.free_port()
  local rc, out = sh("mktemp -d /tmp/orrery-nginx.XXXXXX")
  assert(rc == 0, out)
  dir = out:match("(%S+)")
  sh("chmod 755 " .. T.shquote(dir))
  local conf = ([[
daemon on;
master_process on;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  keepalive_timeout 60 30;
  keepalive_requests 3;
  types { text/html html; text/plain txt; }
  server {
    listen 127.0.0.1:%d;
    root %s/www;
    location = /ok { return 200 "hello world\n"; }
    location = /old { return 301 /ok; }
    location = /ssi.html { ssi on; }
  }
%s}
]]):format(dir, dir, dir, dir, dir, dir, dir, port, dir, tls_server())
  sh("mkdir -p " .. T.shquote(dir .. "/www"))
  local f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  f = assert(io.open(dir .. "/www/big.txt", "w"))
  f:write(("0123456789abcdef"):rep(16384)) -- 256 KiB
  f:close()
  f = assert(io.open(dir .. "/www/ssi.html", "w"))
  f:write("<p>before</p><!--# echo var=\"request_method\" --><p>after</p>\n")
  f:close()
  rc, out = sh(T.shquote(nginx) .. " -p " .. T.shquote(dir) .. " -c " .. T.shquote(dir .. "/nginx.conf"))
  if rc ~= 0 then return nil, out end
  base = "http://127.0.0.1:" .. port
  return true
end

-- Stops the instance and waits until its master has exited.
local function stop()
  if not dir then return end
  local f = io.open(dir .. "/nginx.pid")
  local pid = f and tonumber(f:read("*a"))
  if f then f:close() end
  sh(T.shquote(nginx) .. " -p " .. T.shquote(dir) .. " -c " .. T.shquote(dir .. "/nginx.conf") .. " -s stop")
  if pid then
    sh(("timeout 10 sh -c 'while kill -0 %d 2>/dev/null; do sleep 0.01; done'"):format(pid))
  end
  sh("rm -rf " .. T.shquote(dir))
  dir = nil
  if S then S:remove() end
end

local started, start_err = false, nil

-- Each case starts nginx on first use; the last one stops it.
local function case(name, fn)
  T.test("nginx: " .. name, function()
    if why then T.skip(why) end
    if not started then
      local ok, err = start()
      if not ok then
        start_err = err
        stop()
      end
      started = true
    end
    if start_err then T.skip("nginx did not start: " .. start_err:sub(1, 300)) end
    fn()
  end)
end

case("keep-alive GETs reuse one connection until keepalive_requests closes it", function()
  local c = http.client()
  for i = 1, 4 do
    local res = assert(c:get(base .. "/ok"))
    T.eq({ res.status, res:body() }, { 200, "hello world\n" })
    if i == 1 then T.eq(res.headers["keep-alive"], "timeout=30") end
    if i == 3 then T.eq(res.headers.connection, "close") end
  end
  local st = c:stats()[base]
  -- The third response said Connection: close; the fourth dialled anew.
  T.eq({ st.created, st.reused, st.idle }, { 2, 2, 1 })
end)

case("a chunked body (SSI) and a sendfile body", function()
  local c = http.client()
  local res = assert(c:get(base .. "/ssi.html"))
  T.eq(res.headers["transfer-encoding"], "chunked")
  T.eq(res:body(), "<p>before</p>GET<p>after</p>\n")
  res = assert(c:get(base .. "/big.txt", { stream = true }))
  T.eq(res.headers["content-length"], "262144")
  local n, pieces = 0, 0
  while true do
    local p, err = res:read()
    T.eq(err, nil)
    if not p then break end
    n, pieces = n + #p, pieces + 1
  end
  T.eq(n, 262144)
  T.ok(pieces >= 1)
  T.eq(c:stats()[base].created, 1)
end)

case("HEAD, 304 Not Modified and redirects keep the connection", function()
  local c = http.client()
  local res = assert(c:request { method = "HEAD", url = base .. "/big.txt" })
  T.eq({ res.status, res:body(), res.headers["content-length"] }, { 200, "", "262144" })
  local etag = res.headers.etag
  T.ok(etag)
  res = assert(c:get(base .. "/big.txt", { headers = { ["If-None-Match"] = etag } }))
  T.eq({ res.status, res:body() }, { 304, "" })
  -- keepalive_requests 3: the third one closed; the redirect dials anew.
  res = assert(c:get(base .. "/old", { follow = 1 }))
  T.eq({ res.status, res:body(), res.redirects }, { 200, "hello world\n", 1 })
  local st = c:stats()[base]
  T.eq({ st.created, st.reused }, { 2, 2 })
end)

case("request bodies: a string, JSON and a chunked stream", function()
  local c = http.client()
  T.eq(assert(c:post(base .. "/ok", ("x"):rep(100000))).status, 200)
  T.eq(assert(c:post(base .. "/ok", { a = 1 })).status, 200)
  local i = 0
  T.eq(assert(c:request { method = "POST", url = base .. "/ok", body = function()
    i = i + 1
    if i <= 3 then return ("chunk %d "):format(i) end
  end }).status, 200)
  T.eq(c:stats()[base].created, 1)
end)

case("404 for a missing file", function()
  local res = assert(http.get(base .. "/missing"))
  T.eq(res.status, 404)
  T.match(res.headers["content-type"], "^text/html")
end)

-- -- nginx over TLS --

local function tls_case(name, fn)
  case("https: " .. name, function()
    if not S then T.skip("the openssl command is missing (scripts/deps.sh openssl)") end
    fn()
  end)
end

-- What nginx says of the connection that served /conn.
local function conn_info(c, opts)
  local res, err = c:get(tls_base .. "/conn", opts)
  if not res then return nil, err end
  T.eq(res.status, 200)
  local id, n, proto, reused, verify, dn = res:body():match("^(%d+) (%d+) (%S+) (%S+) (%S+) ?(.-)\n$")
  return { id = tonumber(id), n = tonumber(n), protocol = proto, reused = reused == "r",
    client_verify = verify, client_dn = dn }
end

tls_case("verified against the test CA, kept alive: one TLS connection serves every request", function()
  local c = http.client { tls = { ca_file = S:path("ca", "crt") } }
  local first = assert(conn_info(c))
  T.eq({ first.n, first.protocol, first.reused, first.client_verify }, { 1, "TLSv1.3", false, "NONE" })
  for i = 2, 5 do
    local info = assert(conn_info(c))
    T.eq({ info.id, info.n }, { first.id, i }) -- nginx's $connection and $connection_requests
  end
  local st = c:stats()[tls_base]
  T.eq({ st.created, st.reused, st.idle }, { 1, 4, 1 })
  -- A chunked body and a 256 KiB sendfile body over the same connection.
  local res = assert(c:get(tls_base .. "/ssi.html"))
  T.eq(res.headers["transfer-encoding"], "chunked")
  T.eq(res:body(), "<p>before</p>GET<p>after</p>\n")
  res = assert(c:get(tls_base .. "/big.txt"))
  T.eq(#res:body(), 262144)
  T.eq(res:body():sub(1, 16), "0123456789abcdef")
  T.eq(assert(conn_info(c)).id, first.id)
  T.eq(c:stats()[tls_base].created, 1)
  c:close_idle()
end)

tls_case("a new connection resumes the TLS session nginx issued", function()
  local c = http.client { tls = { ca_file = S:path("ca", "crt") } }
  local first = assert(conn_info(c))
  c:close_idle()
  local second = assert(conn_info(c))
  T.ne(second.id, first.id)
  T.eq(second.n, 1)
  T.eq(second.reused, true)
  T.eq(c:stats()[tls_base].created, 2)
  c:close_idle()
end)

tls_case("a client certificate: nginx verifies it against its client CA", function()
  local c = http.client { tls = { ca_file = S:path("ca", "crt"), cert = S:path("alice", "crt"),
    key = S:path("alice", "key") } }
  local info = assert(conn_info(c))
  T.eq({ info.client_verify, info.client_dn }, { "SUCCESS", "CN=alice" })
  c:close_idle()
end)

tls_case("verification failures: an unknown CA, another name", function()
  local res, err = http.get(tls_base .. "/conn", { timeout = 5 }) -- the system store
  T.eq(res, nil)
  T.eq(err, "tls: unable to get local issuer certificate")
  local c = http.client { tls = { ca_file = S:path("ca", "crt"), server_name = "other.example" } }
  res, err = c:get(tls_base .. "/conn")
  T.eq(res, nil)
  T.eq(err, "tls: hostname mismatch")
end)

-- Last, whatever happened above: the instance does not outlive the file.
T.test("nginx: the instance is stopped", function()
  if why or not started then T.skip(why or "nginx was not started") end
  stop()
  local res, err = http.get(base .. "/ok", { timeout = 5 })
  T.eq(res, nil)
  T.eq(err, "refused")
end)
