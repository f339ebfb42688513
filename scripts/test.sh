#!/usr/bin/env bash
# The whole test suite: builds the Wasm components, makes sure a Redis server is available
# for the Redis key-value runs, then runs every test of the workspace.
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
