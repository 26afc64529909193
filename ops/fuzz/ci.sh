#!/usr/bin/env bash
# CI's short fuzzing pass: every target for FUZZ_SECONDS (default 15) from the committed
# corpus, two at a time; fails when any crash is found. Installs cargo-afl (which builds its
# own AFL++) when missing. Its AFL++ output and summary go to target/afl-ci, not into the repo.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v cargo-afl >/dev/null 2>&1; then
  echo "installing cargo-afl..."
  cargo install cargo-afl --locked --quiet
fi
FUZZ_SECONDS="${FUZZ_SECONDS:-15}" FUZZ_FRESH=1 FUZZ_OUT=target/afl-ci FUZZ_RESULTS=target/afl-ci/summary.md \
  exec ops/fuzz/run.sh
