-- The simulated provider confirms an intent: the outcome fixed at creation (from the payment
-- method) is applied once; a charge is counted when it succeeds.
-- KEYS: intents hash, charges hash
-- ARGV: intent_id, ticket
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return false
end
local record = cjson.decode(raw)
if record.status ~= 'requires_confirmation' then
  return raw
end
for field, value in pairs(record.on_confirm) do
  record[field] = value
end
if record.status == 'succeeded' then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
end
raw = cjson.encode(record)
redis.call('HSET', KEYS[1], ARGV[1], raw)
return raw
