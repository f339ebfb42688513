#!/usr/bin/env bash
# Build every Wasm component (the app's functions/* and the host's test guests/*) for
# wasm32-wasip2 in release mode: the .wasm files spin.toml and the test manifests point at.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
pkgs=()
for manifest in functions/*/Cargo.toml tests/guests/*/Cargo.toml; do
  [ -f "$manifest" ] || continue
  name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n 1)
  pkgs+=(-p "$name")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  cargo build --target wasm32-wasip2 --release "${pkgs[@]}"
fi
