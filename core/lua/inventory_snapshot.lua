-- One consistent view of a product in Redis, for comparing with SQL: the stock figures, the terms
-- the reserve script enforces, the quantity of holds still open, the confirmed holds whose order
-- SQL may not have recorded yet, and the refunds whose units are not back on sale yet.
-- KEYS: stock, holds, returns
local stock = redis.call('HMGET', KEYS[1], 'initial', 'available', 'held', 'sold', 'version',
  'max_per_user', 'starts_ms', 'ends_ms', 'price', 'currency', 'terms_version', 'room', 'room_epoch')
if not stock[1] then
  return {}
end
local open_qty, confirmed = 0, {}
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local hold = cjson.decode(entries[i + 1])
  if OPEN[hold.s] then
    open_qty = open_qty + hold.q
  elseif hold.s == STATUS.confirmed then
    table.insert(confirmed, hold.t)
    table.insert(confirmed, hold.q)
  end
end
local returning = {}
local marks = redis.call('HGETALL', KEYS[3])
for i = 1, #marks, 2 do
  table.insert(returning, marks[i])
  table.insert(returning, cjson.decode(marks[i + 1]).q)
end
return {stock, open_qty, confirmed, returning}
