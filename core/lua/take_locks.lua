-- Takes the free locks among many (SET NX PX each, no waiting).
-- KEYS: one lock key per ticket
-- ARGV: ttl_ms, then one token per lock key
-- Returns 1 or 0 per lock key, in order.
local taken = {}
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[i + 1], 'NX', 'PX', ARGV[1]) then
    taken[#taken + 1] = 1
  else
    taken[#taken + 1] = 0
  end
end
return taken
