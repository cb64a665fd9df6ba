-- SPDX-License-Identifier: MIT
-- order_test.lua -- the order example suite (examples/order/): four
-- services as separate orrery processes on loopback. A saga completes; a
-- failing payment, stock running out and a failing shipment each end as
-- the saga says; then the crash test: sagas submitted while the order
-- service kills itself with SIGKILL at random moments and is restarted,
-- after which every saga must be completed or fully compensated, no order
-- charged twice or refunded without a charge, and the stock must add up.
local T = require "orrery.test"
local orrery = require "orrery"
local http = require "orrery.http"

local root = (debug.getinfo(1, "S").source:match("^@(.*)tests/lua/order_test%.lua$") or "")
local EX = root .. "examples/order/"
local q = T.shquote
local SAGAS = tonumber(os.getenv("ORDER_SAGAS") or "1000")

-- The services exit when this process is gone, even if a test failed.
local MY_PID = orrery.pid()

local function tmpdir()
  local p = io.popen("mktemp -d")
  local d = p:read("*l")
  p:close()
  return d .. "/"
end

-- Starts `script` in the background; waits until it has written its port.
local function start(dir, name, script, args)
  local pf = dir .. name .. ".port"
  os.remove(pf)
  local cmd = { q(T.exe), q(EX .. script), "--port-file", q(pf), "--db", q(dir .. name .. ".db"),
    "--watch-parent", MY_PID }
  for _, a in ipairs(args or {}) do cmd[#cmd + 1] = q(a) end
  local h = io.popen(table.concat(cmd, " ") .. " >>" .. q(dir .. name .. ".log") .. " 2>&1 & echo $!")
  local pid = h:read("*l")
  h:close()
  for _ = 1, 1000 do
    local f = io.open(pf)
    if f then
      local port = tonumber(f:read("*l"))
      f:close()
      return { pid = pid, url = "http://127.0.0.1:" .. port, name = name }
    end
    orrery.sleep(0.01)
  end
  error(name .. " did not start; log: " .. (io.open(dir .. name .. ".log"):read("*a")))
end

local function stop(p) os.execute("kill -TERM " .. p.pid .. " 2>/dev/null; sleep 0; wait 2>/dev/null") end
-- Whether p runs (a killed child nobody has reaped yet is a zombie: dead).
local function alive(p)
  local f = io.open("/proc/" .. p.pid .. "/stat")
  if not f then return false end
  local st = f:read("*a"):match("^%d+ %b() (%a)")
  f:close()
  return st ~= nil and st ~= "Z"
end

local function stats(p) return assert(http.get(p.url .. "/stats", { timeout = 5 })):json() end

local function suite(order_args, part_args)
  local dir = tmpdir()
  local pa = part_args or {}
  local s = {
    dir = dir,
    payment = start(dir, "payment", "payment.lua", pa),
    inventory = start(dir, "inventory", "inventory.lua", { "--stock", "100000", unpack(pa) }),
    shipping = start(dir, "shipping", "shipping.lua", pa),
  }
  s.part_args = { payment = pa, inventory = { "--stock", "100000", unpack(pa) }, shipping = pa }
  s.order_args = { "--payment", s.payment.url, "--inventory", s.inventory.url, "--shipping", s.shipping.url }
  for _, a in ipairs(order_args or {}) do s.order_args[#s.order_args + 1] = a end
  s.order = start(dir, "order", "order.lua", s.order_args)
  function s.close()
    for _, k in ipairs { "order", "payment", "inventory", "shipping" } do stop(s[k]) end
    if not os.getenv("ORDER_KEEP") then os.execute("rm -rf " .. q(dir)) end
  end
  return s
end

local function place(s, key, input)
  local res, err = http.post(s.order.url .. "/orders", input, { timeout = 10,
    headers = { ["Idempotency-Key"] = key } })
  if not res then return nil, err end
  return res:json(), res.status
end

T.test("a saga completes across the four services; failures compensate", function()
  local s = suite()
  local r = assert(place(s, "ok-1", { sku = "apple", qty = 2, amount = 10 }))
  T.eq(r.state, "completed")
  local pay = stats(s.payment).orders[r.id]
  T.eq(pay, { charges = 1, refunds = 0 })
  T.eq(stats(s.inventory).orders[r.id], { qty = 2, released = 0 })
  T.eq(stats(s.shipping).orders[r.id], 1)
  -- the payment fails: nothing charged, nothing reserved
  r = assert(place(s, "fail-pay", { sku = "apple", qty = 1, amount = 5, fault = { payment = "action=fail" } }))
  T.eq(r.state, "compensated")
  T.eq(stats(s.payment).orders[r.id], nil)
  -- out of stock: the charge is refunded
  r = assert(place(s, "no-stock", { sku = "apple", qty = 1e9, amount = 5 }))
  T.eq(r.state, "compensated")
  T.eq(r.error, "out of stock")
  T.eq(stats(s.payment).orders[r.id], { charges = 1, refunds = 1 })
  T.eq(stats(s.inventory).stock, 100000 - 2)
  -- shipping fails, after the pivot: the saga keeps moving forward
  -- (retried until shipping answers) instead of compensating
  local res = assert(http.post(s.order.url .. "/orders?async=1", { sku = "apple", qty = 1, amount = 1,
    fault = { shipping = "action=fail" } }, { timeout = 5, headers = { ["Idempotency-Key"] = "ship-late" } }))
  T.eq(res.status, 202)
  local g = assert(http.get(s.order.url .. "/orders/ship-late", { timeout = 5 })):json()
  T.eq(g.state, "running")
  -- the same key again returns the first saga
  local again = assert(place(s, "ok-1", { sku = "apple", qty = 2, amount = 10 }))
  T.eq(again.id, (assert(place(s, "ok-1", { sku = "apple", qty = 2, amount = 10 }))).id)
  T.eq(stats(s.payment).orders[again.id], { charges = 1, refunds = 0 })
  s.close()
end)

-- The crash tests' orders: every tenth asks for more stock than there is,
-- so that some sagas compensate (refund the charge) while crashes happen.
local function order_input(i)
  return { sku = "apple", qty = i % 10 == 0 and 1e9 or 1, amount = i }
end

-- Waits until no saga is running or compensating, then checks every
-- saga: completed ones charged once, reserved, shipped once; compensated
-- ones refunded the one charge they made, released what they reserved,
-- not shipped; and the stock adds up.
local function verify(s, what)
  local st
  for _ = 1, 6000 do
    st = stats(s.order)
    if st.running == 0 and st.compensating == 0 then break end
    orrery.sleep(0.02)
  end
  T.eq({ st.running, st.compensating, st.compensation_failed }, { 0, 0, 0 })
  T.eq(st.completed + st.compensated, SAGAS)
  local pay, inv, ship = stats(s.payment).orders, stats(s.inventory), stats(s.shipping).orders
  local completed = 0
  for k = 1, SAGAS do
    local g = assert(http.get(s.order.url .. "/orders/c-" .. k, { timeout = 5 })):json()
    local p, r, sh = pay[g.id], inv.orders[g.id], ship[g.id]
    if g.state == "completed" then
      completed = completed + 1
      T.eq(p, { charges = 1, refunds = 0 }, "c-" .. k .. " charged once")
      T.eq(r, { qty = 1, released = 0 }, "c-" .. k .. " reserved")
      T.eq(sh, 1, "c-" .. k .. " shipped once")
    else
      T.eq(g.state, "compensated", "c-" .. k)
      if p then T.eq(p, { charges = 1, refunds = 1 }, "c-" .. k .. " refunded its one charge") end
      if r then T.eq(r.released, 1, "c-" .. k .. " released") end
      T.eq(sh, nil, "c-" .. k .. " not shipped")
    end
  end
  T.ok(completed < SAGAS, "some sagas compensated")
  T.eq(inv.stock, 100000 - completed, "stock adds up")
  io.stderr:write(("  %s: %d sagas, %d crashes, %d completed, %d compensated\n")
    :format(what, SAGAS, s.crashes, completed, SAGAS - completed))
end

-- Waits (up to 5 s) for p to die; whether it did.
local function died(p)
  for _ = 1, 500 do
    if not alive(p) then return true end
    orrery.sleep(0.01)
  end
  return false
end

-- Under the sanitizers the services run several times slower and the
-- crash tests take minutes: they run with fewer sagas there.
if os.getenv("ORRERY_SANITIZED") and not os.getenv("ORDER_SAGAS") then SAGAS = 200 end

T.test(("crash test: %d sagas while the order service is killed at random"):format(SAGAS), function()
  local s = suite { "--crash-rate", os.getenv("ORDER_CRASH_RATE") or "0.01" }
  s.crashes = 0
  local i = 1
  while i <= SAGAS do
    local res = http.post(s.order.url .. "/orders?async=1", order_input(i),
      { timeout = 5, headers = { ["Idempotency-Key"] = "c-" .. i } })
    if res and res.status == 202 then
      i = i + 1
    elseif res then
      -- a live service that refuses the order (422 key_conflict was
      -- once seen here) is a bug, not a crash
      error(("c-%d: %d %s"):format(i, res.status, res:body() or ""))
    else
      -- it died: restart it and submit the same order again (same key)
      T.ok(died(s.order), "c-" .. i .. ": the request failed, so the service died")
      s.crashes = s.crashes + 1
      s.order = start(s.dir, "order", "order.lua", s.order_args)
    end
  end
  -- the last start without crashes; recovery finishes what is left
  stop(s.order)
  local args = {}
  for k = 1, #s.order_args - 2 do args[k] = s.order_args[k] end
  s.order = start(s.dir, "order", "order.lua", args)
  verify(s, "order service killed")
  T.ok(s.crashes > 0, "the order service crashed at least once")
  s.close()
end, { timeout = 240 })

T.test(("crash test: %d sagas while the participants are killed at random"):format(SAGAS), function()
  local s = suite(nil, { "--crash-rate", os.getenv("ORDER_CRASH_RATE") or "0.01" })
  s.crashes = 0
  -- a watcher restarts a participant that died, on its own port, and
  -- without --crash-rate once the orders are in (so the sagas can end)
  local done = false
  local ports = {}
  for _, k in ipairs { "payment", "inventory", "shipping" } do ports[k] = s[k].url:match(":(%d+)$") end
  local watcher_done = orrery.chan()
  orrery.go(function()
    while done ~= "stop" do
      for _, k in ipairs { "payment", "inventory", "shipping" } do
        if not alive(s[k]) then
          if not done then s.crashes = s.crashes + 1 end
          local args = { "--port", ports[k] }
          local pa = s.part_args[k]
          for n = 1, #pa - (done and 2 or 0) do args[#args + 1] = pa[n] end
          s[k] = start(s.dir, k, k .. ".lua", args)
          s[k].calm = done
        end
      end
      orrery.sleep(0.01)
    end
    watcher_done:close()
  end)
  for i = 1, SAGAS do
    local res = assert(http.post(s.order.url .. "/orders?async=1", order_input(i),
      { timeout = 5, headers = { ["Idempotency-Key"] = "c-" .. i } }))
    T.eq(res.status, 202, "c-" .. i)
  end
  -- the participants still running with --crash-rate are stopped; the
  -- watcher starts them again without it, so that the sagas can end
  done = true
  for _, k in ipairs { "payment", "inventory", "shipping" } do
    local p = s[k]
    if not p.calm then
      stop(p)
      T.ok(died(p), k .. " stopped")
    end
  end
  for _ = 1, 1000 do
    if s.payment.calm and s.inventory.calm and s.shipping.calm then break end
    orrery.sleep(0.01)
  end
  verify(s, "participants killed")
  T.ok(s.crashes > 0, "a participant crashed at least once")
  done = "stop"
  watcher_done:recv()
  s.close()
end, { timeout = 240 })
