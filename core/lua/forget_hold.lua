-- Drops a settled hold and its stream entry once SQL holds its final state. While the stock key
-- is missing (a rebuild from SQL is due), the hold stays, so the rebuild cannot take the ticket for
-- an open order that SQL has not yet seen settled; the next delivery forgets it.
-- KEYS: stock, holds, settle stream
-- ARGV: ticket, entry_id ('' = none), group
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[3], ARGV[2])
  redis.call('XDEL', KEYS[3], ARGV[2])
end
return 1
