#!/usr/bin/env bash
# Build every Wasm component (the app's functions/* and the host's test guests/*) for
# wasm32-wasip2 in release mode: the .wasm files spin.toml and the test manifests point at.
# They always go to this checkout's target/ (whatever CARGO_TARGET_DIR or build.target-dir
# say), since those manifests name target/wasm32-wasip2/release/*.wasm.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
pkgs=()
for manifest in functions/*/Cargo.toml tests/guests/*/Cargo.toml; do
  [ -f "$manifest" ] || continue
  name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n 1)
  pkgs+=(-p "$name")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  cargo build --target-dir "$root/target" --target wasm32-wasip2 --release "${pkgs[@]}"
fi
