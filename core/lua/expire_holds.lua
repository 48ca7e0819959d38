-- uses: lib
-- Releases this product's holds past their deadline (the scheduled sweep; reserve does the same inline).
-- KEY and ARG (read by name) are ExpireHoldsCall's (core/inventory/calls.py).
if redis.call('EXISTS', KEYS[KEY.stock]) == 0 then
  return 0
end
return reclaim_expired(KEYS[KEY.stock], KEYS[KEY.holds], KEYS[KEY.deadlines], KEYS[KEY.users],
  KEYS[KEY.events], seat_keys(KEY.seats), now_ms(),
  tonumber(ARGV[ARG.limit]))
