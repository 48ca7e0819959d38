-- Where a buyer stands in the sale's waiting room, admitting the next places at the room's rate
-- on the way while anything is left to buy (the busiest call of a sale: one round trip, no SQL).
-- KEYS: stock, room, queue, early, admits
-- ARGV: buyer
-- Answers {'open'}, {'not_joined'}, {'waiting'}, {'queued', position, served, rate},
-- {'sold_out', position}, or {'unavailable'}.
local q = room_keys(2)
local stock, answer = enter_room(q, KEYS[1], {'available', 'held'})
if not stock then
  return answer
end
local now = now_ms()
open_room(q, tonumber(stock[1]), now)
local buyer = ARGV[1]
local position = redis.call('ZSCORE', q.queue, buyer)
if not position then
  return {redis.call('SISMEMBER', q.early, buyer) == 1 and 'waiting' or 'not_joined'}
end
position = tonumber(position)
-- Nobody more is admitted while nothing is left to buy (held units may still come back);
-- once nothing is held either, those not admitted are told.
local served = tonumber(redis.call('HGET', q.room, 'served') or '0')
if tonumber(stock[3]) > 0 then
  served = advance_room(q, now)
end
if position > served and tonumber(stock[3]) <= 0 and tonumber(stock[4]) <= 0 then
  return {'sold_out', position}
end
return {'queued', position, served, tonumber(redis.call('HGET', q.room, 'rate') or '0')}
