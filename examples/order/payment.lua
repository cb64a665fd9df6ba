-- SPDX-License-Identifier: MIT
-- payment.lua -- the order example's payment service: charges and refunds
-- (README.md). orrery examples/order/payment.lua --port 8081 --db payment.db
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local C = dofile(dir .. "common.lua")

C.participant {
  name = "payment", flags = C.flags(...),
  schema = { "CREATE TABLE IF NOT EXISTS charges (key TEXT PRIMARY KEY, order_id TEXT, amount REAL, refunded INTEGER DEFAULT 0)" },
  action = function(tx, r, key)
    assert(tx:exec("INSERT INTO charges (key, order_id, amount) VALUES (?, ?, ?)", key, r.order, r.amount))
    return { charged = r.amount }
  end,
  compensate = function(tx, r)
    return tx:exec("UPDATE charges SET refunded = refunded + 1 WHERE key = ?", r.key)
  end,
  stats = function(db)
    local rows = assert(db:exec("SELECT order_id, count(*) AS charges, sum(refunded) AS refunds FROM charges GROUP BY order_id"))
    local by = {}
    for _, row in ipairs(rows) do by[row.order_id] = { charges = row.charges, refunds = row.refunds } end
    return { orders = by }
  end,
}
