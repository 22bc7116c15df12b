-- wrk script: POST /v1/events/batch with 100 events per request, key in GAMIFY_KEY.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("GAMIFY_KEY")
local counter = 0
request = function()
  local items = {}
  for i = 1, 100 do
    counter = counter + 1
    items[i] = string.format('{"event":"click","userId":"u%d","properties":{"i":%d}}', counter % 1000, i)
  end
  return wrk.format(nil, "/v1/events/batch", nil, '{"batch":[' .. table.concat(items, ",") .. ']}')
end
