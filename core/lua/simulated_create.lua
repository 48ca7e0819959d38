-- The simulated provider creates an intent once per idempotency key (the ticket id).
-- KEYS: idempotency hash, intents hash
-- ARGV: ticket, intent_id, record_json
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return redis.call('HGET', KEYS[2], redis.call('HGET', KEYS[1], ARGV[1]))
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return ARGV[3]
