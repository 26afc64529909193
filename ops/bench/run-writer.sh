#!/usr/bin/env bash
# Side-by-side WRITER / SERVER benchmark: our BeeWriter + Replicator (bee-writer) against the
# JS Hyperbee + Corestore writer (js/writer.js), in one run. See README.md.
#
#   bash ops/bench/run-writer.sh                            # N=100000 ROUNDS=2
#   N=10000 ROUNDS=1 BUILD_ROUNDS=1 LIVE_COUNT=200 bash ops/bench/run-writer.sh   # quick check
#
# Parts (PARTS, default "data build serve live"):
#   data:  bench-data --check: the Rust generator gives byte-identical keys and values to js/data.js.
#   build: BUILD_ROUNDS standalone builds of each writer (N posts, batches of BATCH), alternating,
#          plus the builds of the two serving writers. puts/s each.
#   serve: one JS writer and one Rust writer (both N posts) stay up; each round runs fresh reader
#          processes against them (SERVE_PHASES, "reader:mode:server"), asking the SERVING writer
#          for its CPU just before and just after each reader.
#   live:  for each pair in LIVE_PAIRS ("writer:reader"), a fresh writer of LIVE_N posts and a
#          fresh live reader; the writer puts LIVE_COUNT posts, one every LIVE_INTERVAL ms, each
#          stamped with CLOCK_MONOTONIC; the reader reports publish-to-read latency percentiles.
#
# Other settings: TAIL (1000), PARALLEL (Rust reader requests in flight, 256), THREADS (Rust tokio
# worker threads of the readers and writers, default one per core), PHASE_TIMEOUT (900 s).
#
# stdout: one JSON line per build / phase / live pair, then tables. Everything also goes to
# results/writer-<UTC date>.json; the processes' stderr to the log named at the end.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=lib.sh
source ./lib.sh

N=${N:-100000}
ROUNDS=${ROUNDS:-2}
BUILD_ROUNDS=${BUILD_ROUNDS:-2}
BATCH=${BATCH:-1000}
TAIL=${TAIL:-1000}
PARALLEL=${PARALLEL:-256}
THREADS=${THREADS:-}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-900}
PARTS=${PARTS:-data build serve live}
SERVE_PHASES=${SERVE_PHASES:-js:full:js js:full:rust rust:full:rust rust:full:js js:tail:js js:tail:rust rust:tail:rust}
LIVE_N=${LIVE_N:-1000}
LIVE_INTERVAL=${LIVE_INTERVAL:-10}
LIVE_COUNT=${LIVE_COUNT:-1000}
LIVE_ROUNDS=${LIVE_ROUNDS:-2}
LIVE_PAIRS=${LIVE_PAIRS:-rust:rust rust:js js:js js:rust}

TARGET_DIR=${CARGO_TARGET_DIR:-../../target}
BIN="$TARGET_DIR/release"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS="results/writer-$STAMP.json"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/apiary-bench-writer-XXXXXX")
LOG="$WORK/run.log"
: >"$WORK/data.txt" >"$WORK/builds.jsonl" >"$WORK/phases.jsonl" >"$WORK/live.jsonl" >"$WORK/writers.jsonl"

rust_threads() { [[ -n $THREADS ]] && echo --threads "$THREADS"; true; }

note "building apiary-bench (release)"
cargo build --release -p apiary-bench >&2

# ---- writers: long-lived processes driven over FIFOs (stdin commands, stdout JSON lines; lib.sh) ----
WRITER_STOP_TRIES=50

writer_cmd_of() { # tool n
  if [[ $1 == js ]]; then
    echo node js/writer.js --n "$2" --batch "$BATCH"
  else
    echo "$BIN/bee-writer" --n "$2" --batch "$BATCH" $(rust_threads)
  fi
}

start_bench_writer() { # name tool n
  # shellcheck disable=SC2046
  start_writer "$1" $(writer_cmd_of "$2" "$3")
  jq -c --arg name "$1" '{writer: $name} + .' <<<"${W_LINE[$1]}" >>"$WORK/writers.jsonl"
}

stop_all() {
  stop_writers
}
trap stop_all EXIT

# ---- data: the Rust generator against js/data.js ----
DATA_CHECK='null'
if has_part data; then
  note "bench-data --check --n $N"
  if "$BIN/bench-data" --check --n "$N" >"$WORK/data.txt" 2>>"$LOG"; then ok=true; else ok=false; fi
  cat "$WORK/data.txt" >&2
  DATA_CHECK=$(jq -Rsc --argjson ok "$ok" --argjson n "$N" '{ok: $ok, n: $n, output: (split("\n") | map(select(. != "")))}' "$WORK/data.txt")
