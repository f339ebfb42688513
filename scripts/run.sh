#!/usr/bin/env bash
# Run spinpay locally: builds the Wasm components and the host, then serves spin.toml on
# http://127.0.0.1:3000 (override with --listen). Development secrets are generated once
# into .spin/dev.env (git-ignored) unless SPIN_VARIABLE_* are already set.
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
# Variables already in the environment win over the generated ones.
while IFS='=' read -r name value; do
  [ -n "${!name:-}" ] || export "$name=$value"
done < .spin/dev.env
echo "spinpay: admin token is in .spin/dev.env (SPIN_VARIABLE_ADMIN_TOKEN)"
exec cargo run --release -p spinpay-host -- up -f spin.toml "$@"
