-- Drops a settled hold and its stream entry once SQL holds its final state, keeping the final
-- state a while under its own key so that buyers polling the ticket are answered from Redis.
-- While the stock key is missing (a rebuild from SQL is due), the hold stays, so the rebuild
-- cannot take the ticket for an open order that SQL has not yet seen settled; the next delivery
-- forgets it.
-- KEYS: stock, holds, settle stream, final status key
-- ARGV: ticket, entry_id ('' = none), group, final status ('' = none), reason, ttl_seconds,
--       payment status ('' = unknown)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if raw and ARGV[4] ~= '' then
  local hold = cjson.decode(raw)
  hold.s = ARGV[4]
  if ARGV[5] ~= '' then
    hold.r = ARGV[5]
  end
  hold.cs = nil
  if ARGV[7] ~= '' then
    hold.ps = ARGV[7]
  end
  redis.call('SET', KEYS[4], cjson.encode(hold), 'EX', tonumber(ARGV[6]))
end
-- The hold leaves the snapshot a reconciliation compares with SQL: the figures' version moves.
if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[3], ARGV[2])
  redis.call('XDEL', KEYS[3], ARGV[2])
end
return 1
