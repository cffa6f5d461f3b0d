-- wrk script: POST a different pre-built push each time, read from the file named by the first argument
-- (one compact JSON push per line); prints a JSON summary line at the end.
local bodies = {}
local index = 0

init = function(args)
  local file = assert(io.open(args[1], "rb"))
  for line in file:lines() do
    bodies[#bodies + 1] = wrk.format("POST", "/push", {["Content-Type"] = "application/json"}, line)
  end
  file:close()
  index = math.random(#bodies)
end

request = function()
  index = index % #bodies + 1
  return bodies[index]
end

done = function(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
