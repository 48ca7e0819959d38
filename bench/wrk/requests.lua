-- One request per token, each token used once (a buyer buys once), then the thread stops.
-- Environment: WRK_METHOD, WRK_PATHS (file: one path per line, paired with WRK_TOKENS' lines),
-- WRK_TOKENS (file: one bearer token per line), WRK_BODY (request body, may be empty).
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
  method = os.getenv("WRK_METHOD")
  body = os.getenv("WRK_BODY")
  if body == "" then body = nil end
  nthreads = tonumber(os.getenv("WRK_THREADS"))
  reuse = os.getenv("WRK_REUSE") == "1"
  index = id
  codes = {}
  sent = 0
  exhausted = false
end

function request()
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
  index = index + nthreads
  sent = sent + 1
  return wrk.format(method, path, headers, body)
end

function response(status, headers, body)
  if exhausted and body and string.find(body, '"checks"', 1, true) then
    wrk.thread:stop()  -- the answer to an idle /health request: every buyer was answered
    return
  end
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("codes")
    for status, n in pairs(c) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  io.write(string.format(
    'WRK_JSON {"duration_us": %d, "requests": %d, "errors": %d, "codes": {%s}, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.duration, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.status + summary.errors.timeout,
    table.concat(parts, ", "),
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
