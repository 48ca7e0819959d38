-- A ticket as Redis knows it, in one command: its open hold, or its final state kept a while
-- after settlement.
-- KEY and ARG (read by name) are TicketViewCall's (core/inventory/calls.py).
return redis.call('HGET', KEYS[KEY.holds], ARGV[ARG.ticket]) or redis.call('GET', KEYS[KEY.final])
