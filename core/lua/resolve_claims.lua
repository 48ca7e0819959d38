-- Ends claims of a split product's bucket (reserve.lua): the buyer's units a purchase counted
-- here before it moved on to a later bucket. Kept: the purchase was confirmed, its units stay
-- counted (the claim stays too, marked kept: a retry of a keyed purchase finds it); released:
-- it came to nothing, an open claim goes and its units are uncounted, once; withdrawn: as
-- released, for a purchase that held nothing anywhere (its waiting room pass may buy again);
-- returned: a confirmed purchase refunded, its units are uncounted, claim or none (the refund
-- asks once per ticket), and the claim goes.
-- While the bucket's stock is missing nothing moves (its rebuild counts the units from what it
-- reads): the claims stay as they are, for the sweep to end later.
-- KEYS: stock, claims, users, passes used
-- ARGV: triples of ticket (its id in this bucket), action, 'user:quantity' (for returned)
-- Answers how many open claims ended (-1: the stock is missing).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local ended = 0
local function uncount(user, qty)
  if redis.call('HINCRBY', KEYS[3], user, -tonumber(qty)) <= 0 then
    redis.call('HDEL', KEYS[3], user)
  end
end
for i = 1, #ARGV, 3 do
  local ticket, action = ARGV[i], ARGV[i + 1]
  local raw = redis.call('HGET', KEYS[2], ticket)
  local claim = raw and cjson.decode(raw)
  local open = claim and claim.s ~= 'kept'
  if open then
    ended = ended + 1
  end
  if action == 'returned' then
    redis.call('HDEL', KEYS[2], ticket)
    uncount(string.match(ARGV[i + 2], '^(.*):(%d+)$'))
  elseif (action == 'released' or action == 'withdrawn') and open then
    redis.call('HDEL', KEYS[2], ticket)
    uncount(claim.u, claim.q)
    if action == 'withdrawn' and claim.p then
      redis.call('SREM', KEYS[4], claim.p)
    end
  elseif action == 'kept' and open then
    claim.s = 'kept'
    redis.call('HSET', KEYS[2], ticket, cjson.encode(claim))
  end
end
return ended
