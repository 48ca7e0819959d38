-- uses: lib
-- Sets seats to the states reconciliation derived from SQL, if nothing changed since the
-- snapshot they were derived against (every seat move moves the stock's version).
-- KEYS: stock, events, seats, seat ranks, free seats
-- ARGV: expected_version, fixes ({"A-1-1": "f" | "h:<ticket>" | "s:<ticket>"})
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then
  return 'changed'
end
local seat = seat_keys(3)
local fixed = 0
for label, state in pairs(cjson.decode(ARGV[2])) do
  redis.call('HSET', seat.states, label, state)
  if state == 'f' then
    redis.call('ZADD', seat.free, redis.call('HGET', seat.ranks, label), label)
  else
    redis.call('ZREM', seat.free, label)
  end
  fixed = fixed + 1
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
emit(KEYS[2], 'repair_seats', '', fixed, '', now_ms())
return 'repaired'
