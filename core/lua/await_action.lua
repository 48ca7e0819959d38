-- uses: lib
-- The payment needs the buyer's authentication (3-D Secure): processing -> requires_action, with
-- the client secret the buyer's page needs. The hold stays until its deadline.
-- KEYS: holds
-- ARGV: ticket, client_secret
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return {'missing', ''}
end
local hold = cjson.decode(raw)
if hold.s ~= STATUS.processing and hold.s ~= STATUS.requires_action then
  return {'conflict', raw}
end
hold.s = STATUS.requires_action
hold.cs = ARGV[2]
hold.m = now_ms()
local encoded = cjson.encode(hold)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
return {'ok', encoded}
