-- One consistent view of a product's stock, with the quantities of holds still open and the
-- confirmed holds whose order SQL may not have recorded yet.
-- KEYS: stock, holds
local stock = redis.call('HMGET', KEYS[1], 'initial', 'available', 'held', 'sold', 'version')
if not stock[1] then
  return {}
end
local open_qty, confirmed = 0, {}
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local hold = cjson.decode(entries[i + 1])
  if OPEN[hold.s] then
    open_qty = open_qty + hold.q
  elseif hold.s == 'confirmed' then
    table.insert(confirmed, hold.t)
    table.insert(confirmed, hold.q)
  end
end
return {stock[1], stock[2], stock[3], stock[4], stock[5], open_qty, confirmed}
