-- A ticket as Redis knows it, in one command: its open hold, or its final state kept a while
-- after settlement.
-- KEYS: holds, final status key
-- ARGV: ticket
return redis.call('HGET', KEYS[1], ARGV[1]) or redis.call('GET', KEYS[2])
