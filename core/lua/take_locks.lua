-- Takes the free locks among many (SET NX PX each, no waiting).
-- KEY and ARG (read by name) are TakeLocksCall's (core/locks.py).
-- Returns 1 or 0 per lock key, in order.
local taken = {}
for i = 0, (#KEYS - KEY_HEAD) / KEY_WIDTH - 1 do
  local lock = KEYS[KEY_HEAD + i * KEY_WIDTH + KEY_EACH.lock]
  local token = ARGV[ARG_HEAD + i * ARG_WIDTH + ARG_EACH.token]
  if redis.call('SET', lock, token, 'NX', 'PX', ARGV[ARG.ttl_ms]) then
    taken[#taken + 1] = 1
  else
    taken[#taken + 1] = 0
  end
end
return taken
