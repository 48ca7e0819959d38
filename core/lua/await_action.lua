-- uses: lib
-- The payment needs the buyer's authentication (3-D Secure): processing -> requires_action, with
-- the client secret the buyer's page needs. The hold stays until its deadline.
-- KEY and ARG (read by name) are AwaitActionCall's (core/inventory/calls.py).
local raw = redis.call('HGET', KEYS[KEY.holds], ARGV[ARG.ticket])
if not raw then
  return {'missing', ''}
end
local hold = cjson.decode(raw)
if hold.s ~= STATUS.processing and hold.s ~= STATUS.requires_action then
  return {'conflict', raw}
end
hold.s = STATUS.requires_action
hold.cs = ARGV[ARG.client_secret]
hold.m = now_ms()
local encoded = cjson.encode(hold)
redis.call('HSET', KEYS[KEY.holds], ARGV[ARG.ticket], encoded)
return {'ok', encoded}
