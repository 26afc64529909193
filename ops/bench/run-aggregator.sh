#!/usr/bin/env bash
# AGGREGATOR benchmark: the release apiary-aggregator end to end (HTTP API, replication from
# our and the JS writer, tantivy index), side by side with the JS reference index.js
# (replicate + MiniSearch + 1000 queries), in one run. See README.md.
#
#   bash ops/bench/run-aggregator.sh                           # everything at full size
#   N=10000 QUERY_BEES=2 QUERY_POSTS=10000 FEEDS=100 LIVE_COUNT=200 LOAD_SECONDS=3 \
#     bash ops/bench/run-aggregator.sh                         # quick check
#   PARTS="ingest" bash ops/bench/run-aggregator.sh            # only some parts
#
# Parts (PARTS, default "ingest live query feeds"; "proofs" on demand):
#   ingest: for each writer of INGEST_WRITERS (rust = bee-writer, js = js/writer.js): a fresh
#           aggregator (fresh data dir) follows the writer's N-post bee (POST /v1/feeds) and the
#           client polls GET /v1/feeds/{key} until indexedVersion == length: entries/s, the
#           aggregator's CPU and peak RSS; then the reference query set on those N entries.
#           Then (REF=1) the JS reference `index.js --n N --queries QUERIES`, from a scratch
#           copy of ../shared/bench/js-reference (REF_DIR, npm ci'd there when missing).
#   live:   for each LIVE_CASES "writer:searchEvery[:commitIntervalMs[:subscribers]]": a fresh
#           writer (LIVE_N posts) followed by a fresh aggregator; an SSE client on /v1/stream;
#           the writer then puts LIVE_COUNT posts, one every LIVE_INTERVAL ms, each stamped
#           with CLOCK_MONOTONIC: publish → stream latency, and (searchEvery > 0) publish →
#           visible in /v1/search for every searchEvery-th post. With subscribers, that many
#           more SSE connections (agg-client live --subscribers, src/fanout.rs), each expecting
#           every post: deliveries, their latency, the aggregator's RSS before and after.
#   query:  bee-farm serves QUERY_BEES bees of QUERY_POSTS posts (seeds 1..), a fresh aggregator
#           follows them all through that one address; when all are indexed, its disk (sled
#           state and block store, tantivy index: MB and bytes per entry), then the reference
#           query set and /v1/feed pages one at a time (p50/p99), then agg-client load with
#           LOAD_CONNECTIONS concurrent connections for LOAD_SECONDS each, per URL set; then,
#           with LOAD_DURING_INGEST (connections, e.g. "1 64"), the same load while the
#           aggregator follows and indexes DURING_BEES (4) more bees of QUERY_POSTS posts, a new
#           batch of bees for each row (rows "SET during an ingest"; ingestRunning tells whether
#           the ingest outlasted the row, ingestEntriesPerSec its rate).
#   proofs: for each of RETENTIONS ("replica index-only"): bee-farm's QUERY_BEES x QUERY_POSTS
#           ingested by a fresh aggregator with that retention (entries/s, CPU), its disk once
#           idle (and the blocks dropped), then proof-client: for PROOFS reference queries the
#           first hit's /v1/proofs bundle (latency, bytes, blocks, nodes, Rust verify time) and
#           js/verify-time.js over those bundles (the JS verifier's time); under index-only the
#           bundles' blocks come from the peer, then again with the peer stopped (inclusion).
#   feeds:  bee-farm serves FEEDS bees of FEED_POSTS posts on one port; a fresh aggregator
#           follows every key (POST /v1/feeds, FOLLOW_CONCURRENCY at a time); when /metrics
#           shows FEEDS * FEED_POSTS entries: follow and index times, VmRSS, VmHWM, open fds.
#
# Other settings: READ_CACHE_MB (unset: the aggregator's default, 32; 0 turns the cache of feed
# and search bodies off, to measure every request answered by the index), QUERIES (1000),
# COMMIT_INTERVAL_MS (unset: the aggregator's default; a live
# case "writer:searchEvery:ms" sets its own), AGG_EXTRA (more aggregator.toml lines, \n between
# them, e.g. "state_cache_mb = 32\nindex_memory_mb = 32"), MEMORY_LIMIT_MB (root: each
# aggregator runs in a memory cgroup with this hard limit, page cache included; its peak and
# OOM kills are recorded), INGEST_BARE (1: before each ingest, the Rust
# replicate-reader downloads the same bee, the replication-only ceiling), PHASE_TIMEOUT (s, 900), KEEP_DATA=1 (keep the aggregators' data dirs),
# PERF="part ..." (perf record the aggregator during those parts' ingest, or during one load
# row with "load-SET-CONNECTIONS", e.g. "load-feed-1", with PERF_OPTS,
# default "-F 499 -g"; "-F 499 --call-graph dwarf" gives whole Rust stacks; the figures of a
# profiled run are not clean).
#
# stdout: one JSON line per case, then tables. Everything also goes to
# results/aggregator-<UTC date>.json; the processes' stderr to the log named at the end.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=lib.sh
source ./lib.sh

