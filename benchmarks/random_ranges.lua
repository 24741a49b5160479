-- wrk script: GETs of random byte ranges of one file, then one JSON line of results.
--
--   wrk -t1 -c16 -d5s -s benchmarks/random_ranges.lua URL -- FILE_SIZE RANGE_BYTES SEED
--
-- Every request asks for RANGE_BYTES bytes at a random offset (uniform over the file), so
-- neither a server nor a proxy can serve them from a small hot set. The offsets come from a
-- seeded generator per thread: runs are repeatable. done() prints one line starting with
-- "RESULT " that benchmarks/proxy_throughput.py parses (latencies in microseconds).

local file_size, range_bytes, seed
local threads_set_up = 0 -- counted in wrk's main Lua state

function setup(thread)
   -- A global of the thread's own Lua state, read by init(): each thread its own offsets.
   thread:set("thread_number", threads_set_up)
   threads_set_up = threads_set_up + 1
end

function init(args)
   file_size = tonumber(args[1])
   range_bytes = tonumber(args[2])
   seed = tonumber(args[3])
   math.randomseed(seed + 7919 * (thread_number or 0))
end

function request()
   local first = math.random(0, file_size - range_bytes)
   local last = first + range_bytes - 1
   return wrk.format(nil, nil, { ["Range"] = "bytes=" .. first .. "-" .. last })
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "errors_connect": %d, '
         .. '"errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d, '
         .. '"latency_mean_us": %.1f, "latency_p50_us": %d, "latency_p90_us": %d, '
         .. '"latency_p99_us": %d, "latency_max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max))
end
