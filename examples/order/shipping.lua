-- SPDX-License-Identifier: MIT
-- shipping.lua -- the order example's shipping service: schedules
-- shipments (README.md). The saga's last step, after the pivot: it is
-- retried until it succeeds, so it has nothing to compensate.
-- orrery examples/order/shipping.lua --port 8083 --db shipping.db
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local C = dofile(dir .. "common.lua")

C.participant {
  name = "shipping", flags = C.flags(...),
  schema = { "CREATE TABLE IF NOT EXISTS shipments (key TEXT PRIMARY KEY, order_id TEXT)" },
  action = function(tx, r, key)
    assert(tx:exec("INSERT INTO shipments (key, order_id) VALUES (?, ?)", key, r.order))
    return { scheduled = true }
  end,
  compensate = function() return true end,
  stats = function(db)
    local rows = assert(db:exec("SELECT order_id, count(*) AS n FROM shipments GROUP BY order_id"))
    local by = {}
    for _, row in ipairs(rows) do by[row.order_id] = row.n end
    return { orders = by }
  end,
}
