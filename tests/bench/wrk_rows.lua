-- wrk script for the runtime benchmark: POSTs one row per request, cycling through the request
-- bodies in the file named by the first script argument (one JSON body per line, written by
-- tests/bench/harness.py), so consecutive requests carry different rows and no server can
-- answer from a cache. done() prints one machine-readable line that harness.parse_wrk_output reads.
--   wrk -t1 -c8 -d6s -s tests/bench/wrk_rows.lua http://127.0.0.1:PORT/v2/models/m/infer -- bodies.txt
-- Optional further arguments: the most requests a thread sends before it stops (0: until -d ends),
-- then request headers, one "Name: value" each (an API key, say).
--   ... -- bodies.txt 100000 "x-api-key: KEY"

local threads_started = 0

function setup(thread)
  thread:set("thread_index", threads_started)
  threads_started = threads_started + 1
end

local prepared = {}
local position = 1
local sent = 0
local most = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("pass the request bodies file after --")
  end
  local headers = { ["Content-Type"] = "application/json" }
  most = tonumber(args[2] or "0") or 0
  for i = 3, #args do
    local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
    if name == nil then
      error("a header argument must look like 'Name: value', not " .. args[i])
    end
    headers[name] = value
  end
  for line in io.lines(path) do
    if #line > 0 then
      prepared[#prepared + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  if #prepared == 0 then
    error("no request bodies in " .. path)
  end
  -- Threads start at different rows (a prime stride) so they do not send the same sequence.
  position = ((thread_index or 0) * 7919) % #prepared + 1
end

function request()
  sent = sent + 1
  if most > 0 and sent > most then
    wrk.thread:stop()
  end
  local prepared_request = prepared[position]
  position = position % #prepared + 1
  return prepared_request
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f mean_us=%.1f status=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50.0), latency:percentile(99.0), latency.mean,
    e.status, e.connect, e.read, e.write, e.timeout))
end
