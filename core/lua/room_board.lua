-- uses: lib
-- A waiting room's board (the counters each web process keeps for a few hundred ms and answers
-- its buyers' polls from), admitting the next places at the room's rate on the way.
-- KEYS: stock, room, queue, early, admits
-- ARGV: a split product's other buckets' 'available:held' ('' for none)
-- Answers lib.lua's room_board() ({'board', ...}), {'open'} (no room) or {'unavailable'}.
local q = room_keys(2)
local stock, answer = enter_room(q, KEYS[1], {'available', 'held'})
if not stock then
  return answer
end
return room_board(q, with_other_buckets(stock, ARGV[1]), now_ms())
