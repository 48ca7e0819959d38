-- First step of an admin's refund of a confirmed order: the ticket is marked as returning. Its
-- units stay sold until SQL says refunded (return_units.lua), and a reconciliation that reads
-- between the two steps counts them as sold on both sides.
-- KEY and ARG (read by name) are BeginReturnCall's (core/inventory/calls.py).
if redis.call('EXISTS', KEYS[KEY.stock]) == 0 then
  return 'unavailable'
end
local mark = {u = ARGV[ARG.user], q = tonumber(ARGV[ARG.quantity])}
if ARGV[ARG.seats] ~= '' then
  mark.st = cjson.decode(ARGV[ARG.seats])
end
if redis.call('HSETNX', KEYS[KEY.returns], ARGV[ARG.ticket], cjson.encode(mark)) == 1 then
  redis.call('HINCRBY', KEYS[KEY.stock], 'version', 1)
end
return 'marked'