N=${N:-100000}
PARTS=${PARTS:-ingest live query feeds}
INGEST_WRITERS=${INGEST_WRITERS:-rust js}
INGEST_BARE=${INGEST_BARE:-1}
REF=${REF:-1}
REF_DIR=${REF_DIR:-/tmp/apiary-bench-js-reference}
QUERIES=${QUERIES:-1000}
READ_CACHE_MB=${READ_CACHE_MB:-}
MEMORY_LIMIT_MB=${MEMORY_LIMIT_MB:-}
AGG_CG=''
LIVE_N=${LIVE_N:-1000}
LIVE_INTERVAL=${LIVE_INTERVAL:-10}
LIVE_COUNT=${LIVE_COUNT:-1000}
LIVE_CASES=${LIVE_CASES:-rust:0 rust:10 js:10 rust:10:10 rust:0::10000}
LIVE_POLL_MS=${LIVE_POLL_MS:-2}
RETENTIONS=${RETENTIONS:-replica index-only}
PROOFS=${PROOFS:-1000}
QUERY_BEES=${QUERY_BEES:-10}
QUERY_POSTS=${QUERY_POSTS:-100000}
LOAD_CONNECTIONS=${LOAD_CONNECTIONS:-1 4 16 64}
LOAD_SECONDS=${LOAD_SECONDS:-10}
LOAD_SETS=${LOAD_SETS:-search feed}
LOAD_DURING_INGEST=${LOAD_DURING_INGEST:-}
DURING_BEES=${DURING_BEES:-4}
FEEDS=${FEEDS:-10000}
FEED_POSTS=${FEED_POSTS:-3}
FOLLOW_CONCURRENCY=${FOLLOW_CONCURRENCY:-4}
COMMIT_INTERVAL_MS=${COMMIT_INTERVAL_MS:-}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-900}
KEEP_DATA=${KEEP_DATA:-}
PERF=${PERF:-}
PERF_OPTS=${PERF_OPTS:--F 499 -g}

TARGET_DIR=${CARGO_TARGET_DIR:-../../target}
BIN="$TARGET_DIR/release"
AGG="$BIN/apiary-aggregator"
CLIENT="$BIN/agg-client"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS="results/aggregator-$STAMP.json"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/apiary-bench-agg-XXXXXX")
LOG="$WORK/run.log"
: >"$WORK/ingest.jsonl" >"$WORK/ref.jsonl" >"$WORK/live.jsonl" >"$WORK/query.jsonl" >"$WORK/load.jsonl" >"$WORK/feeds.jsonl" >"$WORK/proofs.jsonl" >"$WORK/loadavg.jsonl"

# What was built: core/ and aggregator/ as they are in the working tree (a hash of their
# uncommitted changes, tracked and untracked, goes into meta next to the commit).
TREE_SHA=$(cd ../.. && { git diff HEAD -- core aggregator; git ls-files --others --exclude-standard -z -- core aggregator | xargs -0 -r cat; } | sha256sum | cut -d' ' -f1)
note "building apiary-aggregator and apiary-bench (release)"
(cd ../.. && cargo build --release -p apiary-aggregator -p apiary-bench >&2)

# ---- writers (bee-writer, js/writer.js, bee-farm): long-lived processes over FIFOs (lib.sh) ----
writer_cmd() { # tool n
  if [[ $1 == js ]]; then
    echo node js/writer.js --n "$2"
  else
    echo "$BIN/bee-writer" --n "$2"
  fi
}

# ---- the aggregator: a fresh data dir and config per case ----
AGG_PID=''
AGG_HTTP=''
AGG_DIR=''
start_agg() { # name
  AGG_DIR="$WORK/agg-$1"
  mkdir -p "$AGG_DIR"
  {
    echo "# run-aggregator.sh: fresh data dir, HTTP on a free port, no dial-in listener,"
    echo "# rate limits high enough for the load generator. Everything else: the defaults."
    echo "data_dir = \"$AGG_DIR/data\""
    echo 'http = "127.0.0.1:0"'
    echo 'listen = ""'
    echo 'rate_limit_per_second = 1000000'
    echo 'rate_limit_burst = 1000000'
    if [[ -n $READ_CACHE_MB ]]; then
      echo "read_cache_mb = $READ_CACHE_MB"
    fi
    if [[ -n ${CONNECTIONS_OVERRIDE:-} ]]; then
      echo "http_max_connections = $CONNECTIONS_OVERRIDE"
      echo "http_max_connections_per_ip = $CONNECTIONS_OVERRIDE"
    fi
    if [[ -n ${COMMIT_OVERRIDE:-} ]]; then
      echo "commit_interval_ms = $COMMIT_OVERRIDE"
    elif [[ -n $COMMIT_INTERVAL_MS ]]; then
      echo "commit_interval_ms = $COMMIT_INTERVAL_MS"
    fi
    if [[ -n ${AGG_EXTRA:-} ]]; then
      printf '%b\n' "$AGG_EXTRA"
    fi
    true
  } >"$AGG_DIR/aggregator.toml"
  echo "--- aggregator $1: $AGG --config $AGG_DIR/aggregator.toml" >>"$LOG"
  AGG_CG=''
  if [[ -n $MEMORY_LIMIT_MB ]]; then
    AGG_CG=$(cg_create "apiary-bench-$$-$1" "$MEMORY_LIMIT_MB") || exit 1
    note "aggregator $1: in memory cgroup $AGG_CG, limit $MEMORY_LIMIT_MB MB"
  fi
  # Through a shell that joins the cgroup and execs the aggregator: AGG_PID is the aggregator.
  bash -c '[[ -z $1 ]] || echo $$ >"$1/cgroup.procs"; shift; exec "$@"' _ "$AGG_CG" \
    "$AGG" --config "$AGG_DIR/aggregator.toml" >"$AGG_DIR/stdout" 2>>"$LOG" &
  AGG_PID=$!
  AGG_HTTP=$(await_match "$AGG_DIR/stdout" 'http://127\.0\.0\.1:[0-9]*' "$AGG_PID" 300 0.1)
  if [[ -z $AGG_HTTP ]]; then
    note "aggregator $1 did not start; the log:"
    tail -n 30 "$LOG" >&2
    exit 1
  fi
  note "aggregator $1: pid $AGG_PID, $AGG_HTTP"
}

