-- The simulated provider creates an intent once per idempotency key (the ticket id).
-- KEY and ARG (read by name) are SimulatedCreateCall's (core/payments/simulated.py).
if redis.call('HSETNX', KEYS[KEY.idempotency], ARGV[ARG.ticket], ARGV[ARG.intent]) == 0 then
  local earlier = redis.call('HGET', KEYS[KEY.idempotency], ARGV[ARG.ticket])
  return redis.call('HGET', KEYS[KEY.intents], earlier)
end
redis.call('HSET', KEYS[KEY.intents], ARGV[ARG.intent], ARGV[ARG.record])
return ARGV[ARG.record]
