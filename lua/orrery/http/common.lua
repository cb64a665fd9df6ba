-- SPDX-License-Identifier: MIT
-- orrery.http.common -- what the server and the router share: errors with
-- a status, status lines and percent-decoding. Internal: orrery.http is
-- the documented surface.
local hcore = require "orrery.http.core"

local type, error, setmetatable, tostring = type, error, setmetatable, tostring

local M = {}

-- -- Errors with a status --

local HttpError = {}
HttpError.__index = HttpError
HttpError.__tostring = function(e)
  return ("http error %d: %s"):format(e.status, tostring(e.body))
end
M.HttpError = HttpError

--- http.error(status [, body [, headers]]): raises an error that the server
-- answers with this status instead of 500.
function M.error(status, body, headers)
  if type(status) ~= "number" or status < 100 or status > 599 or status % 1 ~= 0 then
    error(("orrery.http.error: bad argument #1 (status from 100 to 599 expected, got %s)")
      :format(type(status) == "number" and tostring(status) or type(status)), 2)
  end
  error(setmetatable({ status = status, body = body, headers = headers }, HttpError), 2)
end

-- -- Status lines --

-- The reason phrases of host/http_parse.c (hp_status_text), the one table
-- of them: the status lines the server writes use the same.
local status_text = hcore.status_texts()

--- http.status_text(code) -> "Not Found" | nil
function M.status_text(code) return status_text[code] end

-- -- Percent-decoding --

local function unescape(s)
  if not s:find("%", 1, true) then return s end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.unescape = unescape

return M
