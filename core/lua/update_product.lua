-- Brings a product's terms in Redis to SQL's: initial stock (the difference goes to available),
-- sale window, per-user limit and price. Absolute values under SQL's terms version: running it
-- twice changes nothing, and terms older than the ones Redis has are refused.
-- KEYS: stock, events
-- ARGV: initial, starts_ms, ends_ms, max_per_user, price, terms_version, currency
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'missing'
end
local current = tonumber(redis.call('HGET', KEYS[1], 'terms_version') or '0')
local given = tonumber(ARGV[6])
if given < current then
  return 'stale'
end
local stored = redis.call('HMGET', KEYS[1], 'initial', 'starts_ms', 'ends_ms', 'max_per_user', 'price',
  'currency')
local added = tonumber(ARGV[1]) - tonumber(stored[1])
if added ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'initial', added)
  redis.call('HINCRBY', KEYS[1], 'available', added)
  emit(KEYS[2], 'restock', '', added, '', now_ms())
end
local changed = added ~= 0 or stored[6] ~= ARGV[7]
for i = 2, 5 do
  changed = changed or stored[i] ~= ARGV[i]
end
redis.call('HSET', KEYS[1], 'starts_ms', ARGV[2], 'ends_ms', ARGV[3], 'max_per_user', ARGV[4],
  'price', ARGV[5], 'currency', ARGV[7], 'terms_version', given)
if changed then
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return 'applied'
