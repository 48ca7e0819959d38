-- Sets sold from SQL's figure and derives available, if nothing changed since the snapshot.
-- KEYS: stock, events
-- ARGV: expected_version, sold, held, now_ms
local version = redis.call('HGET', KEYS[1], 'version')
if version ~= ARGV[1] then
  return {'changed'}
end
local initial = tonumber(redis.call('HGET', KEYS[1], 'initial'))
local sold, held = tonumber(ARGV[2]), tonumber(ARGV[3])
local available = initial - sold - held
redis.call('HSET', KEYS[1], 'sold', sold, 'held', held, 'available', available)
redis.call('HINCRBY', KEYS[1], 'version', 1)
emit(KEYS[2], 'repair', '', available, '', tonumber(ARGV[4]))
return {'repaired', tostring(available)}
