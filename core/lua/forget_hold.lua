-- Drops a settled hold and its stream entry once SQL holds its final state, keeping the final
-- state a while under its own key so that buyers polling the ticket are answered from Redis.
-- While the stock key is missing (a rebuild from SQL is due), the hold stays, so the rebuild
-- cannot take the ticket for an open order that SQL has not yet seen settled; the next delivery
-- forgets it.
-- KEY and ARG (read by name) are ForgetHoldCall's (core/inventory/calls.py).
if redis.call('EXISTS', KEYS[KEY.stock]) == 0 then
  return 0
end
local raw = redis.call('HGET', KEYS[KEY.holds], ARGV[ARG.ticket])
if raw and ARGV[ARG.status] ~= '' then
  local hold = cjson.decode(raw)
  hold.s = ARGV[ARG.status]
  if ARGV[ARG.reason] ~= '' then
    hold.r = ARGV[ARG.reason]
  end
  hold.cs = nil
  if ARGV[ARG.payment_status] ~= '' then
    hold.ps = ARGV[ARG.payment_status]
  end
  redis.call('SET', KEYS[KEY.final], cjson.encode(hold), 'EX', tonumber(ARGV[ARG.final_ttl]))
end
-- The hold leaves the snapshot a reconciliation compares with SQL: the figures' version moves.
if redis.call('HDEL', KEYS[KEY.holds], ARGV[ARG.ticket]) == 1 then
  redis.call('HINCRBY', KEYS[KEY.stock], 'version', 1)
end
if ARGV[ARG.entry_id] ~= '' then
  redis.call('XACK', KEYS[KEY.settle], ARGV[ARG.group], ARGV[ARG.entry_id])
  redis.call('XDEL', KEYS[KEY.settle], ARGV[ARG.entry_id])
end
return 1
