#!/usr/bin/env bash
# Side-by-side replication benchmark: the JS reader and the Rust reader replicate the same bee
# from the SAME JS writer process, in one run, in alternation. See README.md.
#
#   bash ops/bench/run-replicate.sh                 # N=100000 ROUNDS=2
#   N=10000 ROUNDS=1 bash ops/bench/run-replicate.sh
#
# Settings (environment): N (posts, default 100000), ROUNDS (default 2), TAIL (entries of the
# tail phase, default 1000), PARALLEL (Rust requests in flight in full mode, default 256),
# THREADS (Rust tokio worker threads, default: one per core), PHASE_TIMEOUT (seconds, 900).
#
# stdout: one JSON line per phase, then a table of medians. The writer's build line, the
# readers' stderr and the writer's stderr go to stderr / the log file named at the end.
# Everything is also written to results/replicate-<UTC date>.json.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=lib.sh
source ./lib.sh

N=${N:-100000}
ROUNDS=${ROUNDS:-2}
TAIL=${TAIL:-1000}
PARALLEL=${PARALLEL:-256}
THREADS=${THREADS:-}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-900}

TARGET_DIR=${CARGO_TARGET_DIR:-../../target}
RUST_READER="$TARGET_DIR/release/replicate-reader"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS="results/replicate-$STAMP.json"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/apiary-bench-replicate-XXXXXX")
LOG="$WORK/run.log"
PHASES="$WORK/phases.jsonl"
: >"$PHASES"

note "building apiary-bench (release)"
cargo build --release -p apiary-bench >&2

# ---- the writer: one node process for the whole run, driven over FIFOs (lib.sh) ----
note "starting the JS writer with N=$N (log: $LOG)"
WRITER_STOP_TRIES=50
trap stop_writers EXIT
if ! spawn_writer js node js/writer.js --n "$N"; then
  note "the writer did not start; its log:"
  cat "$LOG" >&2
  exit 1
fi
WRITER_LINE=${W_LINE[js]}
note "writer: $WRITER_LINE"
KEY=$(jq -r .key <<<"$WRITER_LINE")
PORT=$(jq -r .port <<<"$WRITER_LINE")

writer_cpu() {
  writer_say js cpu
}

# ---- one phase: fresh reader process, writer CPU read before and after ----
run_phase() {
  local round=$1 tool=$2 mode=$3
  local cmd
  if [[ $tool == js ]]; then
    cmd=(node js/reader.js --port "$PORT" --key "$KEY" --mode "$mode" --tail "$TAIL")
  else
    cmd=("$RUST_READER" --port "$PORT" --key "$KEY" --mode "$mode" --tail "$TAIL" --parallel "$PARALLEL")
    [[ -n $THREADS ]] && cmd+=(--threads "$THREADS")
  fi
  local before after t0 t1 line rc=0
  before=$(writer_cpu)
  t0=$(date +%s.%N)
  echo "--- round $round $tool $mode: ${cmd[*]}" >>"$LOG"
  line=$(timeout "$PHASE_TIMEOUT" "${cmd[@]}" 2>>"$LOG") || rc=$?
  t1=$(date +%s.%N)
  after=$(writer_cpu)
  if [[ $rc -ne 0 || -z $line ]] || ! jq -e . >/dev/null 2>&1 <<<"$line"; then
    note "round $round $tool $mode FAILED (exit $rc); last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    line=$(jq -cn --arg tool "$tool" --arg mode "$mode" --argjson rc "$rc" --arg out "$line" \
      '{tool: $tool, mode: $mode, error: "exit \($rc)", stdout: $out}')
  fi
  jq -c --argjson round "$round" --arg tool "$tool" --argjson b "$before" --argjson a "$after" \
    --arg t0 "$t0" --arg t1 "$t1" '
    {phase: "\($tool) \(.mode)", round: $round, tool: $tool} + . + {
      writerCpuSeconds: ((($a.user + $a.system) - ($b.user + $b.system)) * 1000 | round / 1000),
      writerCpuUser: ((($a.user - $b.user)) * 1000 | round / 1000),
      writerCpuSystem: ((($a.system - $b.system)) * 1000 | round / 1000),
      writerMaxRssMB: $a.maxRssMB,
      processWallSeconds: ((($t1 | tonumber) - ($t0 | tonumber)) * 1000 | round / 1000)
    }' <<<"$line" | tee -a "$PHASES"
}

for round in $(seq "$ROUNDS"); do
  run_phase "$round" js full
  run_phase "$round" rust full
  run_phase "$round" js tail
  run_phase "$round" rust tail
done

stop_writers
trap - EXIT

# ---- results file and table ----
META=$(jq -cn \
  --arg date "$STAMP" --argjson n "$N" --argjson rounds "$ROUNDS" --argjson tail "$TAIL" \
  --argjson parallel "$PARALLEL" --arg threads "$THREADS" \
  --arg node "$(node --version)" --arg rustc "$(rustc --version)" \
  --argjson cpus "$(nproc)" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
  --arg kernel "$(uname -r)" --arg commit "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --arg dirty "$(git status --porcelain 2>/dev/null | head -c1)" \
  --arg loadStart "$LOAD_START" --arg loadEnd "$(cut -d' ' -f1-3 /proc/loadavg)" \
  '{date: $date, n: $n, rounds: $rounds, tail: $tail, parallel: $parallel,
    threads: (if $threads == "" then null else ($threads | tonumber) end),
    node: $node, rustc: $rustc, cpus: $cpus, cpu: $cpu, kernel: $kernel,
    commit: $commit, dirty: ($dirty != ""),
    loadavgStart: $loadStart, loadavgEnd: $loadEnd}')
mkdir -p results
node js/summarize.js "$PHASES" "$WRITER_LINE" "$META" "$RESULTS"
note "results: $RESULTS ; log: $LOG"
