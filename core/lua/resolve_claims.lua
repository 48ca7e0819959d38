-- Ends claims of a split product's bucket (reserve.lua): the buyer's units a purchase counted
-- here before it moved on to a later bucket. Each claim goes once: kept (the purchase was
-- confirmed: its units stay counted), released (it came to nothing: they are uncounted), or
-- returned (a confirmed purchase refunded: its units are uncounted, claim or none; the refund
-- asks once per ticket).
-- KEYS: claims, users
-- ARGV: triples of ticket (its id in this bucket), action, 'user:quantity' (for returned)
local ended = 0
for i = 1, #ARGV, 3 do
  local ticket, action = ARGV[i], ARGV[i + 1]
  local raw = redis.call('HGET', KEYS[1], ticket)
  local user, qty
  if raw then
    redis.call('HDEL', KEYS[1], ticket)
    local claim = cjson.decode(raw)
    user, qty = claim.u, claim.q
    ended = ended + 1
  end
  if action == 'returned' then
    user, qty = string.match(ARGV[i + 2], '^(.*):(%d+)$')
  elseif action ~= 'released' then
    user = nil
  end
  if user and redis.call('HINCRBY', KEYS[2], user, -tonumber(qty)) <= 0 then
    redis.call('HDEL', KEYS[2], user)
  end
end
return ended
