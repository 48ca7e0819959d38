-- A buyer joins the sale's waiting room: one place per buyer. Before the opening the buyer waits
-- without a place (the opening draws the places at random); after it, the next place.
-- KEYS: stock, room, queue, early, admits
-- ARGV: buyer
-- Answers {'open'} (no room: buy now), {'waiting'}, {'queued', position, served, rate}, or
-- {'unavailable'} (the stock, or the room, is missing in Redis).
local q = room_keys(2)
local stock, answer = enter_room(q, KEYS[1], {})
if not stock then
  return answer
end
local now = now_ms()
local opens = tonumber(stock[1])
open_room(q, opens, now)
local buyer = ARGV[1]
local position = redis.call('ZSCORE', q.queue, buyer)
if not position then
  if now < opens then
    redis.call('SADD', q.early, buyer)
    return {'waiting'}
  end
  local room = redis.call('HMGET', q.room, 'next', 'served')
  if tonumber(room[1] or '0') <= tonumber(room[2] or '0') then
    redis.call('HSET', q.room, 'admit_ms', now) -- nobody waits: admission starts from now
  end
  position = redis.call('HINCRBY', q.room, 'next', 1)
  redis.call('ZADD', q.queue, position, buyer)
end
local served = advance_room(q, now)
return {'queued', tonumber(position), served, tonumber(redis.call('HGET', q.room, 'rate') or '0')}
