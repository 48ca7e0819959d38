-- uses: lib
-- Brings a product's terms in Redis to SQL's: initial stock (the difference goes to available),
-- sale window, per-user limit, price and the waiting room (on or off, its rate). Absolute values
-- under SQL's terms version: running it twice changes nothing, and terms older than the ones
-- Redis has are refused. The room is the sale's first bucket's: its call names the room's keys
-- and starts a new room when the room is switched on (see lib.lua's apply_room); a later
-- bucket's stock carries the room's flag and the epoch the first bucket answered.
-- KEY and ARG (read by name) are UpdateProductCall's (core/inventory/calls.py).
if redis.call('EXISTS', KEYS[KEY.stock]) == 0 then
  return 'missing'
end
local current = tonumber(redis.call('HGET', KEYS[KEY.stock], 'terms_version') or '0')
local given = tonumber(ARGV[ARG.terms_version])
if given < current then
  return 'stale'
end
local stored = redis.call('HMGET', KEYS[KEY.stock], 'initial', 'starts_ms', 'ends_ms',
  'max_per_user', 'price', 'currency', 'room')
local added = tonumber(ARGV[ARG.initial]) - tonumber(stored[1])
if added ~= 0 then
  redis.call('HINCRBY', KEYS[KEY.stock], 'initial', added)
  redis.call('HINCRBY', KEYS[KEY.stock], 'available', added)
  emit(KEYS[KEY.events], 'restock', '', added, '', now_ms())
end
local changed = added ~= 0 or stored[6] ~= ARGV[ARG.currency]
for i, name in ipairs({'starts_ms', 'ends_ms', 'max_per_user', 'price'}) do
  changed = changed or stored[i + 1] ~= ARGV[ARG[name]]
end
local epoch = ARGV[ARG.room_epoch]
if KEYS[KEY.room] then
  epoch = apply_room(room_keys(KEY.room), stored[7], ARGV[ARG.waiting_room],
    ARGV[ARG.admit_per_second], now_ms())
end
redis.call('HSET', KEYS[KEY.stock], 'starts_ms', ARGV[ARG.starts_ms], 'ends_ms', ARGV[ARG.ends_ms],
  'max_per_user', ARGV[ARG.max_per_user], 'price', ARGV[ARG.price], 'currency', ARGV[ARG.currency],
  'terms_version', given, 'room', ARGV[ARG.waiting_room], 'room_epoch', epoch)
if changed then
  redis.call('HINCRBY', KEYS[KEY.stock], 'version', 1)
end
return 'applied'
