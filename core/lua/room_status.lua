-- uses: lib
-- Where a buyer stands in the sale's waiting room (asked when the web process does not know the
-- buyer's place yet), admitting the next places at the room's rate on the way. No SQL.
-- KEYS: stock, room, queue, early, admits
-- ARGV: buyer, a split product's other buckets' 'available:held' ('' for none)
-- Answers the room's board (lib.lua's room_board()) followed by the buyer's place (lib.lua's
-- buyer_place()), {'open'} (no room) or {'unavailable'}.
local q = room_keys(2)
local stock, answer = enter_room(q, KEYS[1], {'available', 'held'})
if not stock then
  return answer
end
local board = room_board(q, with_other_buckets(stock, ARGV[2]), now_ms())
table.insert(board, buyer_place(q, ARGV[1]))
return board
