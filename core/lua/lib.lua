-- Shared helpers, prepended to the scripts that use them when they are loaded.
-- Hold records are JSON in the product's holds hash: t ticket, u user, q quantity, a amount,
-- d deadline (ms), s status, r reason, pm payment method, cur currency, cs client secret (while the
-- buyer must authenticate), c created (ms), m modified (ms).
local OPEN = {reserved = true, processing = true, requires_action = true}

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

local function return_to_stock(stock_key, users_key, hold)
  redis.call('HINCRBY', stock_key, 'available', hold.q)
  redis.call('HINCRBY', stock_key, 'held', -hold.q)
  if redis.call('HINCRBY', users_key, hold.u, -hold.q) <= 0 then
    redis.call('HDEL', users_key, hold.u)
  end
end

-- Releases holds past their deadline whose ticket is not locked by a settler right now.
local function reclaim_expired(stock_key, holds_key, deadlines_key, users_key, events_key,
                               lock_prefix, now, limit)
  local due = redis.call('ZRANGEBYSCORE', deadlines_key, '-inf', now, 'LIMIT', 0, limit)
  local freed = 0
  for _, ticket in ipairs(due) do
    if redis.call('EXISTS', lock_prefix .. ticket) == 0 then
      redis.call('ZREM', deadlines_key, ticket)
      local raw = redis.call('HGET', holds_key, ticket)
      if raw then
        local hold = cjson.decode(raw)
        if OPEN[hold.s] then
          hold.s = 'expired'
          hold.r = 'hold_expired'
          hold.m = now
          redis.call('HSET', holds_key, ticket, cjson.encode(hold))
          return_to_stock(stock_key, users_key, hold)
          emit(events_key, 'expire', ticket, hold.q, hold.u, now)
          freed = freed + hold.q
        end
      end
    end
  end
  if freed > 0 then
    redis.call('HINCRBY', stock_key, 'version', 1)
  end
  return freed
end
