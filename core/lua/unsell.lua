-- Returns the units of a refunded confirmed order to the stock: sold -> available.
-- KEYS: stock, users, events
-- ARGV: ticket, user, quantity, now_ms
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local qty = tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[1], 'sold', -qty)
redis.call('HINCRBY', KEYS[1], 'available', qty)
redis.call('HINCRBY', KEYS[1], 'version', 1)
if redis.call('HINCRBY', KEYS[2], ARGV[2], -qty) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
emit(KEYS[3], 'unsell', ARGV[1], qty, ARGV[2], tonumber(ARGV[4]))
return 1
