#!/usr/bin/env bash
# CI's short fuzzing pass: every target for FUZZ_SECONDS (default 20) from the committed
# corpus, two at a time; fails when any crash is found. Installs cargo-afl (which builds its
# own AFL++) when missing. The summary goes to target/afl-out/ci.md, not into the repo.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v cargo-afl >/dev/null 2>&1; then
  echo "installing cargo-afl..."
  cargo install cargo-afl --locked --quiet
fi
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" FUZZ_FRESH=1 FUZZ_RESULTS=target/afl-out/ci.md \
  exec ops/fuzz/run.sh
