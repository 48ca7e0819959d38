-- uses: lib
-- Sets seats to the states reconciliation derived from SQL, if nothing changed since the
-- snapshot they were derived against (every seat move moves the stock's version).
-- KEY and ARG (read by name) are RepairSeatsCall's (core/inventory/calls.py).
if redis.call('HGET', KEYS[KEY.stock], 'version') ~= ARGV[ARG.version] then
  return 'changed'
end
local seat = seat_keys(KEY.seats)
local fixed = 0
for label, state in pairs(cjson.decode(ARGV[ARG.fixes])) do
  redis.call('HSET', seat.states, label, state)
  if state == 'f' then
    redis.call('ZADD', seat.free, redis.call('HGET', seat.ranks, label), label)
  else
    redis.call('ZREM', seat.free, label)
  end
  fixed = fixed + 1
end
redis.call('HINCRBY', KEYS[KEY.stock], 'version', 1)
emit(KEYS[KEY.events], 'repair_seats', '', fixed, '', now_ms())
return 'repaired'
