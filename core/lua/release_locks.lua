-- Compare-and-delete for many locks: only the holder of a lock's token releases it.
-- KEY and ARG (read by name) are ReleaseLocksCall's (core/locks.py).
-- Returns how many were released.
local released = 0
for i = 0, (#KEYS - KEY_HEAD) / KEY_WIDTH - 1 do
  local lock = KEYS[KEY_HEAD + i * KEY_WIDTH + KEY_EACH.lock]
  if redis.call('GET', lock) == ARGV[ARG_HEAD + i * ARG_WIDTH + ARG_EACH.token] then
    released = released + redis.call('DEL', lock)
  end
end
return released
