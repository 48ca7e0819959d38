-- uses: lib
-- Releases this product's holds past their deadline (the scheduled sweep; reserve does the same inline).
-- KEYS: stock, holds, deadlines, users, events, seats, seat ranks, free seats
-- ARGV: limit
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
return reclaim_expired(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], seat_keys(6), now_ms(),
  tonumber(ARGV[1]))
