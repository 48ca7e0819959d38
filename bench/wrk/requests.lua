-- One request per token, each token used once (a buyer buys once), then the thread stops.
-- Environment: WRK_METHOD, WRK_PATHS (file: one path per line, paired with WRK_TOKENS' lines),
-- WRK_TOKENS (file: one bearer token per line), WRK_BODY (request body, may be empty),
-- WRK_BODIES (optional file: one body per line, paired with the tokens as the paths are).
-- With WRK_IDLE_MS, a thread whose buyers have all been sent waits for all their answers,
-- asking /health every WRK_IDLE_MS ms meanwhile, before it stops; it then creates the file
-- WRK_DONE.<thread>, so that the caller can end wrk (SIGINT) instead of waiting out its duration.
-- The report also gives the first purchase's sending and the last answer's arrival (wall clock,
-- in microseconds, as the database records its times) and 4xx/5xx answers by their "error".
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } wrk_timespec;
int clock_gettime(int clock, wrk_timespec *ts);
]]
local clock = ffi.new("wrk_timespec")

local function now_us()
  ffi.C.clock_gettime(0, clock) -- CLOCK_REALTIME
  return tonumber(clock.tv_sec) * 1e6 + tonumber(clock.tv_nsec) / 1e3
end

local threads = {}
local counter = 1

local function lines(path)
  local out = {}
  for line in io.lines(path) do
    out[#out + 1] = line
  end
  return out
end

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  tokens = lines(os.getenv("WRK_TOKENS"))
  paths = lines(os.getenv("WRK_PATHS"))
  bodies = os.getenv("WRK_BODIES") and lines(os.getenv("WRK_BODIES")) or nil
  method = os.getenv("WRK_METHOD")
  body = os.getenv("WRK_BODY")
  if body == "" then body = nil end
  nthreads = tonumber(os.getenv("WRK_THREADS"))
  reuse = os.getenv("WRK_REUSE") == "1"
  idle_ms = tonumber(os.getenv("WRK_IDLE_MS") or "")
  done_file = os.getenv("WRK_DONE")
  index = id
  -- wrk calls the first thread's request() once before the run, to check the request it makes:
  -- that call must not use up a buyer (who would then never be asked, nor answered).
  checking = id == 1
  codes = {}
  reasons = {}
  sent = 0
  answered = 0
  first_us = 0
  last_us = 0
  exhausted = false
end

if os.getenv("WRK_IDLE_MS") then
  -- Only then: with a delay() wrk puts every request behind a timer, even of 0 ms.
  function delay()
    if not reuse and index > #tokens then
      return idle_ms
    end
    return 0
  end
end

function request()
  if checking then
    checking = false
    return wrk.format("GET", "/health")
  end
  if index > #tokens then
    if not reuse then
      -- This thread's buyers have all bought: idle on a cheap page until response() stops it.
      exhausted = true
      return wrk.format("GET", "/health")
    end
    index = ((index - 1) % #tokens) + 1
  end
  local headers = {["Authorization"] = "Bearer " .. tokens[index],
                   ["Content-Type"] = "application/json"}
  local path = paths[((index - 1) % #paths) + 1]
  local payload = bodies and bodies[((index - 1) % #bodies) + 1] or body
  index = index + nthreads
  sent = sent + 1
  if first_us == 0 then first_us = now_us() end
  return wrk.format(method, path, headers, payload)
end

function response(status, headers, body)
  if exhausted and body and string.find(body, '"checks"', 1, true) then
    if idle_ms and answered < sent then
      return -- an idle request's answer: some buyers' answers are still on their way
    end
    if done_file then
      io.open(done_file .. "." .. id, "w"):close()
    end
    wrk.thread:stop()  -- the answer to an idle /health request: every buyer was answered
    return
  end
  answered = answered + 1
  last_us = now_us()
  codes[status] = (codes[status] or 0) + 1
  if status >= 400 and body then
    local reason = string.match(body, '"error"%s*:%s*"([%w_]+)"')
    if reason then
      local key = status .. " " .. reason
      reasons[key] = (reasons[key] or 0) + 1
    end
  end
end

local function sums(name)
  local total = {}
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get(name)) do
      total[key] = (total[key] or 0) + n
    end
  end
  local parts = {}
  for key, n in pairs(total) do
    parts[#parts + 1] = string.format('"%s": %d', key, n)
  end
  return table.concat(parts, ", ")
end

function done(summary, latency, requests)
  local first, last = 0, 0
  for _, thread in ipairs(threads) do
    local f, l = thread:get("first_us"), thread:get("last_us")
    if f > 0 and (first == 0 or f < first) then first = f end
    if l > last then last = l end
  end
  io.write(string.format(
    'WRK_JSON {"duration_us": %d, "requests": %d, "errors": %d, "codes": {%s}, ' ..
    '"reasons": {%s}, "first_us": %.0f, "last_us": %.0f, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.duration, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.status + summary.errors.timeout,
    sums("codes"), sums("reasons"), first, last,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
