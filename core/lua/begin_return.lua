-- First step of an admin's refund of a confirmed order: the ticket is marked as returning. Its
-- units stay sold until SQL says refunded (return_units.lua), and a reconciliation that reads
-- between the two steps counts them as sold on both sides.
-- KEYS: stock, returns
-- ARGV: ticket, user, quantity, seats (a JSON list of the order's seats; '' for none)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'unavailable'
end
local mark = {u = ARGV[2], q = tonumber(ARGV[3])}
if ARGV[4] ~= '' then
  mark.st = cjson.decode(ARGV[4])
end
if redis.call('HSETNX', KEYS[2], ARGV[1], cjson.encode(mark)) == 1 then
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return 'marked'