fi

# ---- build: standalone builds, alternating (each process exits at stdin EOF) ----
build_once() { # round tool
  local round=$1 tool=$2 line rc=0
  echo "--- build round $round $tool" >>"$LOG"
  # shellcheck disable=SC2046
  line=$(timeout "$PHASE_TIMEOUT" $(writer_cmd_of "$tool" "$N") </dev/null 2>>"$LOG" | head -n1) || rc=$?
  if [[ $rc -ne 0 || -z $line ]]; then
    note "build round $round $tool FAILED (exit $rc)"
    line=$(jq -cn --arg tool "$tool" '{tool: $tool, error: "failed"}')
  fi
  jq -c --arg round "$round" --arg tool "$tool" \
    '{round: $round, tool: $tool, buildSeconds, putsPerSec, length, byteLength, buildCpuSeconds, cpu, maxRssMB, error}
     | with_entries(select(.value != null))' <<<"$line" | tee -a "$WORK/builds.jsonl"
}
if has_part build; then
  for round in $(seq "$BUILD_ROUNDS"); do
    build_once "$round" js
    sleep 1
    build_once "$round" rust
    sleep 1
  done
fi

# ---- serve: two serving writers, fresh readers ----
run_phase() { # round reader mode server
  local round=$1 tool=$2 mode=$3 server=$4 port key cmd before after t0 t1 line rc=0
  port=$(jq -r .port <<<"${W_LINE[$server]}")
  key=$(jq -r .key <<<"${W_LINE[$server]}")
  if [[ $tool == js ]]; then
    cmd=(node js/reader.js --port "$port" --key "$key" --mode "$mode" --tail "$TAIL")
  else
    cmd=("$BIN/replicate-reader" --port "$port" --key "$key" --mode "$mode" --tail "$TAIL" --parallel "$PARALLEL")
    [[ -n $THREADS ]] && cmd+=(--threads "$THREADS")
  fi
  before=$(writer_say "$server" cpu)
  t0=$(date +%s.%N)
  echo "--- round $round $tool $mode <- $server: ${cmd[*]}" >>"$LOG"
  line=$(timeout "$PHASE_TIMEOUT" "${cmd[@]}" 2>>"$LOG") || rc=$?
  t1=$(date +%s.%N)
  after=$(writer_say "$server" cpu)
  if [[ $rc -ne 0 || -z $line ]] || ! jq -e . >/dev/null 2>&1 <<<"$line"; then
    note "round $round $tool $mode <- $server FAILED (exit $rc); last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    line=$(jq -cn --arg tool "$tool" --arg mode "$mode" --argjson rc "$rc" --arg out "$line" \
      '{tool: $tool, mode: $mode, error: "exit \($rc)", stdout: $out}')
  fi
  jq -c --argjson round "$round" --arg tool "$tool" --arg server "$server" --argjson b "$before" \
    --argjson a "$after" --arg t0 "$t0" --arg t1 "$t1" '
    {phase: "\($tool) \(.mode) <- \($server)", round: $round, tool: $tool, server: $server} + . + {
      writerCpuSeconds: ((($a.user + $a.system) - ($b.user + $b.system)) * 1000 | round / 1000),
      writerCpuUser: ((($a.user - $b.user)) * 1000 | round / 1000),
      writerCpuSystem: ((($a.system - $b.system)) * 1000 | round / 1000),
      writerMaxRssMB: $a.maxRssMB,
      processWallSeconds: ((($t1 | tonumber) - ($t0 | tonumber)) * 1000 | round / 1000)
    }' <<<"$line" | tee -a "$WORK/phases.jsonl"
}
if has_part serve; then
  note "starting the serving writers (N=$N each; log: $LOG)"
  start_bench_writer js js "$N"
  sleep 1
  start_bench_writer rust rust "$N"
  sleep 1
  for round in $(seq "$ROUNDS"); do
    for p in $SERVE_PHASES; do
      IFS=: read -r tool mode server <<<"$p"
      run_phase "$round" "$tool" "$mode" "$server"
    done
  done
  stop_writer js
  stop_writer rust
fi

