-- Takes the free locks among many (SET NX PX each, no waiting) and counts the outcome.
-- KEYS: the lock stats hash, then one lock key per ticket
-- ARGV: ttl_ms, then one token per lock key
-- Returns 1 or 0 per lock key, in order.
local taken = {}
local acquired = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[i], 'NX', 'PX', ARGV[1]) then
    taken[#taken + 1] = 1
    acquired = acquired + 1
  else
    taken[#taken + 1] = 0
  end
end
redis.call('HINCRBY', KEYS[1], 'acquired', acquired)
redis.call('HINCRBY', KEYS[1], 'failed', #KEYS - 1 - acquired)
return taken
