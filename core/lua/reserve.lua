-- uses: lib
-- The whole purchase decision in one atomic call.
-- A seated product's purchase names its seats (ARG.seats): all of them are held, or none; or it
-- asks for the best available seats of a section (ARG.best), adjacent in one row if `together`.
-- With the sale's waiting room on, the buyer's pass (verified by the caller) buys once, and only
-- in the room it was given in: its id (product:buyer:epoch:place) names the room's epoch, which
-- the stock carries ('room_epoch'); a pass of an earlier room, or of the sale without one, is
-- stale. The hold keeps the pass (qp), so SQL's order records its use.
-- KEYS and ARGV are read by name (KEY.x, ARG.x): their order is ReserveCall's
-- (core/inventory/calls.py).
-- KEY: stock, holds, deadlines, users, idempotency, settle stream, events, the buyer's purchase
--       rate counter, seats, seat ranks, free seats, passes used, claims
-- ARG: user, quantity, ticket, hold_ms, idempotency_key ('' = none), payment_method,
--       reclaim_limit, rate_limit (purchases per window, 0 = none), rate_window_ms,
--       seats (a JSON list of seat ids, or ''), best ({"section", "together"}, or ''),
--       the waiting room pass's id ('' = none), the purchase request's id ('' = none: the
--       settlement's log lines name it, so one grep finds the ticket's life from request on),
--       the product's number of buckets as the caller knows it, the bucket's place in the
--       buyer's order ('' for a product of one bucket, 'home' for the buyer's own bucket, 'away'
--       for a later one), how long an open claim lasts (ms), and how many seats a search for
--       seats together may look at
-- A product split across buckets: every bucket is a stock of its own, tried in the buyer's order
-- (core.keys.bucket_order). A bucket that sends a purchase with an idempotency key on marks the
-- key '>' (moved on; the buyer's own bucket adds the ticket whose claim counts the purchase), so a
-- retry of it passes this bucket too, even with units back, and ends where the first attempt
-- did: one ticket for one key, whichever bucket has it.
-- The buyer's units of a split product are counted in the buyer's own bucket only, wherever they
-- are held: the own bucket, sold out, counts the purchase before it moves on (a claim, under the
-- ticket's id there: answer 'sold_out', remaining, 'claimed'; for a keyed retry passing it,
-- 'moved', the claim's ticket, and 'claimed' if this call made the claim), and a later bucket
-- neither checks nor counts the per-user limit. The claim ends with the purchase's outcome
-- (core.inventory.Inventory.resolve_claims).
-- A section's free seats, best first: its scores run from position * SECTION to the next one.
local SECTION = 1e12
local SCAN = 100 -- free seats read per step of a best-available search

local function section_range(position)
  return string.format('%.0f', position * SECTION), '(' .. string.format('%.0f', (position + 1) * SECTION)
end

local function best_seats(seat, position, qty)
  local low, high = section_range(position)
  local found = redis.call('ZRANGEBYSCORE', seat.free, low, high, 'LIMIT', 0, qty)
  return #found == qty and found or nil
end

-- The labels of a row's seats numbered first..last.
local function row_labels(row, first, last)
  local labels = {}
  for n = first, last do
    labels[#labels + 1] = row .. '-' .. n
  end
  return labels
end

-- Of the blocks of qty seats within labels[from..to] (all free), the one whose ranks add up
-- lowest; the leftmost of equals.
local function lowest_block(seat, labels, from, to, qty)
  local ranks = redis.call('HMGET', seat.ranks, unpack(labels, from, to))
  local chosen, lowest
  for first = 1, #ranks - qty + 1 do
    local total = 0
    for i = first, first + qty - 1 do
      total = total + tonumber(ranks[i])
    end
    if not lowest or total < lowest then
      chosen, lowest = first, total
    end
  end
  return {unpack(labels, from + chosen - 1, from + chosen + qty - 2)}
end

-- The run of free seats in `states` around index `at` (free): its first and last index.
local function run_around(states, at)
  local from, to = at, at
  while from > 1 and states[from - 1] == 'f' do
    from = from - 1
  end
  while to < #states and states[to + 1] == 'f' do
    to = to + 1
  end
  return from, to
end

-- Marks the free seats of every run shorter than qty that ends inside `labels` (their states):
-- none of them is in a block. A run at an edge may go on past it, but for seat 1's side.
local function mark_short_runs(labels, states, from_seat_1, qty, too_short)
  local start
  for i = 1, #labels do
    if states[i] == 'f' then
      start = start or i
    elseif start then
      if (start > 1 or from_seat_1) and i - start < qty then
        for j = start, i - 1 do
          too_short[labels[j]] = true
        end
      end
      start = nil
    end
  end
end

-- The block of qty free seats side by side in one row holding the best free seat that is in any
-- such block; of the blocks holding it, the one whose ranks add up lowest. Neighbours are the
-- seat numbers either side (A-12-7: A-12-6, A-12-8); a number missing from the map is an aisle.
-- A candidate's neighbours within qty - 1 seats are read in one call, which also rules out the
-- seats of every shorter run it sees whole. The search looks at `budget` seats at most (free
-- seats read and neighbours): past that it gives up as if no block were free, so that its time
-- in Redis stays small whatever the hall.
local function best_together(seat, position, qty, budget)
  local low, high = section_range(position)
  local first = redis.call('ZCOUNT', seat.free, '-inf', '(' .. low)
  local count = redis.call('ZCOUNT', seat.free, low, high)
  local too_short = {} -- free seats in a run of fewer than qty
  local offset = 0
  while offset < count and count >= qty and budget > 0 do
    local size = math.min(SCAN, count - offset, budget)
    local batch = redis.call('ZRANGE', seat.free, first + offset, first + offset + size - 1)
    budget = budget - size
    for _, candidate in ipairs(batch) do
      if not too_short[candidate] then
        local row, number = string.match(candidate, '^(.*)%-(%d+)$')
        number = tonumber(number)
        local left = math.max(1, number - qty + 1)
        local labels = row_labels(row, left, number + qty - 1)
        budget = budget - #labels
        if budget < 0 then
          return nil
        end
        local states = redis.call('HMGET', seat.states, unpack(labels))
        local at = number - left + 1
        if states[at] == 'f' then
          local from, to = run_around(states, at)
          if to - from + 1 >= qty then
            return lowest_block(seat, labels, from, to, qty)
          end
        end
        mark_short_runs(labels, states, left == 1, qty, too_short)
      end
    end
    offset = offset + size
  end
  return nil
end

local now = now_ms()
local user = ARGV[ARG.user]
local qty = tonumber(ARGV[ARG.quantity])
local ticket = ARGV[ARG.ticket]
local idem = ARGV[ARG.idempotency_key]

local stock = redis.call('HMGET', KEYS[KEY.stock], 'available', 'max_per_user', 'starts_ms', 'ends_ms', 'price',
  'currency', 'seated', 'room', 'buckets', 'room_epoch')
if not stock[1] then
  return {OUTCOME.unavailable}
end
if (stock[9] or '1') ~= ARGV[ARG.buckets] then
  return {OUTCOME.buckets, stock[9] or '1'}
end
local place = ARGV[ARG.place]
-- The buyer's purchase rate on this product, a fixed window: every attempt counts.
local rate_limit = tonumber(ARGV[ARG.rate_limit])
if rate_limit > 0 then
  local attempts = redis.call('INCR', KEYS[KEY.purchase_rate])
  if attempts == 1 then
    redis.call('PEXPIRE', KEYS[KEY.purchase_rate], ARGV[ARG.rate_window_ms])
  end
  if attempts > rate_limit then
    return {OUTCOME.rate_limited, tostring(redis.call('PTTL', KEYS[KEY.purchase_rate]))}
  end
end
local passed = false -- a keyed retry whose first attempt moved on from the buyer's own bucket
if idem ~= '' then
  local existing = redis.call('HGET', KEYS[KEY.idempotency], user .. ':' .. idem)
  if existing and string.sub(existing, 1, 1) == '>' then
    if place ~= 'home' then
      return {OUTCOME.moved}
    end
    -- The first attempt's claim still stands (open, or kept: it bought): the retry carries on
    -- under it. Gone (that purchase came to nothing, or was refunded): the retry claims anew.
    local first = string.sub(existing, 2)
    if first ~= '' and redis.call('HEXISTS', KEYS[KEY.claims], first) == 1 then
      return {OUTCOME.moved, first, ''}
    end
    passed = true
  elseif existing then
    return {OUTCOME.duplicate, existing, redis.call('HGET', KEYS[KEY.holds], existing) or ''}
  end
end
local starts, ends = tonumber(stock[3]), tonumber(stock[4])
if starts > 0 and now < starts then
  return {OUTCOME.sale_not_started}
end
if ends > 0 and now >= ends then
  return {OUTCOME.sale_ended}
end

local pass = ARGV[ARG.pass]
local room = stock[8] == '1' and place ~= 'away' -- a later bucket: the buyer's own checked it
if room then
  if pass == '' then
    return {OUTCOME.queue_pass_required}
  end
  local epoch = string.match(pass, '^%d+:%d+:(%d*):')
  if not epoch or epoch == '' or epoch ~= stock[10] then
    return {OUTCOME.queue_pass_stale}
  end
  if redis.call('SISMEMBER', KEYS[KEY.passes_used], pass) == 1 then
    return {OUTCOME.queue_pass_used}
  end
end

local seat = seat_keys(KEY.seats)
local seats = ARGV[ARG.seats] ~= '' and cjson.decode(ARGV[ARG.seats]) or nil
local best = ARGV[ARG.best] ~= '' and cjson.decode(ARGV[ARG.best]) or nil
if (stock[7] == '1') ~= (seats ~= nil or best ~= nil) then
  return {stock[7] == '1' and OUTCOME.seats_required or OUTCOME.not_seated}
end

local available = tonumber(stock[1]) +
  reclaim_expired(KEYS[KEY.stock], KEYS[KEY.holds], KEYS[KEY.deadlines], KEYS[KEY.users],
    KEYS[KEY.events], seat, now, tonumber(ARGV[ARG.reclaim_limit]))
local limit = tonumber(stock[2])
local bought = tonumber(redis.call('HGET', KEYS[KEY.users], user) or '0')
if limit > 0 and place ~= 'away' and bought + qty > limit then
  return {OUTCOME.per_user_limit, tostring(limit - bought)}
end
-- Seats are checked one by one below, naming the taken ones: free seats asked for are there.
if passed or (not seats and available < qty) then
  if place ~= '' and idem ~= '' then
    redis.call('HSET', KEYS[KEY.idempotency], user .. ':' .. idem, place == 'home' and '>' .. ticket or '>')
  end
  if place == 'home' then
    redis.call('HINCRBY', KEYS[KEY.users], user, qty)
    redis.call('HSET', KEYS[KEY.claims], ticket, cjson.encode(
      {u = user, q = qty, d = now + tonumber(ARGV[ARG.claim_ms]), s = 'open', p = room and pass or nil}))
    if room then
      redis.call('SADD', KEYS[KEY.passes_used], pass) -- the purchase's, until it comes to nothing
    end
    if passed then
      return {OUTCOME.moved, ticket, 'claimed'}
    end
    return {OUTCOME.sold_out, tostring(available), 'claimed'}
  end
  return {OUTCOME.sold_out, tostring(available)}
end
if best then
  local section = redis.call('HMGET', KEYS[KEY.stock], 's:' .. best.section, 'w:' .. best.section)
  local position, longest_row = section[1], tonumber(section[2] or qty)
  if not position then
    return {OUTCOME.unknown_section}
  end
  local chosen
  if best.together then
    if qty <= longest_row then -- else no row has that many seats side by side
      chosen = best_together(seat, tonumber(position), qty, tonumber(ARGV[ARG.together_search]))
    end
  else
    chosen = best_seats(seat, tonumber(position), qty)
  end
  if not chosen then
    return {best.together and OUTCOME.not_enough_adjacent or OUTCOME.not_enough_seats}
  end
  seats = chosen
end
local amount = qty * tonumber(stock[5])
if seats then
  local states = redis.call('HMGET', seat.states, unpack(seats))
  local unknown, taken, prices = {}, {}, {}
  for i = 1, #seats do
    if not states[i] then
      unknown[#unknown + 1] = seats[i]
    elseif states[i] ~= 'f' then
      taken[#taken + 1] = seats[i]
    end
  end
  if #unknown > 0 then
    return {OUTCOME.unknown_seats, cjson.encode(unknown)}
  end
  if #taken > 0 then
    return {OUTCOME.seats_unavailable, cjson.encode(taken)}
  end
  -- A seat's price is its section's: the stock hash keeps one 'p:<section>' field per section.
  for i = 1, #seats do
    prices[i] = 'p:' .. string.match(seats[i], '^[^-]+')
  end
  amount = 0
  for _, price in ipairs(redis.call('HMGET', KEYS[KEY.stock], unpack(prices))) do
    amount = amount + tonumber(price)
  end
end

local deadline = now + tonumber(ARGV[ARG.hold_ms])
local hold = {t = ticket, u = user, q = qty, a = amount, d = deadline,
              s = STATUS.reserved, pm = ARGV[ARG.payment_method], cur = stock[6], c = now, m = now, st = seats}
if idem ~= '' then
  hold.k = idem
end
if ARGV[ARG.request_id] ~= '' then
  hold.ri = ARGV[ARG.request_id]
end
if stock[8] == '1' and pass ~= '' then
  hold.qp = pass -- a later bucket's hold too: its buyer's own bucket checked the pass
end
local encoded = cjson.encode(hold)
redis.call('HINCRBY', KEYS[KEY.stock], 'available', -qty)
redis.call('HINCRBY', KEYS[KEY.stock], 'held', qty)
redis.call('HINCRBY', KEYS[KEY.stock], 'version', 1)
if place ~= 'away' then
  redis.call('HINCRBY', KEYS[KEY.users], user, qty)
end
redis.call('HSET', KEYS[KEY.holds], ticket, encoded)
redis.call('ZADD', KEYS[KEY.deadlines], deadline, ticket)
if seats then
  local held = {}
  for _, label in ipairs(seats) do
    held[#held + 1] = label
    held[#held + 1] = 'h:' .. ticket
  end
  redis.call('HSET', seat.states, unpack(held))
  redis.call('ZREM', seat.free, unpack(seats))
end
if idem ~= '' then
  redis.call('HSET', KEYS[KEY.idempotency], user .. ':' .. idem, ticket)
end
if room then
  redis.call('SADD', KEYS[KEY.passes_used], pass)
end
redis.call('XADD', KEYS[KEY.settle], '*', 'ticket', ticket)
emit(KEYS[KEY.events], 'reserve', ticket, qty, user, now)
return {OUTCOME.reserved, ticket, encoded}
