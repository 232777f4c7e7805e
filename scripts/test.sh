#!/usr/bin/env bash
# The one command that runs every check gyre has: formatting, lints, the whole
# test suite (unit, snapshot, corpus, integration) and a build of the fuzz targets.
# It installs and starts what the tests need (see scripts/test-env.sh) and is what
# CI runs (.ci/run). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*" >&2; }

if [ -f scripts/test-env.sh ]; then
  log "preparing the test environment"
  # shellcheck source=/dev/null
  source scripts/test-env.sh
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

log "building the fuzz targets"
cargo build --locked --manifest-path fuzz/Cargo.toml --bins

log "all checks passed"
