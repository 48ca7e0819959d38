-- Shared helpers, prepended to the scripts whose first line is '-- uses: lib' when they are loaded.
-- Hold records are JSON in the product's holds hash, under the short field names HOLD maps
-- (core.inventory.hold.HOLD_FIELDS). A seated product's seats hash has each seat's state: 'f'
-- free, 'h:<ticket>' held, 's:<ticket>' sold.
-- STATUS (every order status), OPEN (the open ones), OUTCOME (reserve's answers) and HOLD are
-- generated from Python's definitions and prepended to every script (core/scripts.py).

-- Redis' own clock: every process sees the same deadlines and sale windows, whatever its clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The hold's record and its raw JSON, or nil and the reply to give when stock or hold is missing.
local function load_hold(stock_key, holds_key, ticket)
  if redis.call('EXISTS', stock_key) == 0 then
    return nil, {'unavailable', ''}
  end
  local raw = redis.call('HGET', holds_key, ticket)
  if not raw then
    return nil, {'missing', ''}
  end
  return cjson.decode(raw), raw
end

local function emit(events_key, action, ticket, qty, user, now)
  redis.call('XADD', events_key, 'MAXLEN', '~', 100000, '*',
    'action', action, 'ticket', ticket, 'quantity', qty, 'user', user, 'at', now)
end

-- A seated product's seat keys, from KEYS[first]: the states hash (seat -> 'f', 'h:<ticket>' or
-- 's:<ticket>'), the ranks hash (seat -> score: its section's place, then its rank) and the free
-- seats, a sorted set by score (best available reads it in order).
local function seat_keys(first)
  return {states = KEYS[first], ranks = KEYS[first + 1], free = KEYS[first + 2]}
end

-- Moves the seats a ticket has from `from` ('h' or 's') to `to` ('f', 'h' or 's'). A seat that is
-- not the ticket's stays as it is: a seat Redis gave another ticket is never taken from it.
local function move_seats(seat, ticket, labels, from, to)
  if not labels then
    return
  end
  local mine = from .. ':' .. ticket
  local value = to == 'f' and 'f' or (to .. ':' .. ticket)
  for _, label in ipairs(labels) do
    if redis.call('HGET', seat.states, label) == mine then
      redis.call('HSET', seat.states, label, value)
      if to == 'f' then
        redis.call('ZADD', seat.free, redis.call('HGET', seat.ranks, label), label)
      end
    end
  end
end

local function return_to_stock(stock_key, users_key, seat, hold)
  redis.call('HINCRBY', stock_key, 'available', hold.q)
  redis.call('HINCRBY', stock_key, 'held', -hold.q)
  if redis.call('HINCRBY', users_key, hold.u, -hold.q) <= 0 then
    redis.call('HDEL', users_key, hold.u)
  end
  move_seats(seat, hold.t, hold.st, 'h', 'f')
end

-- Releases holds past their deadline. A settler paying for a hold keeps it out of reach by its
-- lease (begin_settlement moves the hold's score in the deadlines set past the payment), and
-- finish_hold refuses to move a hold that was released meanwhile, so no lock is looked at here.
local function reclaim_expired(stock_key, holds_key, deadlines_key, users_key, events_key, seat,
                               now, limit)
  local due = redis.call('ZRANGEBYSCORE', deadlines_key, '-inf', now, 'LIMIT', 0, limit)
  local freed = 0
  for _, ticket in ipairs(due) do
    redis.call('ZREM', deadlines_key, ticket)
    local raw = redis.call('HGET', holds_key, ticket)
    if raw then
      local hold = cjson.decode(raw)
      if OPEN[hold.s] then
        hold.s = STATUS.expired
        hold.r = 'hold_expired'
        hold.m = now
        redis.call('HSET', holds_key, ticket, cjson.encode(hold))
        return_to_stock(stock_key, users_key, seat, hold)
        emit(events_key, 'expire', ticket, hold.q, hold.u, now)
        freed = freed + hold.q
      end
    end
  end
  if freed > 0 then
    redis.call('HINCRBY', stock_key, 'version', 1)
  end
  return freed
end

-- A sale's waiting room, from KEYS[first]: the room hash, the queue (buyer -> position), the
-- buyers who came before the opening, and the admissions stream.
local function room_keys(first)
  return {room = KEYS[first], queue = KEYS[first + 1], early = KEYS[first + 2],
          admits = KEYS[first + 3]}
end

-- A new room: its counters, places and admissions start empty under a new epoch (Redis' clock),
-- so the passes of an earlier room, or of a sale without one, buy no more (reserve.lua).
local function start_room(q, rate, now)
  redis.call('DEL', q.room, q.queue, q.early, q.admits)
  redis.call('HSET', q.room, 'on', '1', 'rate', rate, 'epoch', now)
end

-- The sale's room switched on or off at `rate`, from the sale's first bucket (whose keys hold
-- the room): a room switched on, or one Redis lost, starts anew. Answers the room's epoch.
local function apply_room(q, was_on, on, rate, now)
  if on == '1' and (was_on ~= '1' or redis.call('HEXISTS', q.room, 'epoch') == 0) then
    start_room(q, rate, now)
  elseif redis.call('EXISTS', q.room) == 1 then
    redis.call('HSET', q.room, 'on', on, 'rate', rate)
  end
  return redis.call('HGET', q.room, 'epoch') or ''
end

-- The sale's stock fields a room call needs (starts_ms, the room flag, then `more`), or the
-- answer to give at once: unavailable (no stock, or a room Redis lost) or open (no room).
local function enter_room(q, stock_key, more)
  local stock = redis.call('HMGET', stock_key, 'starts_ms', 'room', unpack(more))
  if not stock[1] then
    return nil, {'unavailable'}
  end
  if stock[2] ~= '1' then
    return nil, {'open'}
  end
  if redis.call('EXISTS', q.room) == 0 then
    return nil, {'unavailable'}
  end
  return stock
end

-- A split product's room counts every bucket's units: the other buckets' available and held, as
-- the caller read them ('available:held'; '' for a product of one bucket), added to this one's.
local function with_other_buckets(stock, others)
  local available, held = string.match(others or '', '^(%-?%d+):(%-?%d+)$')
  if available then
    stock[3] = tostring(tonumber(stock[3]) + tonumber(available))
    stock[4] = tostring(tonumber(stock[4]) + tonumber(held))
  end
  return stock
end

-- xorshift32: the opening's draw, reproducible from the seed the room records.
local function draw_order(buyers, seed)
  local state = seed
  local function next_random(n)
    state = bit.bxor(state, bit.lshift(state, 13))
    state = bit.bxor(state, bit.rshift(state, 17))
    state = bit.bxor(state, bit.lshift(state, 5))
    return (state % n + n) % n + 1
  end
  for i = #buyers, 2, -1 do
    local j = next_random(i)
    buyers[i], buyers[j] = buyers[j], buyers[i]
  end
  return buyers
end

-- At the opening, once: the buyers who came early get the first places in a random order (their
-- ids sorted, then shuffled with a seed drawn from the clock and recorded).
local function open_room(q, opens, now)
  if redis.call('HGET', q.room, 'drawn') == '1' or now < opens then
    return
  end
  local buyers = redis.call('SMEMBERS', q.early)
  table.sort(buyers)
  local seed = tonumber(redis.call('HGET', q.room, 'seed') or '0')
  if seed == 0 then
    seed = now % 2147483647 + 1
  end
  local first = tonumber(redis.call('HGET', q.room, 'next') or '0')
  for i, buyer in ipairs(draw_order(buyers, seed)) do
    redis.call('ZADD', q.queue, 'NX', first + i, buyer)
  end
  redis.call('HSET', q.room, 'drawn', '1', 'seed', seed, 'next', first + #buyers, 'admit_ms', now)
  redis.call('DEL', q.early)
end

-- Admits the next places at the room's rate, each at its own moment (admit_ms moves by one
-- interval a place), never ahead of the clock: however many processes ask, and however late.
local function advance_room(q, now)
  local room = redis.call('HMGET', q.room, 'rate', 'next', 'served', 'admit_ms')
  local rate, last = tonumber(room[1] or '0'), tonumber(room[2] or '0')
  local served, at = tonumber(room[3] or '0'), tonumber(room[4] or '0')
  if rate <= 0 or served >= last then
    return served, rate
  end
  local step = 1000 / rate
  while served < last and at + step <= now do
    served = served + 1
    at = at + step
    redis.call('XADD', q.admits, 'MAXLEN', '~', 100000, '*', 'position', served, 'at',
      math.floor(at))
  end
  redis.call('HSET', q.room, 'served', served, 'admit_ms', at)
  return served, rate
end

-- The room's board after admitting what the clock allows: {'board', starts_ms, served, rate,
-- available, held, epoch, drawn ('1' once the opening's draw is done), early (buyers waiting for
-- the draw)}; `stock` is enter_room's with 'available', 'held'. Nobody is admitted
-- while nothing is left to buy, and that time is not owed afterwards: the admission clock starts
-- again from now when units come back (no burst of admissions for the time spent sold out).
local function room_board(q, stock, now)
  open_room(q, tonumber(stock[1]), now)
  local available, held = tonumber(stock[3]), tonumber(stock[4])
  local served, rate
  if available > 0 then
    served, rate = advance_room(q, now)
  else
    redis.call('HSET', q.room, 'admit_ms', now)
    local room = redis.call('HMGET', q.room, 'served', 'rate')
    served, rate = tonumber(room[1] or '0'), tonumber(room[2] or '0')
  end
  local room = redis.call('HMGET', q.room, 'epoch', 'drawn')
  return {'board', stock[1], served, rate, available, held, room[1] or '', room[2] or '0',
    redis.call('SCARD', q.early)}
end

-- The buyer's place in the room: its position, or 'waiting' (came before the opening's draw),
-- or 'not_joined'.
local function buyer_place(q, buyer)
  local position = redis.call('ZSCORE', q.queue, buyer)
  if position then
    return position
  end
  return redis.call('SISMEMBER', q.early, buyer) == 1 and 'waiting' or 'not_joined'
end
