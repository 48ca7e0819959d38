-- uses: lib
-- Settles a hold: confirmed (held -> sold) or failed / expired / cancelled (held -> available).
-- Only an open hold moves; asking again for the state it is in answers 'already'.
-- KEY and ARG (read by name) are FinishHoldCall's (core/inventory/calls.py).
local ticket, outcome = ARGV[ARG.ticket], ARGV[ARG.outcome]
local now = now_ms()
local hold, raw = load_hold(KEYS[KEY.stock], KEYS[KEY.holds], ticket)
if not hold then
  return raw
end
if hold.s == outcome then
  return {'already', raw}
end
if not OPEN[hold.s] or (ARGV[ARG.only_from] ~= '' and hold.s ~= ARGV[ARG.only_from]) then
  return {'conflict', raw}
end
if outcome == STATUS.confirmed then
  redis.call('HINCRBY', KEYS[KEY.stock], 'held', -hold.q)
  redis.call('HINCRBY', KEYS[KEY.stock], 'sold', hold.q)
  move_seats(seat_keys(KEY.seats), ticket, hold.st, 'h', 's')
else
  return_to_stock(KEYS[KEY.stock], KEYS[KEY.users], seat_keys(KEY.seats), hold)
end
redis.call('HINCRBY', KEYS[KEY.stock], 'version', 1)
hold.s = outcome
hold.m = now
if ARGV[ARG.reason] ~= '' then
  hold.r = ARGV[ARG.reason]
end
local encoded = cjson.encode(hold)
redis.call('HSET', KEYS[KEY.holds], ticket, encoded)
redis.call('ZREM', KEYS[KEY.deadlines], ticket)
local action = outcome == STATUS.confirmed and 'confirm' or 'release'
emit(KEYS[KEY.events], action, ticket, hold.q, hold.u, now)
return {'ok', encoded}