agg_proc() { # -> {"cpu": s, "vmRssMB", "vmHwmMB", "rssAnonMB", "rssFileMB", "fds", "threads"} of the aggregator now
  proc_full "$AGG_PID"
}

settle_agg() { # timeout_s -> true once the aggregator used < 5% of a core over 2 s, false at timeout
  local deadline=$((SECONDS + $1)) c0 c1
  while ((SECONDS < deadline)); do
    c0=$(agg_proc | jq .cpu)
    sleep 2
    c1=$(agg_proc | jq .cpu)
    if jq -e -n --argjson a "$c0" --argjson b "$c1" '($b - $a) < 0.1' >/dev/null; then
      echo true
      return
    fi
  done
  echo false
}

# A memory cgroup (v2, or v1's memory controller) with a hard limit; prints its directory.
cg_create() { # name limit_mb
  local dir bytes=$(($2 * 1024 * 1024))
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    dir=/sys/fs/cgroup/$1
    mkdir -p "$dir" && echo "$bytes" >"$dir/memory.max" && echo 0 >"$dir/memory.swap.max"
  elif [[ -d /sys/fs/cgroup/memory ]]; then
    dir=/sys/fs/cgroup/memory/$1
    mkdir -p "$dir" && echo "$bytes" >"$dir/memory.limit_in_bytes"
  else
    note "MEMORY_LIMIT_MB: no memory cgroup controller here"
    return 1
  fi || {
    note "MEMORY_LIMIT_MB: cannot create $dir (needs root)"
    return 1
  }
  echo "$dir"
}

agg_cgroup() { # -> {"limitMB", "peakMB", "oomKills"} of the aggregator's cgroup, or null
  local dir=$AGG_CG peak oom
  if [[ -z $dir ]]; then
    echo null
    return
  fi
  if [[ -f $dir/memory.peak ]]; then
    peak=$(cat "$dir/memory.peak")
    oom=$(awk '$1 == "oom_kill" {print $2}' "$dir/memory.events")
  else
    peak=$(cat "$dir/memory.max_usage_in_bytes")
    oom=$(awk '$1 == "oom_kill" {print $2}' "$dir/memory.oom_control")
  fi
  jq -cn --argjson l "$MEMORY_LIMIT_MB" --argjson p "$peak" --arg o "$oom" \
    '{limitMB: $l, peakMB: ($p / 1048576 * 10 | round / 10), oomKills: ($o | tonumber? // null)}'
}

stop_agg() {
  [[ -z $AGG_PID ]] && return 0
  stop_pid "$AGG_PID"
  AGG_PID=''
  if [[ -n $AGG_CG ]]; then
    rmdir "$AGG_CG" 2>/dev/null || true
    AGG_CG=''
  fi
  [[ -z $KEEP_DATA && -n $AGG_DIR ]] && rm -rf "$AGG_DIR/data"
  true
}

PERF_PID=''
perf_start() { # part label
  PERF_PID=''
  if [[ " $PERF " == *" $1 "* ]]; then
    # shellcheck disable=SC2086
    perf record $PERF_OPTS -p "$AGG_PID" -o "$WORK/perf-$2.data" >>"$LOG" 2>&1 &
    PERF_PID=$!
    sleep 0.5
    note "perf record -g of the aggregator -> $WORK/perf-$2.data"
  fi
}
perf_stop() {
  if [[ -n $PERF_PID ]]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=''
  fi
}

stop_all() {
  perf_stop
  stop_agg
  stop_writers
}
trap stop_all EXIT