# ---- live: fresh writer + fresh live reader per pair ----
live_pair() { # round writer-tool reader-tool
  local round=$1 wt=$2 rt=$3 name="live-$1-$2-$3" port key cmd rpid out ready=0 wline rline rc=0
  start_bench_writer "$name" "$wt" "$LIVE_N"
  port=$(jq -r .port <<<"${W_LINE[$name]}")
  key=$(jq -r .key <<<"${W_LINE[$name]}")
  if [[ $rt == js ]]; then
    cmd=(node js/live-reader.js --port "$port" --key "$key" --count "$LIVE_COUNT")
  else
    cmd=("$BIN/live-reader" --port "$port" --key "$key" --count "$LIVE_COUNT")
    [[ -n $THREADS ]] && cmd+=(--threads "$THREADS")
  fi
  out="$WORK/$name.reader"
  echo "--- live round $round $wt -> $rt: ${cmd[*]}" >>"$LOG"
  timeout "$PHASE_TIMEOUT" "${cmd[@]}" >"$out" 2>>"$LOG" &
  rpid=$!
  [[ -n $(await_match "$out" '"ready"' "$rpid" 300 0.1) ]] && ready=1
  if [[ $ready == 1 ]]; then
    wline=$(writer_say "$name" "live $LIVE_INTERVAL $LIVE_COUNT" $((LIVE_COUNT * LIVE_INTERVAL / 1000 + 120))) || wline=''
    jq -e . >/dev/null 2>&1 <<<"$wline" || wline='{"error": "no answer to live"}'
    wait "$rpid" || rc=$?
    rline=$(tail -n1 "$out")
  else
    rc=1
    wline='{}'
    rline=""
  fi
  stop_writer "$name"
  if [[ $rc -ne 0 ]] || ! jq -e '.received' >/dev/null 2>&1 <<<"$rline"; then
    note "live $wt -> $rt FAILED (exit $rc); last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    rline=$(jq -cn --argjson rc "$rc" --arg out "$(cat "$out")" '{error: "exit \($rc)", stdout: $out}')
  fi
  jq -c --argjson round "$round" --arg w "$wt" --arg r "$rt" --argjson wl "${wline:-null}" '
    {pair: "\($w) -> \($r)", round: $round, writer: $w, reader: $r} + . +
    {writerPutP50ms: $wl.writerPutP50ms, writerPutP99ms: $wl.writerPutP99ms, writerPutMaxMs: $wl.writerPutMaxMs,
     writerLateTicks: $wl.writerLateTicks, published: $wl.published, publishSeconds: $wl.publishSeconds,
     intervalMs: $wl.intervalMs}' <<<"$rline" | tee -a "$WORK/live.jsonl"
}
if has_part live; then
  for round in $(seq "$LIVE_ROUNDS"); do
    for pair in $LIVE_PAIRS; do
      IFS=: read -r wt rt <<<"$pair"
      live_pair "$round" "$wt" "$rt"
      sleep 1
    done
  done
fi

trap - EXIT
stop_all

# ---- results file and tables ----
META=$(jq -cn \
  --arg date "$STAMP" --argjson n "$N" --argjson rounds "$ROUNDS" --argjson buildRounds "$BUILD_ROUNDS" \
  --argjson batch "$BATCH" --argjson tail "$TAIL" --argjson parallel "$PARALLEL" --arg threads "$THREADS" \
  --arg parts "$PARTS" --argjson liveN "$LIVE_N" --argjson liveInterval "$LIVE_INTERVAL" \
  --argjson liveCount "$LIVE_COUNT" --argjson liveRounds "$LIVE_ROUNDS" \
  --arg node "$(node --version)" --arg rustc "$(rustc --version)" \
  --argjson cpus "$(nproc)" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
  --arg kernel "$(uname -r)" --arg commit "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --arg dirty "$(git status --porcelain 2>/dev/null | head -c1)" \
  --arg loadStart "$LOAD_START" --arg loadEnd "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --argjson dataCheck "$DATA_CHECK" \
  '{date: $date, n: $n, rounds: $rounds, buildRounds: $buildRounds, batch: $batch, tail: $tail,
    parallel: $parallel, threads: (if $threads == "" then null else ($threads | tonumber) end),
    parts: $parts, liveN: $liveN, liveIntervalMs: $liveInterval, liveCount: $liveCount, liveRounds: $liveRounds,
    node: $node, rustc: $rustc, cpus: $cpus, cpu: $cpu, kernel: $kernel,
    commit: $commit, dirty: ($dirty != ""),
    loadavgStart: $loadStart, loadavgEnd: $loadEnd, dataCheck: $dataCheck}')
mkdir -p results
node js/summarize-writer.js "$WORK" "$META" "$RESULTS"
note "results: $RESULTS ; log: $LOG"
