-- uses: lib
-- A settler takes a hold: reserved -> processing (a hold awaiting the buyer's authentication keeps
-- that state), and the hold's deadline is extended by a lease so that it is not reclaimed while its
-- payment is in flight. A reserved hold already past its deadline is expired instead.
-- KEYS: stock, holds, deadlines, users, events, seats, seat ranks, free seats
-- ARGV: ticket, lease_ms
local ticket = ARGV[1]
local now = now_ms()
local hold, raw = load_hold(KEYS[1], KEYS[2], ticket)
if not hold then
  return raw
end
if hold.s == STATUS.reserved and hold.d <= now then
  hold.s = STATUS.expired
  hold.r = 'hold_expired'
  hold.m = now
  redis.call('ZREM', KEYS[3], ticket)
  return_to_stock(KEYS[1], KEYS[4], seat_keys(6), hold)
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  emit(KEYS[5], 'expire', ticket, hold.q, hold.u, now)
elseif OPEN[hold.s] then
  local first = hold.s == STATUS.reserved
  if first then
    hold.s = STATUS.processing
  end
  hold.m = now
  local lease_end = now + tonumber(ARGV[2])
  local current = tonumber(redis.call('ZSCORE', KEYS[3], ticket) or '0')
  if lease_end > current then
    redis.call('ZADD', KEYS[3], lease_end, ticket)
  end
  if first then
    emit(KEYS[5], 'process', ticket, hold.q, hold.u, now)
  end
else
  return {hold.s, raw}
end
local encoded = cjson.encode(hold)
redis.call('HSET', KEYS[2], ticket, encoded)
return {hold.s, encoded}
