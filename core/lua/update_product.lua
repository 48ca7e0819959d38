-- Brings a product's terms in Redis to SQL's: initial stock (the difference goes to available),
-- sale window, per-user limit and price. Absolute values, so running it twice changes nothing.
-- KEYS: stock, events
-- ARGV: initial, starts_ms, ends_ms, max_per_user, price, now_ms
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local added = tonumber(ARGV[1]) - tonumber(redis.call('HGET', KEYS[1], 'initial'))
if added ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'initial', added)
  redis.call('HINCRBY', KEYS[1], 'available', added)
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  emit(KEYS[2], 'restock', '', added, '', tonumber(ARGV[6]))
end
redis.call('HSET', KEYS[1], 'starts_ms', ARGV[2], 'ends_ms', ARGV[3], 'max_per_user', ARGV[4],
  'price', ARGV[5])
return 1
