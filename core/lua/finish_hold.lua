-- uses: lib
-- Settles a hold: confirmed (held -> sold) or failed / expired / cancelled (held -> available).
-- Only an open hold moves; asking again for the state it is in answers 'already'.
-- KEYS: stock, holds, deadlines, users, events, seats, seat ranks, free seats
-- ARGV: ticket, outcome, reason, only_from ('' = any open state, else that one state)
local ticket, outcome = ARGV[1], ARGV[2]
local now = now_ms()
local hold, raw = load_hold(KEYS[1], KEYS[2], ticket)
if not hold then
  return raw
end
if hold.s == outcome then
  return {'already', raw}
end
if not OPEN[hold.s] or (ARGV[4] ~= '' and hold.s ~= ARGV[4]) then
  return {'conflict', raw}
end
if outcome == STATUS.confirmed then
  redis.call('HINCRBY', KEYS[1], 'held', -hold.q)
  redis.call('HINCRBY', KEYS[1], 'sold', hold.q)
  move_seats(seat_keys(6), ticket, hold.st, 'h', 's')
else
  return_to_stock(KEYS[1], KEYS[4], seat_keys(6), hold)
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
hold.s = outcome
hold.m = now
if ARGV[3] ~= '' then
  hold.r = ARGV[3]
end
local encoded = cjson.encode(hold)
redis.call('HSET', KEYS[2], ticket, encoded)
redis.call('ZREM', KEYS[3], ticket)
emit(KEYS[5], outcome == STATUS.confirmed and 'confirm' or 'release', ticket, hold.q, hold.u, now)
return {'ok', encoded}
