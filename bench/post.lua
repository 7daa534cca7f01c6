-- wrk script of the ingest benchmark (bench/ingest.py): POSTs a small text message to the
-- mailbox URL given on the command line, optionally paced, and prints one JSON line at the end.
--   wrk ... -s bench/post.lua URL -- [delay_ms]
-- delay_ms > 0 makes each connection wait that long before its next request (open-ish loop
-- at about connections * 1000 / delay_ms requests/s); without it wrk runs closed-loop.
wrk.method = "POST"
wrk.body = "bench message"
wrk.headers["Content-Type"] = "text/plain"

local pause = 0

function init(args)
  if args[1] ~= nil then pause = tonumber(args[1]) end
end

if true then
  -- delay() is only honoured when defined; define it always and return 0 for closed loop.
  function delay()
    return pause
  end
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, non2xx, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
