-- POST /v1/payments: a qr_customer payment (the sandbox succeeds synchronously), with an
-- auth code unique per run, thread and request; with BENCH_KEYED=1 also an Idempotency-Key
-- (the same unique string).
local counter = 0
local run = os.getenv("BENCH_RUN") or "0"
local keyed = os.getenv("BENCH_KEYED") == "1"
local next_tid = 0
function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_SK")
end
function request()
  counter = counter + 1
  local code = string.format("28%s%02d%010d", run, tid, counter)
  local body = '{"amount_minor":1250,"currency":"CNY","channel":"sandbox","method":{"type":"qr_customer","auth_code":"' .. code .. '"}}'
  local headers = nil
  if keyed then
    headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end
    headers["Idempotency-Key"] = "bench-" .. code
  end
  return wrk.format(nil, "/v1/payments", headers, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("bench-errors: status=%d connect=%d read=%d write=%d timeout=%d\n",
    e.status, e.connect, e.read, e.write, e.timeout))
  io.write(string.format("bench-latency-us: p50=%d p99=%d\n",
    latency:percentile(50), latency:percentile(99)))
end