# ---- ingest: one bee of N posts from each writer; then the JS reference ----
if has_part ingest; then
  loadavg "ingest start"
  for tool in $INGEST_WRITERS; do
    name="ingest-$tool"
    # shellcheck disable=SC2046
    start_writer "$name" $(writer_cmd "$tool" "$N")
    key=$(jq -r .key <<<"${W_LINE[$name]}")
    port=$(jq -r .port <<<"${W_LINE[$name]}")
    length=$(jq -r .length <<<"${W_LINE[$name]}")
    echo "$key" >"$WORK/$name.keys"
    bare='null'
    if [[ $INGEST_BARE == 1 ]]; then
      # The ceiling: our replication alone (sled store, verify, no decode, no index), same writer.
      echo "--- bare replication <- $tool: replicate-reader --mode full" >>"$LOG"
      bare=$(timeout "$PHASE_TIMEOUT" "$BIN/replicate-reader" --port "$port" --key "$key" --mode full 2>>"$LOG") || bare='null'
      jq -e . >/dev/null 2>&1 <<<"$bare" || bare='null'
      sleep 1
    fi
    start_agg "$name"
    sleep 1
    before=$(writer_say "$name" cpu)
    perf_start ingest "$name"
    line=$(timeout "$PHASE_TIMEOUT" "$CLIENT" ingest --http "$AGG_HTTP" --keys "$WORK/$name.keys" \
      --peer "127.0.0.1:$port" --entries "$N" --length "$length" --pid "$AGG_PID" 2>>"$LOG") || line='{"error": "ingest failed"}'
    perf_stop
    after=$(writer_say "$name" cpu)
    q=$(timeout "$PHASE_TIMEOUT" "$CLIENT" queries --http "$AGG_HTTP" --n "$QUERIES" --no-feed 2>>"$LOG") || q='{"error": "queries failed"}'
    proc=$(agg_proc)
    stop_agg
    stop_writer "$name"
    jq -c --arg tool "$tool" --argjson w "${W_LINE[$name]}" --argjson b "$before" --argjson a "$after" \
      --argjson q "$q" --argjson proc "$proc" --argjson bare "$bare" '
      {case: "aggregator <- \($tool) writer", writer: $tool, n: $w.n, length: $w.length, byteLength: $w.byteLength} + . +
      {writerCpuSeconds: ((($a.user + $a.system) - ($b.user + $b.system)) * 1000 | round / 1000),
       writerMaxRssMB: $a.maxRssMB, queries: $q, aggAfterQueries: $proc,
       bareReplication: (if $bare == null then null else ($bare | {seconds, blocks, blocksPerSec, phaseCpuSeconds, maxRssMB}) end)}' <<<"$line" | tee -a "$WORK/ingest.jsonl"
    sleep 1
  done
  if [[ $REF == 1 ]]; then
    if [[ ! -d $REF_DIR/node_modules/minisearch ]]; then
      note "installing the JS reference in $REF_DIR (npm ci)"
      mkdir -p "$REF_DIR"
      cp -r ../../../shared/bench/js-reference/. "$REF_DIR/"
      chmod -R u+w "$REF_DIR"
      (cd "$REF_DIR" && npm ci --no-audit --no-fund >>"$LOG" 2>&1)
    fi
    # Our port of index.js's query generator must give the very same queries.
    same=false
    if (cd "$REF_DIR" && node -e "
      const { prng, VOCAB } = require('./lib'); const rq = prng(7)
      const w = () => VOCAB[Math.floor(VOCAB.length * Math.pow(rq(), 2.5))]
      const out = []; for (let i = 0; i < $QUERIES; i++) out.push(rq() < 0.5 ? w() : w() + ' ' + w())
      console.log(out.join('\n'))") | cmp -s - <("$CLIENT" print-queries --n "$QUERIES"); then same=true; fi
    note "query set identical to the reference index.js's: $same"
    note "JS reference: node index.js --n $N --queries $QUERIES (in $REF_DIR)"
    echo "--- reference: node index.js --n $N --queries $QUERIES" >>"$LOG"
    ref=$(cd "$REF_DIR" && timeout "$PHASE_TIMEOUT" node index.js --n "$N" --queries "$QUERIES" 2>>"$LOG" | tail -n1) || ref=''
    jq -e . >/dev/null 2>&1 <<<"$ref" || ref='{"error": "index.js failed"}'
    jq -c --argjson same "$same" '{case: "JS reference index.js", querySetIdentical: $same} + .' <<<"$ref" | tee -a "$WORK/ref.jsonl"
  fi
  loadavg "ingest end"
fi

# ---- live: publish -> stream and publish -> searchable ----
if has_part live; then
  loadavg "live start"
  i=0
  for c in $LIVE_CASES; do
    i=$((i + 1))
    IFS=: read -r tool every commit subs <<<"$c"
    subs=${subs:-0}
    name="live-$i-$tool"
    # shellcheck disable=SC2046
    start_writer "$name" $(writer_cmd "$tool" "$LIVE_N")
    key=$(jq -r .key <<<"${W_LINE[$name]}")
    port=$(jq -r .port <<<"${W_LINE[$name]}")
    length=$(jq -r .length <<<"${W_LINE[$name]}")
    echo "$key" >"$WORK/$name.keys"
    CONNECTIONS_OVERRIDE=$([[ $subs -gt 0 ]] && echo $((subs + 256)) || true) \
      COMMIT_OVERRIDE=${commit:-} start_agg "$name"
    ing=$(timeout 300 "$CLIENT" ingest --http "$AGG_HTTP" --keys "$WORK/$name.keys" --peer "127.0.0.1:$port" \
      --entries "$LIVE_N" --length "$length" --pid "$AGG_PID" 2>>"$LOG") || ing='{"error": "ingest failed"}'
    sleep 1
    out="$WORK/$name.client"
    echo "--- live $name: agg-client live --search-every $every --subscribers $subs" >>"$LOG"
    pre=$(agg_proc)
    timeout "$PHASE_TIMEOUT" "$CLIENT" live --http "$AGG_HTTP" --key "$key" --count "$LIVE_COUNT" --first "$LIVE_N" \
      --search-every "$every" --poll-ms "$LIVE_POLL_MS" --subscribers "$subs" >"$out" 2>>"$LOG" &
    cpid=$!
    ready=0
    [[ -n $(await_match "$out" '"ready"' "$cpid" 300 0.1) ]] && ready=1
    p0=$(agg_proc)
    rc=0
    if [[ $ready == 1 ]]; then
      wline=$(writer_say "$name" "live $LIVE_INTERVAL $LIVE_COUNT" $((LIVE_COUNT * LIVE_INTERVAL / 1000 + 120))) || wline=''
      jq -e . >/dev/null 2>&1 <<<"$wline" || wline='{"error": "no answer to live"}'
      wait "$cpid" || rc=$?
      rline=$(tail -n1 "$out")
    else
      wline='{}'
      rline=''
      rc=1
    fi
    p1=$(agg_proc)
    stop_agg
    stop_writer "$name"
    if [[ $rc -ne 0 ]] || ! jq -e '.received' >/dev/null 2>&1 <<<"$rline"; then
      note "live $name FAILED (exit $rc); last lines of $LOG:"
      tail -n 20 "$LOG" >&2
      rline=$(jq -cn --argjson rc "$rc" --arg out "$(cat "$out")" '{error: "exit \($rc)", stdout: $out}')
    fi
    jq -c --arg tool "$tool" --argjson every "$every" --argjson wl "$wline" --argjson ing "$ing" \
      --argjson pre "$pre" --argjson p0 "$p0" --argjson p1 "$p1" --arg commit "${commit:-}" --argjson subs "$subs" '
      {case: ("live <- \($tool) writer" + (if $every > 0 then ", search every \($every)" else "" end)
              + (if $commit != "" then ", commit_interval_ms = \($commit)" else "" end)
              + (if $subs > 0 then ", \($subs) more subscribers" else "" end)),
       writer: $tool, commitIntervalMs: (if $commit != "" then ($commit | tonumber) else null end)} + . +
      {writerPutP50ms: $wl.writerPutP50ms, writerPutP99ms: $wl.writerPutP99ms, writerLateTicks: $wl.writerLateTicks,
       published: $wl.published, publishSeconds: $wl.publishSeconds, intervalMs: $wl.intervalMs,
       backfillSeconds: $ing.seconds,
       aggCpuSeconds: (($p1.cpu - $p0.cpu) * 100 | round / 100), aggVmHwmMB: $p1.vmHwmMB,
       aggVmRssMB: {beforeSubscribers: $pre.vmRssMB, subscribed: $p0.vmRssMB, end: $p1.vmRssMB}}' <<<"$rline" | tee -a "$WORK/live.jsonl"
    sleep 1
  done
  loadavg "live end"
fi

# ---- query: QUERY_BEES x QUERY_POSTS entries, then queries and load ----
if has_part query; then
  loadavg "query start"
  name=query-farm
  start_writer "$name" "$BIN/bee-farm" --bees "$QUERY_BEES" --posts "$QUERY_POSTS" --keys-out "$WORK/query.keys"
  port=$(jq -r .port <<<"${W_LINE[$name]}")
  length=$(jq -r .length <<<"${W_LINE[$name]}")
  # The per-address connection cap (64 by default, a guard against one client hogging the
  # server) would refuse some of the load generator's reconnects: the load rows measure reads.
  CONNECTIONS_OVERRIDE=${CONNECTIONS_OVERRIDE:-4096} start_agg query
  sleep 1
  before=$(writer_say "$name" cpu)
  perf_start query query
  ing=$(timeout "$PHASE_TIMEOUT" "$CLIENT" ingest --http "$AGG_HTTP" --keys "$WORK/query.keys" --peer "127.0.0.1:$port" \
    --entries $((QUERY_BEES * QUERY_POSTS)) --length "$length" --pid "$AGG_PID" --poll-ms 250 2>>"$LOG") || ing='{"error": "ingest failed"}'
  perf_stop
  after=$(writer_say "$name" cpu)
  # Disk after the ingest (and its last commit): the block store and state (sled) and the index.
  disk=$(jq -cn --argjson state "$(du -sb "$AGG_DIR/data/state" | cut -f1)" \
    --argjson index "$(du -sb "$AGG_DIR/data/index" | cut -f1)" --argjson n "$((QUERY_BEES * QUERY_POSTS))" '
    {stateMB: ($state / 1e6 | round), indexMB: ($index / 1e6 | round),
     bytesPerEntry: {state: ($state / $n | round), index: ($index / $n | round), total: (($state + $index) / $n | round)}}')
  jq -c --argjson w "${W_LINE[$name]}" --argjson b "$before" --argjson a "$after" --argjson disk "$disk" '
    {case: "ingest of \($w.bees) bees x \($w.postsPerBee) posts from bee-farm", farm: ($w | del(.keysFile))} + . +
    {farmCpuSeconds: ((($a.user + $a.system) - ($b.user + $b.system)) * 1000 | round / 1000), disk: $disk}' <<<"$ing" | tee -a "$WORK/query.jsonl"
  # Queries measure the index, not its background merges: wait until the aggregator is idle
  # (under 5% of a core over 2 s; tantivy merges the ingest's segments for a while after it).
  settle0=$(date +%s.%N)
  idle=$(settle_agg "${SETTLE_TIMEOUT:-900}")
  settle=$(jq -n --argjson a "$settle0" --argjson b "$(date +%s.%N)" --argjson idle "$idle" \
    '{seconds: (($b - $a) * 10 | round / 10), idle: $idle}')
  jq -c --argjson s "$settle" '{case: "settle after the ingest"} + $s' <<<'{}' | tee -a "$WORK/query.jsonl"
  loadavg "queries start"
  q=$(timeout "$PHASE_TIMEOUT" "$CLIENT" queries --http "$AGG_HTTP" --n "$QUERIES" --keys "$WORK/query.keys" \
    --posts "$QUERY_POSTS" --urls-out "$WORK/urls" 2>>"$LOG") || q='{"error": "queries failed"}'
  jq -c --arg e "$(jq -r .entries <<<"$ing")" '{case: "sequential queries at \($e) entries"} + .' <<<"$q" | tee -a "$WORK/query.jsonl"
  for set in $LOAD_SETS; do
    for conns in $LOAD_CONNECTIONS; do
      p0=$(agg_proc)
      perf_start "load-$set-$conns" "load-$set-$conns"
      l=$(timeout "$PHASE_TIMEOUT" "$CLIENT" load --urls "$WORK/urls-$set.txt" --connections "$conns" \
        --seconds "$LOAD_SECONDS" --label "$set" 2>>"$LOG") || l='{"error": "load failed"}'
      perf_stop
      p1=$(agg_proc)
      jq -c --arg set "$set" --argjson p0 "$p0" --argjson p1 "$p1" '
        {case: "load \($set) x \(.connections)", set: $set} + . +
        {aggCpuSeconds: (($p1.cpu - $p0.cpu) * 100 | round / 100),
         aggCpuPercent: ((($p1.cpu - $p0.cpu) / .seconds * 100) | round), aggVmRssMB: $p1.vmRssMB,
         aggRssAnonMB: $p1.rssAnonMB, aggRssFileMB: $p1.rssFileMB, aggFds: $p1.fds}' <<<"$l" | tee -a "$WORK/load.jsonl"
      sleep 1
    done
  done
  # Reads while the aggregator ingests: each row gets its own DURING_BEES bees, followed as
  # the row starts, so that the whole row runs during an ingest.
  if [[ -n $LOAD_DURING_INGEST ]]; then
    rows=$(($(wc -w <<<"$LOAD_SETS") * $(wc -w <<<"$LOAD_DURING_INGEST")))
    name2=during-farm
    start_writer "$name2" "$BIN/bee-farm" --bees $((rows * DURING_BEES)) --posts "$QUERY_POSTS" --seed 1000 \
      --keys-out "$WORK/during.keys"
    port2=$(jq -r .port <<<"${W_LINE[$name2]}")
    total=$(jq -r '.entries // 0' <<<"$ing")
    row=0
    for set in $LOAD_SETS; do
      for conns in $LOAD_DURING_INGEST; do
        sed -n "$((row * DURING_BEES + 1)),$(((row + 1) * DURING_BEES))p" "$WORK/during.keys" >"$WORK/during-$row.keys"
        total=$((total + DURING_BEES * QUERY_POSTS))
        t0=$(date +%s.%N)
        timeout "$PHASE_TIMEOUT" "$CLIENT" ingest --http "$AGG_HTTP" --keys "$WORK/during-$row.keys" --peer "127.0.0.1:$port2" \
          --entries "$total" --length "$length" --pid "$AGG_PID" --poll-ms 250 >"$WORK/during-$row.ingest" 2>>"$LOG" &
        ipid=$!
        # The follows are posted and blocks arriving before the load starts.
        sleep 1
        p0=$(agg_proc)
        l=$(timeout "$PHASE_TIMEOUT" "$CLIENT" load --urls "$WORK/urls-$set.txt" --connections "$conns" \
          --seconds "$LOAD_SECONDS" --label "$set" 2>>"$LOG") || l='{"error": "load failed"}'
        p1=$(agg_proc)
        running=false
        kill -0 "$ipid" 2>/dev/null && running=true
        wait "$ipid" || true
        secs=$(jq -n --argjson a "$t0" --argjson b "$(date +%s.%N)" '$b - $a')
        jq -c --arg set "$set" --argjson p0 "$p0" --argjson p1 "$p1" --argjson running "$running" \
          --argjson n $((DURING_BEES * QUERY_POSTS)) --argjson secs "$secs" '
          {case: "load \($set) x \(.connections) during an ingest", set: "\($set) during an ingest", during: true} + . +
          {ingestRunning: $running, ingestEntriesPerSec: ($n / $secs | round),
           aggCpuSeconds: (($p1.cpu - $p0.cpu) * 100 | round / 100),
           aggCpuPercent: ((($p1.cpu - $p0.cpu) / .seconds * 100) | round), aggVmRssMB: $p1.vmRssMB,
           aggRssAnonMB: $p1.rssAnonMB, aggRssFileMB: $p1.rssFileMB, aggFds: $p1.fds}' <<<"$l" | tee -a "$WORK/load.jsonl"
        row=$((row + 1))
      done
    done
    stop_writer "$name2"
  fi
  jq -c --argjson cg "$(agg_cgroup)" '{case: "aggregator after queries and load"} + . + {cgroup: $cg}' \
    <<<"$(agg_proc)" | tee -a "$WORK/query.jsonl"
  stop_agg
  stop_writer "$name"
  loadavg "query end"
fi

# ---- proofs: disk and ingest by retention, proof bundles held / fetched / inclusion only ----
if has_part proofs; then
  for ret in $RETENTIONS; do
    loadavg "proofs $ret start"
    name=proofs-farm
    start_writer "$name" "$BIN/bee-farm" --bees "$QUERY_BEES" --posts "$QUERY_POSTS" --keys-out "$WORK/proofs.keys"
    port=$(jq -r .port <<<"${W_LINE[$name]}")
    length=$(jq -r .length <<<"${W_LINE[$name]}")
    AGG_EXTRA="${AGG_EXTRA:-}\nretention = \"$ret\"" start_agg "proofs-$ret"
    sleep 1
    ing=$(timeout "$PHASE_TIMEOUT" "$CLIENT" ingest --http "$AGG_HTTP" --keys "$WORK/proofs.keys" --peer "127.0.0.1:$port" \
      --entries $((QUERY_BEES * QUERY_POSTS)) --length "$length" --pid "$AGG_PID" --poll-ms 250 2>>"$LOG") || ing='{"error": "ingest failed"}'
    idle=$(settle_agg "${SETTLE_TIMEOUT:-900}")
    dropped=$(curl -s "$AGG_HTTP/metrics" | awk '$1 == "apiary_blocks_dropped_total" {print $2}')
    spool=0
    [[ -d $AGG_DIR/data/spool ]] && spool=$(du -sb "$AGG_DIR/data/spool" | cut -f1)
    disk=$(jq -cn --argjson state "$(du -sb "$AGG_DIR/data/state" | cut -f1)" \
      --argjson index "$(du -sb "$AGG_DIR/data/index" | cut -f1)" --argjson spool "$spool" --argjson n "$((QUERY_BEES * QUERY_POSTS))" \
      --argjson dropped "${dropped:-0}" --argjson idle "$idle" '
      {stateMB: ($state / 1e6 | round), spoolMB: ($spool / 1e6 | round), indexMB: ($index / 1e6 | round),
       totalMB: (($state + $spool + $index) / 1e6 | round),
       bytesPerEntry: (($state + $spool + $index) / $n | round), blocksDropped: $dropped, settledIdle: $idle}')
    jq -c --arg ret "$ret" --argjson disk "$disk" '{case: "proofs: ingest, retention \($ret)", retention: $ret} + . + {disk: $disk}' \
      <<<"$ing" | tee -a "$WORK/proofs.jsonl"
    online=$([[ $ret == replica ]] && echo "blocks held" || echo "blocks fetched from the local peer")
    pr=$(timeout "$PHASE_TIMEOUT" "$BIN/proof-client" --http "$AGG_HTTP" --n "$PROOFS" --out "$WORK/bundles-$ret" \
      --label "$ret, $online" 2>>"$LOG") || pr='{"error": "proof-client failed"}'
    js=$(node js/verify-time.js "$WORK/bundles-$ret" 2>>"$LOG") || js='{"error": "verify-time failed"}'
    jq -c --arg ret "$ret" --argjson js "$js" '{case: "proofs: \(.label)", retention: $ret} + . + {js: $js}' <<<"$pr" | tee -a "$WORK/proofs.jsonl"
    stop_writer "$name"
    if [[ $ret == index-only ]]; then
      sleep 3
      pr=$(timeout "$PHASE_TIMEOUT" "$BIN/proof-client" --http "$AGG_HTTP" --n "$((PROOFS / 5))" \
        --label "$ret, no peer online" 2>>"$LOG") || pr='{"error": "proof-client failed"}'
      jq -c --arg ret "$ret" '{case: "proofs: \(.label)", retention: $ret} + .' <<<"$pr" | tee -a "$WORK/proofs.jsonl"
    fi
    stop_agg
    loadavg "proofs $ret end"
  done
fi

# ---- feeds: FEEDS small bees through one peer address ----
if has_part feeds; then
  loadavg "feeds start"
  name=feeds-farm
  start_writer "$name" "$BIN/bee-farm" --bees "$FEEDS" --posts "$FEED_POSTS" --keys-out "$WORK/feeds.keys"
  port=$(jq -r .port <<<"${W_LINE[$name]}")
  length=$(jq -r .length <<<"${W_LINE[$name]}")
  start_agg feeds
  sleep 1
  before=$(writer_say "$name" cpu)
  perf_start feeds feeds
  ing=$(timeout "$PHASE_TIMEOUT" "$CLIENT" ingest --http "$AGG_HTTP" --keys "$WORK/feeds.keys" --peer "127.0.0.1:$port" \
    --entries $((FEEDS * FEED_POSTS)) --length "$length" --pid "$AGG_PID" --concurrency "$FOLLOW_CONCURRENCY" \
    --poll-ms 500 2>>"$LOG") || ing='{"error": "ingest failed"}'
  perf_stop
  after=$(writer_say "$name" cpu)
  sleep 5
  settled=$(agg_proc)
  jq -c --argjson w "${W_LINE[$name]}" --argjson b "$before" --argjson a "$after" --argjson s "$settled" '
    {case: "follow \($w.bees) feeds of \($w.postsPerBee) posts via one peer", farm: ($w | del(.keysFile))} + . +
    {farmCpuSeconds: ((($a.user + $a.system) - ($b.user + $b.system)) * 1000 | round / 1000),
     aggSettled5s: $s}' <<<"$ing" | tee -a "$WORK/feeds.jsonl"
  stop_agg
  stop_writer "$name"
  loadavg "feeds end"
fi

trap - EXIT
stop_all

# ---- results file and tables ----
META=$(jq -cn \
  --arg date "$STAMP" --argjson n "$N" --arg parts "$PARTS" --arg ingestWriters "$INGEST_WRITERS" \
  --argjson queries "$QUERIES" --argjson liveN "$LIVE_N" --argjson liveInterval "$LIVE_INTERVAL" \
  --argjson liveCount "$LIVE_COUNT" --arg liveCases "$LIVE_CASES" --argjson livePollMs "$LIVE_POLL_MS" \
  --argjson queryBees "$QUERY_BEES" --argjson queryPosts "$QUERY_POSTS" --arg loadConnections "$LOAD_CONNECTIONS" \
  --argjson loadSeconds "$LOAD_SECONDS" --argjson feeds "$FEEDS" --argjson feedPosts "$FEED_POSTS" \
  --argjson followConcurrency "$FOLLOW_CONCURRENCY" --arg commitIntervalMs "$COMMIT_INTERVAL_MS" --arg readCacheMb "$READ_CACHE_MB" --arg aggExtra "${AGG_EXTRA:-}" --arg memoryLimitMb "$MEMORY_LIMIT_MB" --arg perf "$PERF" \
  --arg node "$(node --version)" --arg rustc "$(rustc --version)" \
  --argjson cpus "$(nproc)" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
  --arg kernel "$(uname -r)" --arg commit "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --arg dirty "$(git status --porcelain 2>/dev/null | head -c1)" \
  --arg dirtyFiles "$(git status --porcelain -- ../../core ../../aggregator 2>/dev/null | tr '\n' ';')" \
  --arg treeSha "$TREE_SHA" \
  --arg loadStart "$LOAD_START" --arg loadEnd "$(cut -d' ' -f1-3 /proc/loadavg)" \
  '{date: $date, n: $n, parts: $parts, ingestWriters: $ingestWriters, queries: $queries,
    liveN: $liveN, liveIntervalMs: $liveInterval, liveCount: $liveCount, liveCases: $liveCases, livePollMs: $livePollMs,
    queryBees: $queryBees, queryPosts: $queryPosts, loadConnections: $loadConnections, loadSeconds: $loadSeconds,
    feeds: $feeds, feedPosts: $feedPosts, followConcurrency: $followConcurrency,
    commitIntervalMs: (if $commitIntervalMs == "" then "default (50)" else ($commitIntervalMs | tonumber) end),
    readCacheMb: (if $readCacheMb == "" then "default (32)" else ($readCacheMb | tonumber) end),
    aggExtra: $aggExtra, memoryLimitMb: $memoryLimitMb,
    perf: $perf, node: $node, rustc: $rustc, cpus: $cpus, cpu: $cpu, kernel: $kernel,
    commit: $commit, dirty: ($dirty != ""), dirtyCoreAggregator: $dirtyFiles,
    coreAggregatorSha256: $treeSha, loadavgStart: $loadStart, loadavgEnd: $loadEnd}')
mkdir -p results
node js/summarize-aggregator.js "$WORK" "$META" "$RESULTS"
note "results: $RESULTS ; log: $LOG"
