-- uses: lib
-- Last step of a refund, once SQL says refunded: the units of a ticket marked by begin_return go
-- back on sale (sold -> available, and the ticket's seats free), once; the mark goes with them.
-- Answers 'returned' with the mark's user and quantity (a split product's buyer may be counted
-- in another bucket: see resolve_claims.lua), or why not.
-- KEYS: stock, returns, users, events, seats, seat ranks, free seats
-- ARGV: ticket
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unavailable'}
end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then
  return {'none'}
end
local mark = cjson.decode(raw)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'sold', -mark.q)
redis.call('HINCRBY', KEYS[1], 'available', mark.q)
redis.call('HINCRBY', KEYS[1], 'version', 1)
move_seats(seat_keys(5), ARGV[1], mark.st, 's', 'f')
if redis.call('HINCRBY', KEYS[3], mark.u, -mark.q) <= 0 then
  redis.call('HDEL', KEYS[3], mark.u)
end
emit(KEYS[4], 'unsell', ARGV[1], mark.q, mark.u, now_ms())
return {'returned', mark.u, mark.q}
