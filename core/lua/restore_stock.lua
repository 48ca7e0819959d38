-- Creates a product's stock from SQL figures (new product, or Redis lost the key), only if absent.
-- Open holds that SQL knows and Redis lost are recreated and queued for settlement again; held is
-- counted over every open hold, so holds that survived in Redis keep their units.
-- KEYS: stock, holds, deadlines, users, settle stream, events
-- ARGV: initial, sold, max_per_user, starts_ms, ends_ms, price, currency, sql_holds_json,
--       user_quantities_json, now_ms
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end
local now = tonumber(ARGV[10])
local initial, sold = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.pcall('XGROUP', 'CREATE', KEYS[5], 'settlers', '0', 'MKSTREAM')
for _, hold in ipairs(cjson.decode(ARGV[8])) do
  if redis.call('HEXISTS', KEYS[2], hold.t) == 0 then
    redis.call('HSET', KEYS[2], hold.t, cjson.encode(hold))
    redis.call('ZADD', KEYS[3], hold.d, hold.t)
    redis.call('XADD', KEYS[5], '*', 'ticket', hold.t)
  end
end
local held = 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local hold = cjson.decode(entries[i + 1])
  if OPEN[hold.s] then
    held = held + hold.q
  end
end
redis.call('DEL', KEYS[4])
for user, qty in pairs(cjson.decode(ARGV[9])) do
  redis.call('HSET', KEYS[4], user, qty)
end
local available = initial - sold - held
redis.call('HSET', KEYS[1], 'initial', initial, 'available', available, 'held', held,
  'sold', sold, 'max_per_user', ARGV[3], 'starts_ms', ARGV[4], 'ends_ms', ARGV[5],
  'price', ARGV[6], 'currency', ARGV[7], 'version', now)
emit(KEYS[6], 'restore', '', available, '', now)
return {'created', tostring(available)}
