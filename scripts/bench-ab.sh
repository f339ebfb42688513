#!/usr/bin/env bash
# A/B benchmark of two builds of the app's components (not a test): payments/s and host CPU
# per payment on tmpfs at 32 connections, the two alternating round by round so that the
# machine's drift hits both alike. Both run on this checkout's release host binary, unless
# BENCH_AB_HOSTS names two host binaries (A's, then B's) to compare the host itself.
#
#   scripts/bench-ab.sh <manifest A> <manifest B> [rounds (4)] [seconds (10)]
#   BENCH_AB_HOSTS="/tmp/spinpay-host-a target/release/spinpay-host" \
#     scripts/bench-ab.sh spin.toml spin.toml
#
# e.g. the previous commit's components against this checkout's:
#   git worktree add /tmp/spinpay-a HEAD~1
#   /tmp/spinpay-a/scripts/build-wasm.sh     # builds into /tmp/spinpay-a/target
#   ./scripts/build-wasm.sh && cargo build --release -p spinpay-host
#   ./scripts/bench-ab.sh /tmp/spinpay-a/spin.toml spin.toml
#
# (for the host: `cp target/release/spinpay-host /tmp/spinpay-host-a` before the change).
#
# Needs wrk, curl, python3 and /dev/shm. Env: BENCH_PORT (default 3998), BENCH_KEYED=1 to
# send an Idempotency-Key with every payment.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
[ $# -ge 2 ] || { sed -n '2,18p' "$0" >&2; exit 2; }
manifests=("$1" "$2"); rounds=${3:-4}; seconds=${4:-10}
port=${BENCH_PORT:-3998}
if [ -n "${BENCH_AB_HOSTS:-}" ]; then
  read -r -a hosts <<< "$BENCH_AB_HOSTS"
  [ ${#hosts[@]} -eq 2 ] || { echo "bench-ab: BENCH_AB_HOSTS needs two host binaries" >&2; exit 2; }
else
  hosts=("$root/target/release/spinpay-host" "$root/target/release/spinpay-host")
fi
for h in "${hosts[@]}"; do
  [ -x "$h" ] || { echo "bench-ab: no host binary $h (cargo build --release -p spinpay-host)" >&2; exit 1; }
done
work=$(mktemp -d /dev/shm/spinpay-ab.XXXXXX)
host_pid=""
cleanup() {
  if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; wait "$host_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# one_run <manifest> <host binary>: writes "<payments/s> <host CPU µs per payment> <non-2xx>" to
# $work/result (not in a subshell, so the exit trap can stop its host).
one_run() {
  rm -rf "$work/kv"; mkdir -p "$work/kv"
  printf '[key_value_store.default]\ntype = "spin"\npath = "%s/kv/kv.db"\n' "$work" > "$work/rc.toml"
  SPIN_VARIABLE_ADMIN_TOKEN=admin_bench_token_8c1f4e2a \
  SPIN_VARIABLE_ENCRYPTION_KEY=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') \
  SPIN_VARIABLE_SANDBOX_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') \
  RUST_LOG=warn "$2" up -f "$1" --listen "127.0.0.1:$port" \
    --runtime-config-file "$work/rc.toml" > "$work/host.log" 2>&1 &
  host_pid=$!
  local sk=""
  for _ in $(seq 1 300); do
    sk=$(curl -sf -X POST "http://127.0.0.1:$port/v1/admin/merchants" \
      -H 'Authorization: Bearer admin_bench_token_8c1f4e2a' -H 'Content-Type: application/json' \
      -d '{"name":"bench"}' 2>/dev/null \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret_key"])' 2>/dev/null) && break
    kill -0 "$host_pid" 2>/dev/null || { cat "$work/host.log" >&2; exit 1; }
    sleep 0.2
  done
  [ -n "$sk" ] || { echo "bench-ab: the app never served" >&2; exit 1; }
  BENCH_SK=$sk BENCH_RUN=1 wrk -t2 -c32 -d3s -s "$root/scripts/bench-pay.lua" \
    "http://127.0.0.1:$port" > /dev/null
  local t0 t1 out
  t0=$(awk '{print $14 + $15}' "/proc/$host_pid/stat")
  out=$(BENCH_SK=$sk BENCH_RUN=2 wrk -t2 -c32 -d"${seconds}s" -s "$root/scripts/bench-pay.lua" \
    "http://127.0.0.1:$port")
  t1=$(awk '{print $14 + $15}' "/proc/$host_pid/stat")
  kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
  local n rps bad hz
  n=$(awk '/requests in/ {print $1}' <<< "$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
  bad=$(awk '/Non-2xx/ {print $NF}' <<< "$out")
  hz=$(getconf CLK_TCK)
  echo "$rps $(( (t1 - t0) * 1000000 / hz / n )) ${bad:-0}" > "$work/result"
}

printf '%-5s %-4s %-40s %12s %18s %8s\n' round side manifest payments/s "cpu µs/payment" non-2xx
for r in $(seq 1 "$rounds"); do
  for side in 0 1; do
    one_run "${manifests[$side]}" "${hosts[$side]}"
    read -r rps cpu bad < "$work/result"
    printf '%-5s %-4s %-40s %12s %18s %8s\n' "$r" "$([ $side = 0 ] && echo A || echo B)" \
      "${manifests[$side]}" "$rps" "$cpu" "$bad"
  done
done
