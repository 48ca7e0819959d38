-- Creates a product's stock from SQL figures (new product, or Redis lost the key), only if absent.
-- Open holds that SQL knows and Redis lost are recreated with their own deadline and queued for
-- settlement again; held is counted over every open hold, so holds that survived in Redis keep
-- their units. Idempotency keys that SQL recorded are put back.
-- Refund marks whose refund SQL already recorded are dropped: SQL's sold figure has no units for them.
-- Only the rebuild holding the product's rebuild lease creates it, and releases the lease.
-- A seated product gets its seats too: each seat's state as SQL has it, but that a hold that
-- survived in Redis keeps its seats held; and each section's price.
-- The passes that bought (SQL's orders and what survived in Redis) are used again; the room is
-- the sale's first bucket's, as in update_product.lua: a room Redis lost starts anew, under a new
-- epoch, so a pass of the old one (whose places start again from 1) buys no more.
-- KEYS: stock, holds, deadlines, users, settle stream, events, idempotency, returns, rebuild lease,
--       seats, seat ranks, free seats, claims, passes used, and for the first bucket: room,
--       queue, early, admits
-- ARGV: initial, sold, max_per_user, starts_ms, ends_ms, price, currency, sql_holds_json,
--       user_quantities_json, idempotency_json ({"user:key": ticket}),
--       terms_version, settle group, refunded_marks_json ([ticket, ...]), lease token,
--       seats_json ({"A-1-1": "f" | "h:<ticket>" | "s:<ticket>"}, '' for no seats),
--       sections_json ({"A": [price, position, longest row]}), ranks_json ({"A-1-1": score}),
--       waiting room ('1' or '0'), admit_per_second (the room comes with the stock: a purchase
--       never meets a stock without its room), the product's number of buckets (each bucket's
--       stock is created by its own call, with its share of the units), claims_json ({ticket:
--       {u, q, d, s, p}}: a split product's bucket's claims, replacing what survived), the
--       room's epoch (a later bucket's, as the first bucket has it), passes_used_json ([pass])
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end
if redis.call('GET', KEYS[9]) ~= ARGV[14] then
  return {'stale'}
end
redis.call('DEL', KEYS[9])
local now = now_ms()
local initial, sold = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.pcall('XGROUP', 'CREATE', KEYS[5], ARGV[12], '0', 'MKSTREAM')
for _, hold in ipairs(cjson.decode(ARGV[8])) do
  if redis.call('HEXISTS', KEYS[2], hold.t) == 0 then
    redis.call('HSET', KEYS[2], hold.t, cjson.encode(hold))
    redis.call('ZADD', KEYS[3], hold.d, hold.t)
    redis.call('XADD', KEYS[5], '*', 'ticket', hold.t)
  end
end
local held = 0
local seats = ARGV[15] ~= '' and cjson.decode(ARGV[15]) or nil
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local hold = cjson.decode(entries[i + 1])
  if OPEN[hold.s] then
    held = held + hold.q
    if seats and hold.st then
      for _, label in ipairs(hold.st) do
        seats[label] = 'h:' .. hold.t
      end
    end
  end
end
local seated = seats and '1' or '0'
if seats then
  local seat = seat_keys(10)
  local ranks = cjson.decode(ARGV[17])
  redis.call('DEL', seat.states, seat.ranks, seat.free)
  local states, scores, free = {}, {}, {}
  local function flush(force)
    if #states >= 2000 or (force and #states > 0) then
      redis.call('HSET', seat.states, unpack(states))
      redis.call('HSET', seat.ranks, unpack(scores))
      states, scores = {}, {}
    end
    if #free >= 2000 or (force and #free > 0) then
      redis.call('ZADD', seat.free, unpack(free))
      free = {}
    end
  end
  for label, state in pairs(seats) do
    local score = string.format('%.0f', ranks[label])
    states[#states + 1], states[#states + 2] = label, state
    scores[#scores + 1], scores[#scores + 2] = label, score
    if state == 'f' then
      free[#free + 1], free[#free + 2] = score, label
    end
    flush(false)
  end
  flush(true)
  for section, terms in pairs(cjson.decode(ARGV[16])) do
    redis.call('HSET', KEYS[1], 'p:' .. section, terms[1], 's:' .. section, terms[2],
      'w:' .. section, terms[3])
  end
end
redis.call('DEL', KEYS[4])
for user, qty in pairs(cjson.decode(ARGV[9])) do
  redis.call('HSET', KEYS[4], user, qty)
end
redis.call('DEL', KEYS[13])
for ticket, claim in pairs(cjson.decode(ARGV[21])) do
  redis.call('HSET', KEYS[13], ticket, cjson.encode(claim))
end
for _, pass in ipairs(cjson.decode(ARGV[23])) do
  redis.call('SADD', KEYS[14], pass)
end
for key, ticket in pairs(cjson.decode(ARGV[10])) do
  redis.call('HSETNX', KEYS[7], key, ticket)
end
for _, ticket in ipairs(cjson.decode(ARGV[13])) do
  redis.call('HDEL', KEYS[8], ticket)
end
local available = initial - sold - held
local epoch = ARGV[22]
if #KEYS > 14 then
  local q = room_keys(15)
  epoch = apply_room(q, redis.call('HGET', q.room, 'on'), ARGV[18], ARGV[19], now)
end
redis.call('HSET', KEYS[1], 'initial', initial, 'available', available, 'held', held,
  'sold', sold, 'max_per_user', ARGV[3], 'starts_ms', ARGV[4], 'ends_ms', ARGV[5],
  'price', ARGV[6], 'currency', ARGV[7], 'terms_version', ARGV[11], 'version', now,
  'seated', seated, 'room', ARGV[18], 'room_epoch', epoch, 'buckets', ARGV[20])
emit(KEYS[6], 'restore', '', available, '', now)
return {'created', tostring(available)}
