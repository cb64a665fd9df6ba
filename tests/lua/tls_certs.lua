-- SPDX-License-Identifier: MIT
-- tls_certs.lua -- test certificates made with the openssl command, in a
-- temporary directory (loaded with dofile by the TLS tests and the TLS
-- benchmark; docs/tls.md has the same recipe). EC P-256 keys: quick to
-- make.
local M = {}

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

M.sh, M.q = sh, q

--- available() -> whether the openssl command is installed
function M.available()
  return sh("command -v openssl >/dev/null 2>&1")
end

local Set = {}
Set.__index = Set

local EC = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"

function Set:run(cmd)
  assert(sh("cd " .. q(self.dir) .. " && " .. cmd .. " >/dev/null 2>&1"), cmd)
end

--- set:path(name, ext) -> the file's path (ext: "crt" or "key")
function Set:path(name, ext) return self.dir .. name .. "." .. ext end

--- set:ca(name, cn): a self-signed CA, name.crt and name.key
function Set:ca(name, cn)
  self:run(("openssl req -x509 %s -keyout %s.key -out %s.crt -days 30 -subj '/CN=%s'")
    :format(EC, name, name, cn))
  return self
end

--- set:leaf(name, { ca=, cn=, san=, days=, usage= }): a certificate signed
-- by the CA ca; san (subjectAltName) and usage (extendedKeyUsage:
-- "serverAuth", "clientAuth") when given; days may be negative (expired).
function Set:leaf(name, o)
  self:run(("openssl req %s -keyout %s.key -out %s.csr -subj '/CN=%s'"):format(EC, name, name, o.cn))
  local f = assert(io.open(self.dir .. name .. ".ext", "w"))
  if o.san then f:write("subjectAltName=", o.san, "\n") end
  if o.usage then f:write("extendedKeyUsage=", o.usage, "\n") end
  f:write("basicConstraints=CA:FALSE\n")
  f:close()
  self:run(("openssl x509 -req -in %s.csr -CA %s.crt -CAkey %s.key -CAcreateserial -out %s.crt -days %d -extfile %s.ext")
    :format(name, o.ca, o.ca, name, o.days or 30, name))
  return self
end

--- set:tls(name) -> { cert=, key= } of the certificate name
function Set:tls(name)
  return { cert = self:path(name, "crt"), key = self:path(name, "key") }
end

function Set:remove()
  if self.dir then sh("rm -rf " .. q(self.dir)) end
  self.dir = nil
end

--- new() -> an empty set in a new temporary directory
function M.new()
  local p = assert(io.popen("mktemp -d"))
  local dir = p:read("*l") .. "/"
  p:close()
  return setmetatable({ dir = dir }, Set)
end

return M
