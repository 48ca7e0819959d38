-- Compare-and-delete for many locks: only the holder of a lock's token releases it.
-- KEYS: the lock keys
-- ARGV: one token per lock key
-- Returns how many were released.
local released = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    released = released + redis.call('DEL', KEYS[i])
  end
end
return released
