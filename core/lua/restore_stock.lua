-- uses: lib
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
-- KEYS and ARGV are read by name (KEY.x, ARG.x): their order is RestoreCall's
-- (core/inventory/calls.py).
-- KEY: stock, holds, deadlines, users, settle stream, events, idempotency, returns, rebuild lease,
--       seats, seat ranks, free seats, claims, passes used, and for the first bucket: room,
--       queue, early, admits
-- ARG: initial, sold, max_per_user, starts_ms, ends_ms, price, currency, sql_holds_json,
--       user_quantities_json, idempotency_json ({"user:key": ticket}),
--       terms_version, settle group, refunded_marks_json ([ticket, ...]), lease token,
--       seats_json ({"A-1-1": "f" | "h:<ticket>" | "s:<ticket>"}, '' for no seats),
--       sections_json ({"A": [price, position, longest row]}), ranks_json ({"A-1-1": score}),
--       waiting room ('1' or '0'), admit_per_second (the room comes with the stock: a purchase
--       never meets a stock without its room), the product's number of buckets (each bucket's
--       stock is created by its own call, with its share of the units), claims_json ({ticket:
--       {u, q, d, s, p}}: a split product's bucket's claims, replacing what survived), the
--       room's epoch (a later bucket's, as the first bucket has it), passes_used_json ([pass])
if redis.call('EXISTS', KEYS[KEY.stock]) == 1 then
  return {'exists'}
end
if redis.call('GET', KEYS[KEY.rebuild_lease]) ~= ARGV[ARG.lease] then
  return {'stale'}
end
redis.call('DEL', KEYS[KEY.rebuild_lease])
local now = now_ms()
local initial, sold = tonumber(ARGV[ARG.initial]), tonumber(ARGV[ARG.sold])
redis.pcall('XGROUP', 'CREATE', KEYS[KEY.settle], ARGV[ARG.settle_group], '0', 'MKSTREAM')
for _, hold in ipairs(cjson.decode(ARGV[ARG.holds])) do
  if redis.call('HEXISTS', KEYS[KEY.holds], hold.t) == 0 then
    redis.call('HSET', KEYS[KEY.holds], hold.t, cjson.encode(hold))
    redis.call('ZADD', KEYS[KEY.deadlines], hold.d, hold.t)
    redis.call('XADD', KEYS[KEY.settle], '*', 'ticket', hold.t)
  end
end
local held = 0
local seats = ARGV[ARG.seat_states] ~= '' and cjson.decode(ARGV[ARG.seat_states]) or nil
local entries = redis.call('HGETALL', KEYS[KEY.holds])
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
  local seat = seat_keys(KEY.seats)
  local ranks = cjson.decode(ARGV[ARG.ranks])
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
  for section, terms in pairs(cjson.decode(ARGV[ARG.sections])) do
    redis.call('HSET', KEYS[KEY.stock], 'p:' .. section, terms[1], 's:' .. section, terms[2],
      'w:' .. section, terms[3])
  end
end
redis.call('DEL', KEYS[KEY.users])
for user, qty in pairs(cjson.decode(ARGV[ARG.user_quantities])) do
  redis.call('HSET', KEYS[KEY.users], user, qty)
end
redis.call('DEL', KEYS[KEY.claims])
for ticket, claim in pairs(cjson.decode(ARGV[ARG.claims])) do
  redis.call('HSET', KEYS[KEY.claims], ticket, cjson.encode(claim))
end
for _, pass in ipairs(cjson.decode(ARGV[ARG.passes_used])) do
  redis.call('SADD', KEYS[KEY.passes_used], pass)
end
for key, ticket in pairs(cjson.decode(ARGV[ARG.idempotency])) do
  redis.call('HSETNX', KEYS[KEY.idempotency], key, ticket)
end
for _, ticket in ipairs(cjson.decode(ARGV[ARG.refunded_marks])) do
  redis.call('HDEL', KEYS[KEY.returns], ticket)
end
local available = initial - sold - held
local epoch = ARGV[ARG.room_epoch]
if #KEYS >= KEY.room then
  local q = room_keys(KEY.room)
  epoch = apply_room(q, redis.call('HGET', q.room, 'on'), ARGV[ARG.waiting_room], ARGV[ARG.admit_per_second], now)
end
redis.call('HSET', KEYS[KEY.stock], 'initial', initial, 'available', available, 'held', held,
  'sold', sold, 'max_per_user', ARGV[ARG.max_per_user], 'starts_ms', ARGV[ARG.starts_ms], 'ends_ms', ARGV[ARG.ends_ms],
  'price', ARGV[ARG.price], 'currency', ARGV[ARG.currency], 'terms_version', ARGV[ARG.terms_version], 'version', now,
  'seated', seated, 'room', ARGV[ARG.waiting_room], 'room_epoch', epoch, 'buckets', ARGV[ARG.buckets])
emit(KEYS[KEY.events], 'restore', '', available, '', now)
return {'created', tostring(available)}
