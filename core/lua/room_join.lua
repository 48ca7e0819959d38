-- uses: lib
-- A buyer joins the sale's waiting room: one place per buyer. Before the opening the buyer waits
-- without a place (the opening draws the places at random); after it, the next place.
-- KEYS: stock, room, queue, early, admits
-- ARGV: buyer, a split product's other buckets' 'available:held' ('' for none)
-- Answers as room_status.lua: the board and the buyer's place, {'open'} (no room: buy now) or
-- {'unavailable'} (the stock, or the room, is missing in Redis).
local q = room_keys(2)
local stock, answer = enter_room(q, KEYS[1], {'available', 'held'})
if not stock then
  return answer
end
local now = now_ms()
local opens = tonumber(stock[1])
open_room(q, opens, now)
local buyer = ARGV[1]
if not redis.call('ZSCORE', q.queue, buyer) then
  if now < opens then
    redis.call('SADD', q.early, buyer)
  else
    local room = redis.call('HMGET', q.room, 'next', 'served')
    if tonumber(room[1] or '0') <= tonumber(room[2] or '0') then
      redis.call('HSET', q.room, 'admit_ms', now) -- nobody waits: admission starts from now
    end
    redis.call('ZADD', q.queue, redis.call('HINCRBY', q.room, 'next', 1), buyer)
  end
end
local board = room_board(q, with_other_buckets(stock, ARGV[2]), now)
table.insert(board, buyer_place(q, buyer))
return board
