-- Ends claims of a split product's bucket (reserve.lua): the buyer's units a purchase counted
-- here before it moved on to a later bucket. Kept: the purchase was confirmed, its units stay
-- counted (the claim stays too, marked kept: a retry of a keyed purchase finds it); released:
-- it came to nothing, an open claim goes and its units are uncounted, once; withdrawn: as
-- released, for a purchase that held nothing anywhere (its waiting room pass may buy again);
-- returned: a confirmed purchase refunded, its units are uncounted, claim or none (the refund
-- asks once per ticket), and the claim goes.
-- While the bucket's stock is missing nothing moves (its rebuild counts the units from what it
-- reads): the claims stay as they are, for the sweep to end later.
-- KEY and ARG (read by name) are ResolveClaimsCall's (core/inventory/calls.py).
-- Answers how many open claims ended (-1: the stock is missing).
if redis.call('EXISTS', KEYS[KEY.stock]) == 0 then
  return -1
end
local ended = 0
local function uncount(user, qty)
  if redis.call('HINCRBY', KEYS[KEY.users], user, -tonumber(qty)) <= 0 then
    redis.call('HDEL', KEYS[KEY.users], user)
  end
end
for at = ARG_HEAD, #ARGV - 1, ARG_WIDTH do
  local ticket, action = ARGV[at + ARG_EACH.ticket], ARGV[at + ARG_EACH.action]
  local raw = redis.call('HGET', KEYS[KEY.claims], ticket)
  local claim = raw and cjson.decode(raw)
  local open = claim and claim.s ~= 'kept'
  if open then
    ended = ended + 1
  end
  if action == 'returned' then
    redis.call('HDEL', KEYS[KEY.claims], ticket)
    uncount(string.match(ARGV[at + ARG_EACH.counted], '^(.*):(%d+)$'))
  elseif (action == 'released' or action == 'withdrawn') and open then
    redis.call('HDEL', KEYS[KEY.claims], ticket)
    uncount(claim.u, claim.q)
    if action == 'withdrawn' and claim.p then
      redis.call('SREM', KEYS[KEY.passes_used], claim.p)
    end
  elseif action == 'kept' and open then
    claim.s = 'kept'
    redis.call('HSET', KEYS[KEY.claims], ticket, cjson.encode(claim))
  end
end
return ended
