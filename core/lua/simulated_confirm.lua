-- The simulated provider confirms an intent: the outcome fixed at creation (from the payment
-- method) is applied once; a charge is counted when it succeeds.
-- KEY and ARG (read by name) are SimulatedConfirmCall's (core/payments/simulated.py).
local raw = redis.call('HGET', KEYS[KEY.intents], ARGV[ARG.intent])
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
  redis.call('HINCRBY', KEYS[KEY.charges], ARGV[ARG.ticket], 1)
end
raw = cjson.encode(record)
redis.call('HSET', KEYS[KEY.intents], ARGV[ARG.intent], raw)
return raw
