-- wrk script: POST /v1/events/track with the key in GAMIFY_KEY, spreading events over 1,000 users.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("GAMIFY_KEY")
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"event":"page_view","userId":"u%d","messageId":"bench-%d-%d","properties":{"page":"/products/%d"}}',
    counter % 1000, math.random(1, 1e9), counter, counter % 50)
  return wrk.format(nil, "/v1/events/track", nil, body)
end
