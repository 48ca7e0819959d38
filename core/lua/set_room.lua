-- Turns a sale's waiting room on or off and sets its rate (from SQL: safe to repeat). The stock
-- hash carries the flag the reserve script reads; the room hash keeps the queue's counters, and
-- its epoch (set when the room is created) tells the web processes' copies a room Redis lost
-- from the one that replaced it.
-- KEYS: stock, room
-- ARGV: on ('1' or '0'), admit_per_second
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'missing'
end
redis.call('HSET', KEYS[1], 'room', ARGV[1])
redis.call('HSET', KEYS[2], 'on', ARGV[1], 'rate', ARGV[2])
redis.call('HSETNX', KEYS[2], 'epoch', now_ms())
return 'applied'
