-- uses: lib
-- A hold Redis lost while SQL has its order open (a failover promoted a replica that never had
-- it: the stock is there, the hold is not) is held again, as SQL recorded it, if its units are
-- still free: stock available, every seat free, the buyer within the limit, its Idempotency-Key
-- and waiting room pass not used by another purchase since. Else the caller ends the order.
-- A split product's hold outside its buyer's own bucket (ARGV[2] 'away') is not held again: its
-- buyer's units are counted in the own bucket, which this call cannot reach.
-- KEYS: stock, holds, deadlines, users, settle stream, events, final status key, idempotency,
--       seats, seat ranks, free seats, passes used
-- ARGV: the hold's record (JSON, with SQL's status and deadline), 'own' or 'away'
-- Answers: adopted; held (Redis has the hold: nothing lost), settled (SQL's final state is
-- recorded: a stale read), unavailable (no stock: the rebuild restores it), lapsed (past its
-- deadline), taken (its units, seats, limit, key or pass went to other purchases)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'unavailable'
end
local hold = cjson.decode(ARGV[1])
if redis.call('HEXISTS', KEYS[2], hold.t) == 1 then
  return 'held'
end
if redis.call('EXISTS', KEYS[7]) == 1 then
  return 'settled'
end
local now = now_ms()
if hold.d <= now then
  return 'lapsed'
end
if ARGV[2] == 'away' then
  return 'taken'
end
local stock = redis.call('HMGET', KEYS[1], 'available', 'max_per_user')
local limit = tonumber(stock[2] or '0')
local bought = tonumber(redis.call('HGET', KEYS[4], hold.u) or '0')
if tonumber(stock[1]) < hold.q or (limit > 0 and bought + hold.q > limit) then
  return 'taken'
end
local key = hold.k and (hold.u .. ':' .. hold.k) or nil
if key then
  local owner = redis.call('HGET', KEYS[8], key)
  if owner and owner ~= hold.t then
    return 'taken'
  end
end
if hold.qp and redis.call('SISMEMBER', KEYS[12], hold.qp) == 1 then
  return 'taken'
end
local seat = seat_keys(9)
for _, label in ipairs(hold.st or {}) do
  if redis.call('HGET', seat.states, label) ~= 'f' then
    return 'taken'
  end
end
for _, label in ipairs(hold.st or {}) do
  redis.call('HSET', seat.states, label, 'h:' .. hold.t)
  redis.call('ZREM', seat.free, label)
end
if key then
  redis.call('HSET', KEYS[8], key, hold.t)
end
if hold.qp then
  redis.call('SADD', KEYS[12], hold.qp)
end
redis.call('HINCRBY', KEYS[1], 'available', -hold.q)
redis.call('HINCRBY', KEYS[1], 'held', hold.q)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HINCRBY', KEYS[4], hold.u, hold.q)
redis.call('HSET', KEYS[2], hold.t, cjson.encode(hold))
redis.call('ZADD', KEYS[3], hold.d, hold.t)
redis.call('XADD', KEYS[5], '*', 'ticket', hold.t)
emit(KEYS[6], 'adopt', hold.t, hold.q, hold.u, now)
return 'adopted'
