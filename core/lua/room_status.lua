-- uses: lib
-- Where a buyer stands in the sale's waiting room (asked when the web process does not know the
-- buyer's place yet), admitting the next places at the room's rate on the way. No SQL.
-- KEY and ARG (read by name) are RoomStatusCall's (core/inventory/calls.py).
-- Answers the room's board (lib.lua's room_board()) followed by the buyer's place (lib.lua's
-- buyer_place()), {'open'} (no room) or {'unavailable'}.
local q = room_keys(KEY.room)
local stock, answer = enter_room(q, KEYS[KEY.stock], {'available', 'held'})
if not stock then
  return answer
end
local board = room_board(q, with_other_buckets(stock, ARGV[ARG.other_buckets]), now_ms())
table.insert(board, buyer_place(q, ARGV[ARG.buyer]))
return board
