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

# System tools some tests need: redis-server (the Redis key-value runs), curl (the
# scheduler tests run scripts/scheduler.sh, and scripts/schemathesis.sh), python3 with
# venv and ensurepip (Debian ships those in python3-venv; the interop and OpenAPI fuzzing
# tests). As root with apt (CI images) the missing ones are installed with one
# `apt-get update`; otherwise the tests that need them skip (or fail under SPINPAY_REQUIRE_*).
apt_pkgs=()
command -v redis-server >/dev/null 2>&1 || apt_pkgs+=(redis-server)
command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_pkgs+=(python3 python3-venv)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${apt_pkgs[*]} with apt-get"
    if apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null; then
      # The package starts a system service on :6379; the tests start their own servers.
      case " ${apt_pkgs[*]} " in
        *" redis-server "*) (service redis-server stop || true) >/dev/null 2>&1 ;;
      esac
    else
      echo "test.sh: apt-get could not install ${apt_pkgs[*]}; the tests needing them will be skipped" >&2
    fi
  else
    echo "test.sh: missing (as Debian packages): ${apt_pkgs[*]}; the tests needing them will be skipped (install them to run them)"
  fi
fi

# The channel interop tests check our Alipay / WeChat Pay signatures against the channels'
# own Python SDKs; they live in a virtualenv of their own, put first on PATH, with every
# package at the version scripts/constraints-interop.txt pins. A venv without those
# versions (stale, or half installed) is repaired by pip in place.
interop_constraints=scripts/constraints-interop.txt
interop_ready() {
  "$1/bin/python3" -c 'import wechatpayv3, alipay' >/dev/null 2>&1 &&
    "$1/bin/python3" scripts/pins_installed.py "$interop_constraints" >/dev/null 2>&1
}
if command -v python3 >/dev/null 2>&1; then
  venv=target/interop-venv
  if ! interop_ready "$venv"; then
    echo "test.sh: setting up $venv"
    python3 -m venv "$venv" &&
      "$venv/bin/pip" install --quiet --disable-pip-version-check -c "$interop_constraints" \
        wechatpayv3 python-alipay-sdk ||
      echo "test.sh: could not set up $venv; the interop tests will be skipped"
  fi
  if "$venv/bin/python3" -c 'import wechatpayv3, alipay' >/dev/null 2>&1; then
    export PATH="$PWD/$venv/bin:$PATH"
  fi
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

# Every integration test binary (tests/tests/*.rs, so a new one runs on Redis too) but
# openapi_fuzzing: the HTTP contract it fuzzes for two minutes does not depend on the store.
redis_tests=()
for file in tests/tests/*.rs; do
  [ -f "$file" ] || continue
  test=$(basename "$file" .rs)
  [ "$test" = openapi_fuzzing ] || redis_tests+=("$test")
done
[ ${#redis_tests[@]} -gt 0 ] || { echo "test.sh: no integration tests in tests/tests" >&2; exit 1; }
for test in "${redis_tests[@]}"; do
  start_redis
  echo "test.sh: $test on Redis (127.0.0.1:$redis_port)"
  # `--workspace` as above, so the features (and the build) are the same: no rebuild.
  SPINPAY_TEST_REDIS=1 SPINPAY_TEST_REDIS_BASE="redis://127.0.0.1:$redis_port" \
    cargo test --workspace --test "$test"
  stop_redis
done
