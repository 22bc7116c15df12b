-- wrk script: POST /v1/events/track with the key in GAMIFY_KEY, spreading events over 1,000 users.
-- Every request is built once, in init, into a pool that request() walks: building each request
-- in Lua (string.format, wrk.format) cost wrk ~10 µs more per request than its static /healthz
-- request, on the same two cores as the gateway. The pool holds more requests than a thread
-- sends in a 15 s run, so messageIds stay distinct; TRACK_POOL sets its size.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("GAMIFY_KEY")

local pool = {}
local size = tonumber(os.getenv("TRACK_POOL") or "") or 200000
local next_index = 0

-- setup runs once per thread in the main state; init then runs in the thread's own state, where
-- the number set here keeps the messageIds of different threads apart.
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

init = function(args)
  local thread = tostring(thread_number) .. "-" .. tostring(os.time())
  for i = 1, size do
    local body = string.format(
      '{"event":"page_view","userId":"u%d","messageId":"bench-%s-%d","properties":{"page":"/products/%d"}}',
      i % 1000, thread, i, i % 50)
    pool[i] = wrk.format(nil, "/v1/events/track", nil, body)
  end
end

request = function()
  next_index = next_index % size + 1
  return pool[next_index]
end
