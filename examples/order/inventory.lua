-- SPDX-License-Identifier: MIT
-- inventory.lua -- the order example's inventory service: reserves and
-- releases stock (README.md).
-- orrery examples/order/inventory.lua --port 8082 --db inventory.db --stock 1000000
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local C = dofile(dir .. "common.lua")
local flags = C.flags(...)

C.participant {
  name = "inventory", flags = flags, refusals = { ["out of stock"] = true },
  schema = {
    "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, n INTEGER NOT NULL CHECK (n >= 0))",
    "CREATE TABLE IF NOT EXISTS reservations (key TEXT PRIMARY KEY, order_id TEXT, sku TEXT, qty INTEGER, released INTEGER DEFAULT 0)",
    ("INSERT INTO stock VALUES ('apple', %d) ON CONFLICT DO NOTHING"):format(tonumber(flags.stock or "1000000")),
  },
  action = function(tx, r, key)
    local _, info = tx:exec("UPDATE stock SET n = n - ? WHERE sku = ? AND n >= ?", r.qty, r.sku, r.qty)
    if not info or info.changes == 0 then return nil, "out of stock" end
    assert(tx:exec("INSERT INTO reservations (key, order_id, sku, qty) VALUES (?, ?, ?, ?)", key, r.order, r.sku, r.qty))
    return { reserved = r.qty }
  end,
  compensate = function(tx, r)
    local row = assert(tx:exec("SELECT sku, qty FROM reservations WHERE key = ?", r.key))[1]
    if not row then return true end -- nothing was reserved
    assert(tx:exec("UPDATE stock SET n = n + ? WHERE sku = ?", row.qty, row.sku))
    return tx:exec("UPDATE reservations SET released = released + 1 WHERE key = ?", r.key)
  end,
  stats = function(db)
    local stock = assert(db:exec("SELECT n FROM stock WHERE sku = 'apple'"))[1].n
    local rows = assert(db:exec("SELECT order_id, qty, released FROM reservations"))
    local by = {}
    for _, row in ipairs(rows) do by[row.order_id] = { qty = row.qty, released = row.released } end
    return { stock = stock, orders = by }
  end,
}
