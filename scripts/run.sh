#!/usr/bin/env bash
# Run spinpay locally: builds the Wasm components and the host, then serves spin.toml on
# http://127.0.0.1:3000 (override with --listen), with scripts/scheduler.sh making the
# scheduled calls (notification sweep, reconciliation) a deployment's CronJobs make.
# Development secrets are generated once into .spin/dev.env (git-ignored) unless
# SPIN_VARIABLE_* are already set.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
./scripts/build-wasm.sh
mkdir -p .spin
if [ ! -f .spin/dev.env ]; then
  rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
  {
    echo "SPIN_VARIABLE_ADMIN_TOKEN=admin_$(rand_hex 16)"
    echo "SPIN_VARIABLE_ENCRYPTION_KEY=$(rand_hex 32)"
    echo "SPIN_VARIABLE_SANDBOX_SECRET=$(rand_hex 32)"
  } > .spin/dev.env
  chmod 600 .spin/dev.env
fi
# Variables already in the environment win over the generated ones. Blank lines and `#`
# comments are skipped; every other line must be NAME=value.
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
  if [[ "$line" != *=* ]]; then
    echo "run.sh: .spin/dev.env line $lineno is not NAME=value (no '=')" >&2
    exit 1
  fi
  name=${line%%=*}
  if ! [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "run.sh: .spin/dev.env line $lineno: name '$name' does not match ^[A-Za-z_][A-Za-z0-9_]*\$" >&2
    exit 1
  fi
  [ -n "${!name:-}" ] || export "$name=${line#*=}"
done < .spin/dev.env
echo "spinpay: admin token is in .spin/dev.env (SPIN_VARIABLE_ADMIN_TOKEN)"
# Built into ./target like the .wasm files (see build-wasm.sh), whatever CARGO_TARGET_DIR
# or build.target-dir say, so the path is known.
cargo build --release --target-dir target -p spinpay-host
host_bin=target/release/spinpay-host

# The scheduled calls a deployment makes with CronJobs (notification sweep, reconciliation),
# made by scripts/scheduler.sh against the address the host listens on, unless
# SPINPAY_SCHEDULER=0 or curl is missing.
listen=127.0.0.1:3000
prev=
for arg in "$@"; do
  case "$arg" in --listen=*) listen=${arg#--listen=} ;; esac
  [ "$prev" = --listen ] && listen=$arg
  prev=$arg
done
case "$listen" in
  0.0.0.0:*) listen="127.0.0.1:${listen#0.0.0.0:}" ;;
  '[::]:'*) listen="[::1]:${listen#'[::]:'}" ;;
esac
scheduler=
if [ "${SPINPAY_SCHEDULER:-1}" = 0 ]; then
  echo "spinpay: SPINPAY_SCHEDULER=0: no notification sweep or reconciliation"
elif ! command -v curl >/dev/null 2>&1; then
  echo "spinpay: curl not found: merchant notifications will not be delivered (see scripts/scheduler.sh)"
else
  SPINPAY_URL="http://$listen" ./scripts/scheduler.sh &
  scheduler=$!
fi

"$host_bin" up -f spin.toml "$@" &
host=$!
# Ctrl-C or SIGTERM stops the host gracefully (it finishes in-flight requests), then the
# scheduler.
trap 'kill -TERM "$host" 2>/dev/null' INT TERM
trap '[ -z "$scheduler" ] || kill "$scheduler" 2>/dev/null' EXIT
rc=0
wait "$host" || rc=$?
# A trapped signal interrupts `wait` before the host has finished: wait for it again
# (bash keeps a finished child's status for the second `wait`).
if [ "$rc" -gt 128 ]; then
  rc=0
  wait "$host" || rc=$?
fi
exit "$rc"
