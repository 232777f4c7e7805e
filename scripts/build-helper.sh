#!/usr/bin/env bash
# Builds the static in-job `circleci` helper (crate gyre-circleci) that gyre copies into
# every job container, and puts it next to the gyre binary given (default: the one in
# ~/.cargo/bin), where `gyre local execute` looks for it.
# Usage: scripts/build-helper.sh [DEST_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-$(dirname "$(command -v gyre || echo "$HOME/.cargo/bin/gyre")")}
target=${CARGO_TARGET_DIR:-target}/gyre-helper
CARGO_TARGET_DIR="$target" RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --release -p gyre-circleci --target x86_64-unknown-linux-gnu
mkdir -p "$dest"
install -m 0755 "$target/x86_64-unknown-linux-gnu/release/circleci" "$dest/circleci"
echo "installed $dest/circleci"
