-- uses: lib
-- Last step of a refund, once SQL says refunded: the units of a ticket marked by begin_return go
-- back on sale (sold -> available, and the ticket's seats free), once; the mark goes with them.
-- Answers 'returned' with the mark's user and quantity (a split product's buyer may be counted
-- in another bucket: see resolve_claims.lua), or why not.
-- KEY and ARG (read by name) are ReturnUnitsCall's (core/inventory/calls.py).
if redis.call('EXISTS', KEYS[KEY.stock]) == 0 then
  return {'unavailable'}
end
local raw = redis.call('HGET', KEYS[KEY.returns], ARGV[ARG.ticket])
if not raw then
  return {'none'}
end
local mark = cjson.decode(raw)
redis.call('HDEL', KEYS[KEY.returns], ARGV[ARG.ticket])
redis.call('HINCRBY', KEYS[KEY.stock], 'sold', -mark.q)
redis.call('HINCRBY', KEYS[KEY.stock], 'available', mark.q)
redis.call('HINCRBY', KEYS[KEY.stock], 'version', 1)
move_seats(seat_keys(KEY.seats), ARGV[ARG.ticket], mark.st, 's', 'f')
if redis.call('HINCRBY', KEYS[KEY.users], mark.u, -mark.q) <= 0 then
  redis.call('HDEL', KEYS[KEY.users], mark.u)
end
emit(KEYS[KEY.events], 'unsell', ARGV[ARG.ticket], mark.q, mark.u, now_ms())
return {'returned', mark.u, mark.q}
