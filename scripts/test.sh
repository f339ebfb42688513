#!/usr/bin/env bash
# The whole test suite: builds the Wasm components, makes sure a Redis server is available
# for the Redis key-value runs, then runs every test of the workspace, and the integration
# tests a second time with the components' store on Redis.
#   SPINPAY_REQUIRE_REDIS=1          fail (instead of skipping) when redis-server is absent
#   SPINPAY_REQUIRE_INTEROP=1        likewise for the channel SDK interop tests (python3)
#   SPINPAY_REQUIRE_SCHEMATHESIS=1   likewise for the OpenAPI fuzzing (python3)
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing Debian's redis-server for the Redis key-value runs"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # The package starts a system service on :6379; the tests start their own servers.
    (service redis-server stop || true) >/dev/null 2>&1
  else
    echo "test.sh: redis-server not found; Redis runs will be skipped (install redis-server to run them)"
  fi
fi

# The scheduler test runs scripts/scheduler.sh, which calls the app with curl.
if ! command -v curl >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test.sh: installing curl for the scheduler test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
fi

# The channel interop tests check our Alipay / WeChat Pay signatures against the channels'
# own Python SDKs; they live in a virtualenv of their own, put first on PATH.
if command -v python3 >/dev/null 2>&1; then
  venv=target/interop-venv
  if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -c 'import wechatpayv3, alipay' 2>/dev/null; then
    python3 -m venv "$venv" &&
      "$venv/bin/pip" install --quiet --disable-pip-version-check \
        wechatpayv3==2.0.4 python-alipay-sdk==3.4.0 ||
      echo "test.sh: could not set up $venv; the interop tests will be skipped"
  fi
  [ -x "$venv/bin/python3" ] && export PATH="$PWD/$venv/bin:$PATH"
fi

./scripts/build-wasm.sh
cargo test --workspace "$@"

# The integration tests once more with the components' key-value store on a real Redis
# (production's backend, `infra/runtime-config.redis.toml`): each test binary gets a
# private redis-server on a free loopback port, and each app it starts a database of its
# own there (`SPINPAY_TEST_REDIS_BASE`). Only for the whole suite (no arguments).
if [ $# -ne 0 ]; then
  echo "test.sh: arguments given: the integration tests on Redis are skipped"
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  if [ "${SPINPAY_REQUIRE_REDIS:-}" = 1 ]; then
    echo "test.sh: redis-server or redis-cli not found and SPINPAY_REQUIRE_REDIS=1" >&2
    exit 1
  fi
  echo "test.sh: redis-server not found: the integration tests on Redis are skipped"
  exit 0
fi
redis_dir=$(mktemp -d)
redis_pid=
trap 'if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; fi; rm -rf "$redis_dir"' EXIT

# start_redis: a fresh redis-server on a free port in 20000-52767 ($redis_port, $redis_pid),
# checked to be the process that answers there (not some other server on that port).
start_redis() {
  local attempt
  for attempt in $(seq 1 20); do
    redis_port=$((20000 + RANDOM))
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
      --databases 64 --dir "$redis_dir" --daemonize no > "$redis_dir/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 1 50); do
      kill -0 "$redis_pid" 2>/dev/null || break
      if redis-cli -p "$redis_port" info server 2>/dev/null | grep -q "^process_id:${redis_pid}[[:space:]]"; then
        return 0
      fi
      sleep 0.1
    done
    stop_redis
  done
  echo "test.sh: could not start redis-server:" >&2
  cat "$redis_dir/redis.log" >&2
  exit 1
}

stop_redis() {
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=
}

for test in payment_flows refunds merchant_api notifications risk channels crash_recovery; do
  start_redis
  echo "test.sh: $test on Redis (127.0.0.1:$redis_port)"
  # `--workspace` as above, so the features (and the build) are the same: no rebuild.
  SPINPAY_TEST_REDIS=1 SPINPAY_TEST_REDIS_BASE="redis://127.0.0.1:$redis_port" \
    cargo test --workspace --test "$test"
  stop_redis
done
