-- uses: lib
-- Brings a product's terms in Redis to SQL's: initial stock (the difference goes to available),
-- sale window, per-user limit, price and the waiting room (on or off, its rate). Absolute values
-- under SQL's terms version: running it twice changes nothing, and terms older than the ones
-- Redis has are refused. The room is the sale's first bucket's: its call names the room's keys
-- and starts a new room when the room is switched on (see lib.lua's apply_room); a later
-- bucket's stock carries the room's flag and the epoch the first bucket answered.
-- KEYS: stock, events, and for the first bucket: room, queue, early, admits
-- ARGV: initial, starts_ms, ends_ms, max_per_user, price, terms_version, currency, room ('1' or
--       '0'), admit_per_second, the room's epoch (a later bucket's; '' while unknown: no pass
--       buys there until the first bucket's is known)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'missing'
end
local current = tonumber(redis.call('HGET', KEYS[1], 'terms_version') or '0')
local given = tonumber(ARGV[6])
if given < current then
  return 'stale'
end
local stored = redis.call('HMGET', KEYS[1], 'initial', 'starts_ms', 'ends_ms', 'max_per_user', 'price',
  'currency', 'room')
local added = tonumber(ARGV[1]) - tonumber(stored[1])
if added ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'initial', added)
  redis.call('HINCRBY', KEYS[1], 'available', added)
  emit(KEYS[2], 'restock', '', added, '', now_ms())
end
local changed = added ~= 0 or stored[6] ~= ARGV[7]
for i = 2, 5 do
  changed = changed or stored[i] ~= ARGV[i]
end
local epoch = ARGV[10]
if #KEYS > 2 then
  epoch = apply_room(room_keys(3), stored[7], ARGV[8], ARGV[9], now_ms())
end
redis.call('HSET', KEYS[1], 'starts_ms', ARGV[2], 'ends_ms', ARGV[3], 'max_per_user', ARGV[4],
  'price', ARGV[5], 'currency', ARGV[7], 'terms_version', given, 'room', ARGV[8],
  'room_epoch', epoch)
if changed then
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return 'applied'
