-- uses: lib
-- A settler takes a hold: reserved -> processing (a hold awaiting the buyer's authentication keeps
-- that state), and the hold's deadline is extended by a lease so that it is not reclaimed while its
-- payment is in flight. A reserved hold already past its deadline is expired instead.
-- KEY and ARG (read by name) are BeginSettlementCall's (core/inventory/calls.py).
local ticket = ARGV[ARG.ticket]
local now = now_ms()
local hold, raw = load_hold(KEYS[KEY.stock], KEYS[KEY.holds], ticket)
if not hold then
  return raw
end
if hold.s == STATUS.reserved and hold.d <= now then
  hold.s = STATUS.expired
  hold.r = 'hold_expired'
  hold.m = now
  redis.call('ZREM', KEYS[KEY.deadlines], ticket)
  return_to_stock(KEYS[KEY.stock], KEYS[KEY.users], seat_keys(KEY.seats), hold)
  redis.call('HINCRBY', KEYS[KEY.stock], 'version', 1)
  emit(KEYS[KEY.events], 'expire', ticket, hold.q, hold.u, now)
elseif OPEN[hold.s] then
  local first = hold.s == STATUS.reserved
  if first then
    hold.s = STATUS.processing
  end
  hold.m = now
  local lease_end = now + tonumber(ARGV[ARG.lease_ms])
  local current = tonumber(redis.call('ZSCORE', KEYS[KEY.deadlines], ticket) or '0')
  if lease_end > current then
    redis.call('ZADD', KEYS[KEY.deadlines], lease_end, ticket)
  end
  if first then
    emit(KEYS[KEY.events], 'process', ticket, hold.q, hold.u, now)
  end
else
  return {hold.s, raw}
end
local encoded = cjson.encode(hold)
redis.call('HSET', KEYS[KEY.holds], ticket, encoded)
return {hold.s, encoded}
