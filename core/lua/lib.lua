-- Shared helpers, prepended to the scripts that use them when they are loaded.
-- Hold records are JSON in the product's holds hash: t ticket, u user, q quantity, a amount,
-- d deadline (ms), s status, r reason, pm payment method, cur currency, cs client secret (while the
-- buyer must authenticate), k idempotency key, c created (ms), m modified (ms), st the seats of a
-- seated product's hold. A seated product's seats hash has each seat's state: 'f' free,
-- 'h:<ticket>' held, 's:<ticket>' sold.
-- The open statuses: the same set as core.tickets.status.OPEN_STATUSES (a test compares them).
local OPEN = {reserved = true, processing = true, requires_action = true}

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
        hold.s = 'expired'
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
