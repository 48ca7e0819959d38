-- The whole purchase decision in one atomic call.
-- KEYS: stock, holds, deadlines, users, idempotency, settle stream, events, the buyer's purchase
--       rate counter
-- ARGV: user, quantity, ticket, hold_ms, idempotency_key ('' = none), payment_method,
--       reclaim_limit, rate_limit (purchases per window, 0 = none), rate_window_ms
local now = now_ms()
local user = ARGV[1]
local qty = tonumber(ARGV[2])
local ticket = ARGV[3]
local idem = ARGV[5]

local stock = redis.call('HMGET', KEYS[1], 'available', 'max_per_user', 'starts_ms', 'ends_ms', 'price',
  'currency')
if not stock[1] then
  return {'unavailable'}
end
-- The buyer's purchase rate on this product, a fixed window: every attempt counts.
local rate_limit = tonumber(ARGV[8])
if rate_limit > 0 then
  local attempts = redis.call('INCR', KEYS[8])
  if attempts == 1 then
    redis.call('PEXPIRE', KEYS[8], ARGV[9])
  end
  if attempts > rate_limit then
    return {'rate_limited', tostring(redis.call('PTTL', KEYS[8]))}
  end
end
if idem ~= '' then
  local existing = redis.call('HGET', KEYS[5], user .. ':' .. idem)
  if existing then
    return {'duplicate', existing, redis.call('HGET', KEYS[2], existing) or ''}
  end
end
local starts, ends = tonumber(stock[3]), tonumber(stock[4])
if starts > 0 and now < starts then
  return {'sale_not_started'}
end
if ends > 0 and now >= ends then
  return {'sale_ended'}
end

local available = tonumber(stock[1]) +
  reclaim_expired(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[7], now, tonumber(ARGV[7]))
local limit = tonumber(stock[2])
local bought = tonumber(redis.call('HGET', KEYS[4], user) or '0')
if limit > 0 and bought + qty > limit then
  return {'per_user_limit', tostring(limit - bought)}
end
if available < qty then
  return {'sold_out', tostring(available)}
end

local deadline = now + tonumber(ARGV[4])
local hold = {t = ticket, u = user, q = qty, a = qty * tonumber(stock[5]), d = deadline,
              s = 'reserved', pm = ARGV[6], cur = stock[6], c = now, m = now}
if idem ~= '' then
  hold.k = idem
end
local encoded = cjson.encode(hold)
redis.call('HINCRBY', KEYS[1], 'available', -qty)
redis.call('HINCRBY', KEYS[1], 'held', qty)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HINCRBY', KEYS[4], user, qty)
redis.call('HSET', KEYS[2], ticket, encoded)
redis.call('ZADD', KEYS[3], deadline, ticket)
if idem ~= '' then
  redis.call('HSET', KEYS[5], user .. ':' .. idem, ticket)
end
redis.call('XADD', KEYS[6], '*', 'ticket', ticket)
emit(KEYS[7], 'reserve', ticket, qty, user, now)
return {'reserved', ticket, encoded}
