-- uses: lib
-- Sets initial, sold and held from SQL's figures and derives available, if nothing changed since
-- the snapshot they were computed against.
-- KEY and ARG (read by name) are RepairStockCall's (core/inventory/calls.py).
local version = redis.call('HGET', KEYS[KEY.stock], 'version')
if version ~= ARGV[ARG.version] then
  return {'changed'}
end
local initial, sold = tonumber(ARGV[ARG.initial]), tonumber(ARGV[ARG.sold])
local held = tonumber(ARGV[ARG.held])
local available = initial - sold - held
redis.call('HSET', KEYS[KEY.stock], 'initial', initial, 'sold', sold, 'held', held,
  'available', available)
redis.call('HINCRBY', KEYS[KEY.stock], 'version', 1)
emit(KEYS[KEY.events], 'repair', '', available, '', now_ms())
return {'repaired', tostring(available)}
