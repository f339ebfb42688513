#!/usr/bin/env bash
# The whole test suite: builds the Wasm components, makes sure a Redis server is available
# for the Redis key-value runs, then runs every test of the workspace.
#   SPINPAY_REQUIRE_REDIS=1  fail (instead of skipping the Redis runs) when redis-server is absent
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

./scripts/build-wasm.sh
cargo test --workspace "$@"
