-- uses: lib
-- Sets initial, sold and held from SQL's figures and derives available, if nothing changed since
-- the snapshot they were computed against.
-- KEYS: stock, events
-- ARGV: expected_version, initial, sold, held
local version = redis.call('HGET', KEYS[1], 'version')
if version ~= ARGV[1] then
  return {'changed'}
end
local initial, sold, held = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local available = initial - sold - held
redis.call('HSET', KEYS[1], 'initial', initial, 'sold', sold, 'held', held, 'available', available)
redis.call('HINCRBY', KEYS[1], 'version', 1)
emit(KEYS[2], 'repair', '', available, '', now_ms())
return {'repaired', tostring(available)}
