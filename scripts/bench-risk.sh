#!/usr/bin/env bash
# Risk engine benchmark (not a test), two parts:
#  1. the pure engine, native: `cargo bench -p spinpay-core --bench riskengine` (50 active
#     rules; evaluate alone, the guest's CPU work per recorded assessment, storage ops);
#  2. the risk-check component inside spinpay-host (release, wasm, SQLite on tmpfs): a
#     merchant with the same 50-rule configuration, then sequential payments (each makes
#     authorize call risk-check's internal assess: assess + count) and previews
#     (POST /v1/risk/assessments), timed from the host's per-request log lines
#     (`component="risk-check" … duration_us=`: guest time + its key-value calls).
#
# Usage: scripts/bench-risk.sh            (builds what it needs)
#        BENCH_SKIP_BUILD=1 scripts/bench-risk.sh
#        BENCH_REQUESTS=500 scripts/bench-risk.sh
#        BENCH_SKIP_ENGINE=1 scripts/bench-risk.sh   (part 2 only)
# Needs python3. Everything runs on loopback.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
requests="${BENCH_REQUESTS:-300}"
[[ "$requests" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_REQUESTS must be a positive integer" >&2; exit 2; }

if [ -z "${BENCH_SKIP_ENGINE:-}" ]; then
echo "== 1. pure engine (native) =="
cargo bench -p spinpay-core --bench riskengine 2>&1 | grep -v '^\s*\(Compiling\|Finished\|Running\|Blocking\)'
fi

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  ./scripts/build-wasm.sh >/dev/null
  cargo build --release -p spinpay-host >/dev/null 2>&1
fi

work=$(mktemp -d)
kv_dir=/dev/shm/$(basename "$work")
[ -d /dev/shm ] || kv_dir="$work/kv"
mkdir -p "$kv_dir"
host_pid=""
cleanup() {
  [ -z "$host_pid" ] || kill "$host_pid" 2>/dev/null || true
  rm -rf "$work" "$kv_dir"
}
trap cleanup EXIT
printf '[key_value_store.default]\ntype = "spin"\npath = "%s/kv.db"\n' "$kv_dir" > "$work/rc.toml"
port=$((20000 + RANDOM % 20000))
enc_key=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
SPIN_VARIABLE_ADMIN_TOKEN=admin_bench_token_8c1f4e2a \
SPIN_VARIABLE_ENCRYPTION_KEY=$enc_key \
SPIN_VARIABLE_SANDBOX_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') \
RUST_LOG=info "$root/target/release/spinpay-host" up -f spin.toml \
  --listen "127.0.0.1:$port" --runtime-config-file "$work/rc.toml" > "$work/host.log" 2>&1 &
host_pid=$!
for _ in $(seq 1 300); do
  grep -qs '^Serving' "$work/host.log" && break
  kill -0 "$host_pid" 2>/dev/null || { cat "$work/host.log" >&2; exit 1; }
  sleep 0.2
done

echo "== 2. risk-check inside spinpay-host ($requests payments, $requests previews) =="
python3 - "http://127.0.0.1:$port" "$requests" "$work/host.log" "$enc_key" <<'PY'
import hashlib, hmac, json, re, sys, time, urllib.request
base, n, log, enc_key = sys.argv[1], int(sys.argv[2]), sys.argv[3], bytes.fromhex(sys.argv[4])
timings = {"preview": [], "recorded": []}

def call(method, path, body=None, key=None, extra=None, timing=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {key}")
    for k, v in (extra or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=30) as r:
        st = r.headers.get("server-timing")
        if timing and st:
            d = dict(re.findall(r"(\w+);dur=([\d.]+)", st))
            timings[timing].append((float(d["engine"]) * 1000, float(d["kv"]) * 1000))
        return r.status, json.loads(r.read())

_, m = call("POST", "/v1/admin/merchants", {"name": "risk bench"}, "admin_bench_token_8c1f4e2a")
sk = m["secret_key"]
mid = m["id"]
# 50 active rules: 36 velocity limits (4 dimensions x 3 windows x count / amount / both),
# per-transaction max, daily tier, 5 block lists, 1 allow list, 3 anomalies, 3 AML rules.
velocity = []
for dim in ("payer", "device", "ip", "token"):
    for win in ("1m", "1h", "24h"):
        velocity += [
            {"dimension": dim, "window": win, "max_count": 1000, "contribution": 10},
            {"dimension": dim, "window": win, "max_amount_minor": 90_000_000, "contribution": 11},
            {"dimension": dim, "window": win, "max_count": 2000, "max_amount_minor": 99_000_000, "contribution": 12},
        ]
entries = lambda p: [f"{p}-{i:04}" for i in range(10)]
rules = {
    "velocity": velocity,
    "blocklist": {"payer_ids": entries("bp"), "device_ids": entries("bd"),
                  "ips": [f"10.0.{i}.0/24" for i in range(10)],
                  "phones": [f"+861390000{i:04}" for i in range(10)], "tokens": entries("bt")},
    "allowlist": {"payer_ids": entries("vip")},
}
status, stored = call("PUT", "/v1/risk/rules", rules, sk)
assert status == 200 and stored["version"] == 2, stored
mark = sum(1 for _ in open(log))
t0 = time.time()
for i in range(n):
    body = {"amount_minor": 1250, "currency": "CNY", "channel": "sandbox",
            "method": {"type": "qr_customer", "auth_code": f"28{int(t0)}{i:06d}"},
            "payer": {"id": f"u-{i % 20}", "device_id": f"d-{i % 20}", "ip": "203.0.113.7", "country": "CN"}}
    status, p = call("POST", "/v1/payments", body, sk)
    assert status == 200 and p["risk"]["rules_version"] == 2, p
for i in range(n):
    body = {"amount_minor": 1250, "currency": "CNY", "method": {"type": "app"},
            "payer": {"id": f"u-{i % 20}", "device_id": f"d-{i % 20}", "ip": "203.0.113.7"}}
    call("POST", "/v1/risk/assessments", body, sk, timing="preview")
time.sleep(0.5)
mark_end = sum(1 for _ in open(log))
# authorize's internal call made directly (with the MAC only the app's key can make), to
# read its Server-Timing: the same assess + count authorize triggers.
b32 = "abcdefghijklmnopqrstuvwxyz234567"
for i in range(n):
    pid = "pay_" + "".join(b32[(i * 7 + j * 13 + int(t0)) % 32] for j in range(20)) + f"{i:06d}".translate(str.maketrans("0123456789", "abcdefghij"))
    body = {"payment_id": pid, "amount_minor": 1250, "currency": "CNY", "method": "app",
            "payer": {"id": f"u-{i % 20}", "device_id": f"d-{i % 20}", "ip": "203.0.113.7"}}
    raw = json.dumps(body).encode()
    path = "/v1/risk/internal/assess"
    mac = hmac.new(enc_key, b"spinpay/internal/v2\n" + path.encode() + b"\n" + mid.encode() + b"\n" + raw, hashlib.sha256).hexdigest()
    req = urllib.request.Request(base + path, data=raw, method="POST")
    for k, v in (("Content-Type", "application/json"), ("spinpay-merchant-id", mid), ("spinpay-internal-mac", mac)):
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=30) as r:
        d = dict(re.findall(r"(\w+);dur=([\d.]+)", r.headers["server-timing"]))
        timings["recorded"].append((float(d["engine"]) * 1000, float(d["kv"]) * 1000))
time.sleep(0.5)
internal, preview = [], []
for line in list(open(log))[mark:mark_end]:
    if 'component="risk-check"' not in line:
        continue
    d = re.search(r"duration_us=(\d+)", line)
    if not d:
        continue
    (internal if "chained" in line else preview).append(int(d.group(1)))
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, len(v) * p // 100)] if v else 0
print("whole risk-check request (host log: guest + key-value + authentication):")
for name, v in (("recorded (authorize's internal assess)", internal), ("preview (POST /v1/risk/assessments)", preview)):
    print(f"  {name:<40} n={len(v):4d}  p50 {pct(v, 50):6d} µs  p90 {pct(v, 90):6d} µs  p99 {pct(v, 99):6d} µs")
print("inside the wasm guest, per assessment (Server-Timing: engine = guest time without store waits):")
for name in ("recorded", "preview"):
    e = [int(a) for a, _ in timings[name]]
    k = [int(b) for _, b in timings[name]]
    print(f"  {name:<9} n={len(e):4d}  engine p50 {pct(e, 50):5d} µs  p90 {pct(e, 90):5d} µs  p99 {pct(e, 99):5d} µs  mean {sum(e) // max(1, len(e)):5d} µs   kv waits p50 {pct(k, 50):5d} µs")
PY
uptime | sed 's/.*load average: /load average: /'
