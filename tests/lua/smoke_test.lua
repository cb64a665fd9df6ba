local T = require "orrery.test"
local orrery = require "orrery"

T.test("unbuffered channel hands values over in order", function()
  local ch = orrery.chan()
  orrery.go(function() for i = 1, 3 do ch:send(i) end ch:close() end)
  local got = {}
  for v in ch:iter() do got[#got + 1] = v end
  T.eq(got, { 1, 2, 3 })
end)
