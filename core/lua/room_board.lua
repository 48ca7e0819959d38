-- uses: lib
-- A waiting room's board (the counters each web process keeps for a few hundred ms and answers
-- its buyers' polls from), admitting the next places at the room's rate on the way.
-- KEY and ARG (read by name) are RoomBoardCall's (core/inventory/calls.py).
-- Answers lib.lua's room_board() ({'board', ...}), {'open'} (no room) or {'unavailable'}.
local q = room_keys(KEY.room)
local stock, answer = enter_room(q, KEYS[KEY.stock], {'available', 'held'})
if not stock then
  return answer
end
return room_board(q, with_other_buckets(stock, ARGV[ARG.other_buckets]), now_ms())
