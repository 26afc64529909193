#!/usr/bin/env bash
# Fuzzes every target of the apiary-fuzz crate with AFL++ (cargo-afl), two at a time (the
# machine has 2 cores), and writes a summary to ops/fuzz/results/<UTC>.md.
#
#   ops/fuzz/run.sh [MINUTES] [TARGET...]     default: 10 minutes each, every target
#
# Environment: FUZZ_SECONDS (overrides MINUTES), FUZZ_JOBS (parallel targets, default 2),
# FUZZ_RESULTS (summary file; default ops/fuzz/results/<UTC>.md), FUZZ_OUT (AFL++ output
# directories; default target/afl-out), FUZZ_FRESH=1 (start from the committed corpus instead
# of resuming the queue of earlier runs there).
# Needs cargo-afl (`cargo install cargo-afl --locked`, which also builds its own AFL++).
# Exits 1 when a target has crashes (saved in $FUZZ_OUT/<target>/default/crashes/).
set -euo pipefail
cd "$(dirname "$0")/../.."

minutes="${1:-10}"
shift || true
seconds="${FUZZ_SECONDS:-$((minutes * 60))}"
jobs="${FUZZ_JOBS:-2}"
all="encoding secretstream stream noise mux messages manifest bee_block bee_walk merkle_proof proof_bundle swarm_frame"
targets="${*:-$all}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
results="${FUZZ_RESULTS:-ops/fuzz/results/$stamp.md}"
out_root="${FUZZ_OUT:-target/afl-out}"

command -v cargo-afl >/dev/null 2>&1 || {
  echo "cargo-afl is missing: cargo install cargo-afl --locked" >&2
  exit 2
}

# Instrumented binaries in their own target dir, so the workspace's builds are not redone.
export CARGO_TARGET_DIR=target/afl
echo "building the targets with AFL++ instrumentation..."
cargo afl build --release --locked -p apiary-fuzz --features afl --bins -q

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
  AFL_NO_AFFINITY=1 AFL_AUTORESUME=1
mkdir -p "$out_root"

fuzz_one() {
  local t="$1" out="$out_root/$1"
  if [ "${FUZZ_FRESH:-0}" = 1 ]; then rm -rf "$out"; fi
  cargo afl fuzz -i "fuzz/corpus/$t" -o "$out" -V "$seconds" -t 1000+ \
    -- "target/afl/release/$t" >"$out_root/$t.log" 2>&1 || echo "afl-fuzz for $t exited with $?" >&2
}

echo "fuzzing $(echo $targets | wc -w) targets for ${seconds}s each, $jobs at a time"
running=0
for t in $targets; do
  fuzz_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

stat() { sed -n "s/^$2 *: *//p" "$out_root/$1/default/fuzzer_stats" 2>/dev/null | head -1; }
count() { find "$out_root/$1/default/$2" -name 'id:*' 2>/dev/null | wc -l; }

mkdir -p "$(dirname "$results")"
failed=0
{
  echo "# Fuzzing run $stamp"
  echo
  echo "AFL++ $(stat "$(echo $targets | cut -d' ' -f1)" afl_version) via cargo-afl $(cargo afl --version 2>/dev/null | awk '{print $2}'), ${seconds}s per target, $jobs at a time, $(nproc) cores."
  echo "Run time and execs are cumulative over the runs that resumed the same queue ($out_root); crashes and hangs are this run's (files in crashes/ and hangs/)."
  echo
  echo "| target | run time (s) | execs | execs/s | corpus | edges | stability | crashes | hangs |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for t in $targets; do
    # Crashes and hangs of this run are the files in crashes/ and hangs/ (a resumed run
    # moves earlier ones to crashes.<date>/; its saved_* counters carry them over).
    crashes="$(count "$t" crashes)"
    if [ ! -f "$out_root/$t/default/fuzzer_stats" ]; then crashes="?"; fi
    echo "| $t | $(stat "$t" run_time) | $(stat "$t" execs_done) | $(stat "$t" execs_per_sec) | $(stat "$t" corpus_count) | $(stat "$t" edges_found) | $(stat "$t" stability) | $crashes | $(count "$t" hangs) |"
    if [ "$crashes" != 0 ]; then failed=1; fi
  done
  echo
  for t in $targets; do
    for f in "$out_root/$t"/default/crashes/id:* "$out_root/$t"/default/hangs/id:*; do
      [ -e "$f" ] && echo "- $t: \`$f\`"
    done
  done
} >"$results"
cat "$results"
if [ "$failed" = 1 ]; then
  echo "crashes found (or a target did not run): see $results" >&2
  exit 1
fi
