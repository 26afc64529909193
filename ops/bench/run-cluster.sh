#!/usr/bin/env bash
# CLUSTER benchmark (issue 15): the release apiary-aggregator in cluster mode (three aggregators
# over a three-node NATS JetStream cluster on loopback) against one aggregator alone, on the
# same bees, in one run. See README.md ("Cluster").
#
#   bash ops/bench/run-cluster.sh                      # B=200 bees x E=2000 posts (400k entries)
#   B=20 E=1000 LIVE_COUNT=50 bash ops/bench/run-cluster.sh   # quick check
#
# What runs:
#   bees:    bee-farm (our Rust BeeWriter, as run-aggregator.sh's query/feeds parts) builds B bees
#            of E posts (batches of BATCH) and serves them all on one port: the only peer.
#   single:  one aggregator (no cluster, dht = false, rate limits raised) follows every bee
#            (POST /v1/feeds {key, peers: [farm]}, FOLLOW_CONCURRENCY at a time); GET /v1/feeds
#            every POLL_S until every feed's indexedVersion is the bees' length: entries/s, its
#            CPU seconds (/proc/PID/stat) over that window, VmHWM. Then it is stopped.
#   cluster: three nats-server (JetStream, routes, temp store dirs, loopback ports) and three
#            aggregators with [cluster] enabled, node a1..a3, roles follower + indexer,
#            replicas = 3, shards = SHARDS (separate data dirs, dht = false). Once the shard
#            leases are spread (every node holds some, SHARDS in all, unchanged over 3 s), every
#            bee is followed through a1 with the farm as peer; GET /v1/feeds on all three every
#            POST_S until each lists every feed at indexedVersion == length (the bees' length:
#            a node that does not hold a feed's shard has no replica and shows length 0):
#            entries/s to the first indexer done and to all three; CPU seconds of each
#            aggregator and each nats-server over that window, VmHWM of each; from each node's
#            /metrics apiary_cluster_links_published_total (summed) and _links_applied_total;
#            the entry log stream's messages and bytes (/jsz?acc=$G&streams=true) and the
#            store dirs on disk (du).
#   live:    with the cluster caught up, a bee-writer bee of LIVE_N posts is followed through a1
#            and indexed everywhere; then the writer puts LIVE_COUNT posts, one every
#            LIVE_INTERVAL ms, each stamped with CLOCK_MONOTONIC (bee-writer's `live`, as in
#            run-aggregator.sh's live part). A node poller (written to the work dir) looks for
#            each post in /v1/search on all three indexers every LIVE_POLL_MS (its 3 rarest
#            words, feed filter, matched by key, as agg-client's search sampler), starting at
#            the post's due time: publish -> searchable on every indexer (and on the first),
#            p50/p99/max.
#
# Settings (environment): B (200), E (2000), BATCH (1000), SHARDS (64), REPLICAS (3),
# FOLLOW_CONCURRENCY (4), POLL_S (0.25), LIVE_N (1000), LIVE_COUNT (200), LIVE_INTERVAL (100 ms),
# LIVE_POLL_MS (5), LIVE_TIMEOUT_MS (10000, per post), PARTS ("single cluster live"; live needs
# cluster), PHASE_TIMEOUT (900 s per ingest), STALL_S (120: an ingest wait gives up when no node's
# GET /v1/feeds changed for this long, and lists the feeds not done), READY_TIMEOUT (90 s: NATS up, aggregator up, leases
# spread), AGG_EXTRA (more aggregator.toml lines, \n between them), NATS_SERVER (nats-server on
# PATH, else /usr/sbin/nats-server), KEEP_WORK=1 (keep the work dir's logs and configs; the data
# dirs and JetStream stores are removed unless KEEP_DATA=1 too).
#
# stdout: a short summary. Everything goes to results/cluster-<UTC date>.json, including the
# WARN/ERROR lines of each aggregator's stderr and each nats-server's log (counts and samples).
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=lib.sh
source ./lib.sh

B=${B:-200}
E=${E:-2000}
BATCH=${BATCH:-1000}
SHARDS=${SHARDS:-64}
REPLICAS=${REPLICAS:-3}
FOLLOW_CONCURRENCY=${FOLLOW_CONCURRENCY:-4}
POLL_S=${POLL_S:-0.25}
LIVE_N=${LIVE_N:-1000}
LIVE_COUNT=${LIVE_COUNT:-200}
LIVE_INTERVAL=${LIVE_INTERVAL:-100}
LIVE_POLL_MS=${LIVE_POLL_MS:-5}
LIVE_TIMEOUT_MS=${LIVE_TIMEOUT_MS:-10000}
PARTS=${PARTS:-single cluster live}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-900}
STALL_S=${STALL_S:-120}
READY_TIMEOUT=${READY_TIMEOUT:-90}
AGG_EXTRA=${AGG_EXTRA:-}
KEEP_WORK=${KEEP_WORK:-}
KEEP_DATA=${KEEP_DATA:-}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
NODES=3

TARGET_DIR=${CARGO_TARGET_DIR:-../../target}
BIN="$TARGET_DIR/release"
AGG="$BIN/apiary-aggregator"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS="results/cluster-$STAMP.json"

die() {
  note "ERROR: $*"
  exit 1
}
[[ -x $NATS_SERVER ]] || die "nats-server not found (looked on PATH and at /usr/sbin/nats-server; set NATS_SERVER)"
for tool in jq curl node; do command -v "$tool" >/dev/null || die "$tool is needed"; done
if has_part live && ! has_part cluster; then die "PARTS: live needs cluster"; fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/apiary-bench-cluster-XXXXXX")
LOG="$WORK/run.log"
: >"$LOG" >"$WORK/loadavg.jsonl"

# ---- processes and cleanup ----
declare -A A_PID A_HTTP A_DIR # aggregators by name (single, a1, a2, a3)
declare -a N_PID N_CLIENT N_ROUTE N_MON N_DIR # nats-servers by index
LAT_PID=''

stop_pids() { # pid... : SIGINT to all, up to 30 s for all to exit, then SIGKILL; reaps them
  local p alive
  for p in "$@"; do kill -INT "$p" 2>/dev/null || true; done
  for _ in $(seq 300); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for p in "$@"; do
    if kill -0 "$p" 2>/dev/null; then
      note "pid $p did not stop within 30 s: SIGKILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
}

stop_aggs() { # name... (default: all)
  local names=("$@") pids=() n
  ((${#names[@]})) || names=("${!A_PID[@]}")
  for n in "${names[@]}"; do [[ -n ${A_PID[$n]:-} ]] && pids+=("${A_PID[$n]}"); done
  ((${#pids[@]})) && stop_pids "${pids[@]}"
  for n in "${names[@]}"; do unset "A_PID[$n]"; done
  true
}

stop_nats() {
  local pids=() p
  for p in "${N_PID[@]}"; do [[ -n $p ]] && pids+=("$p"); done
  ((${#pids[@]})) && stop_pids "${pids[@]}"
  N_PID=()
  true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $LAT_PID ]]; then kill "$LAT_PID" 2>/dev/null || true; wait "$LAT_PID" 2>/dev/null || true; fi
  stop_aggs
  stop_nats
  stop_writers
  if [[ -n $KEEP_WORK ]]; then
    if [[ -z $KEEP_DATA ]]; then
      rm -rf "$WORK"/agg-*/data "$WORK"/nats/n*/store
    fi
    note "work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT TERM

# ---- build ----
TREE_SHA=$(cd ../.. && { git diff HEAD -- core aggregator; git ls-files --others --exclude-standard -z -- core aggregator | xargs -0 -r cat; } | sha256sum | cut -d' ' -f1)
note "building apiary-aggregator and apiary-bench (release)"
(cd ../.. && cargo build --release -p apiary-aggregator -p apiary-bench >&2)
AGG_VERSION=$("$AGG" --version 2>/dev/null || echo unknown)

# ---- small helpers ----
secs() { # t0 t1 -> t1 - t0 (3 decimals)
  awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f\n", b - a}'
}

free_ports() { # n -> n distinct free TCP ports on 127.0.0.1 (all bound at once, then released)
  node -e '
    const net = require("net"); const n = Number(process.argv[1]); const ss = []; let left = n
    for (let i = 0; i < n; i++) {
      const s = net.createServer(); ss.push(s)
      s.listen(0, "127.0.0.1", () => {
        if (--left === 0) { console.log(ss.map((x) => x.address().port).join(" ")); ss.forEach((x) => x.close()) }
      })
    }' "$1"
}

metric_of() { # http name -> the metric's value (no labels), or null
  local v
  v=$(curl -s --max-time 5 "$1/metrics" 2>/dev/null | awk -v m="$2" '$1 == m {print $2; exit}') || true
  echo "${v:-null}"
}

feeds_progress() { # http length -> {"listed", "done", "sum"} of GET /v1/feeds, or empty on failure
  curl -s --max-time 10 "$1/v1/feeds" 2>/dev/null | jq -c --argjson L "$2" '
    {listed: (.feeds | length),
     done: ([.feeds[] | select(.indexedVersion == $L)] | length),
     sum: ([.feeds[].indexedVersion] | add // 0)}' 2>/dev/null || true
}

pids_cpu() { # pid... -> JSON array of CPU seconds (null for a process gone)
  local p out=()
  for p in "$@"; do
    local c
    c=$(cpu_of "$p")
    out+=("${c:-null}")
  done
  local IFS=,
  echo "[${out[*]}]"
}

pids_proc() { # pid... -> JSON array of proc_of
  local p
  for p in "$@"; do proc_of "$p"; done | jq -cs .
}

# ---- aggregators ----
start_agg() { # name [cluster node name]: fresh data dir; returns once its HTTP API answers
  local name=$1 node=${2:-} dir="$WORK/agg-$1" http u i
  mkdir -p "$dir"
  {
    echo "# run-cluster.sh: fresh data dir, HTTP on a free port, no dial-in listener, no DHT,"
    echo "# rate limits high enough for the polling clients. Everything else: the defaults."
    echo "data_dir = \"$dir/data\""
    echo 'http = "127.0.0.1:0"'
    echo 'listen = ""'
    echo 'dht = false'
    echo 'rate_limit_per_second = 1000000'
    echo 'rate_limit_burst = 1000000'
    if [[ -n $AGG_EXTRA ]]; then printf '%b\n' "$AGG_EXTRA"; fi
    if [[ -n $node ]]; then
      local urls=()
      for i in $(seq 0 $((NODES - 1))); do urls+=("\"nats://127.0.0.1:${N_CLIENT[$i]}\""); done
      echo
      echo '[cluster]'
      echo 'enabled = true'
      echo "nats = [$(
        IFS=,
        echo "${urls[*]}"
      )]"
      echo "node = \"$node\""
      echo 'roles = ["follower", "indexer"]'
      echo "replicas = $REPLICAS"
      echo "shards = $SHARDS"
    fi
  } >"$dir/aggregator.toml"
  echo "--- aggregator $name: $AGG --config $dir/aggregator.toml" >>"$LOG"
  "$AGG" --config "$dir/aggregator.toml" >"$dir/stdout" 2>"$dir/stderr" &
  A_PID[$name]=$!
  A_DIR[$name]=$dir
  http=$(await_match "$dir/stdout" 'http://127\.0\.0\.1:[0-9]*' "${A_PID[$name]}" $((READY_TIMEOUT * 10)) 0.1)
  if [[ -z $http ]]; then
    note "aggregator $name did not start within $READY_TIMEOUT s; its stderr:"
    tail -n 30 "$dir/stderr" >&2
    exit 1
  fi
  for _ in $(seq 100); do
    u=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$http/healthz" || true)
    [[ $u == 200 ]] && break
    sleep 0.1
  done
  A_HTTP[$name]=$http
  note "aggregator $name: pid ${A_PID[$name]}, $http${node:+, cluster node $node}"
}

follow_all() { # http keys_file peer -> {"posted", "failed", "codes", "seconds"}
  local t0 t1
  t0=$(now)
  # shellcheck disable=SC2016
  xargs -P "$FOLLOW_CONCURRENCY" -I{} curl -s -o /dev/null -w '%{http_code}\n' --max-time 30 \
    -X POST "$1/v1/feeds" -H 'content-type: application/json' \
    -d "{\"key\": \"{}\", \"peers\": [\"$3\"]}" <"$2" >"$WORK/follow-codes.txt" || true
  t1=$(now)
  jq -Rsc --argjson s "$(secs "$t0" "$t1")" '
    split("\n") | map(select(. != "")) |
    {posted: length, failed: (map(select(test("^2") | not)) | length),
     codes: (group_by(.) | map({(.[0]): length}) | add // {}), seconds: $s}' <"$WORK/follow-codes.txt"
}

# Polls GET /v1/feeds of each named aggregator every POLL_S until it lists FEEDS feeds all at
# indexedVersion == LENGTH, or PHASE_TIMEOUT from T0. Sets DONE_AT[name] (seconds since T0, or
# empty); appends a timeline (one sample a second per node) to $WORK/LABEL.timeline.jsonl.
declare -A DONE_AT
wait_indexed() { # label t0 feeds length name...
  local label=$1 t0=$2 feeds=$3 length=$4
  shift 4
  local names=("$@") n p t el mark pending sum progress_at=0
  declare -A last_mark=() last_sum=()
  for n in "${names[@]}"; do DONE_AT[$n]=''; last_mark[$n]=-1; last_sum[$n]=-1; done
  while :; do
    pending=0
    for n in "${names[@]}"; do
      [[ -n ${DONE_AT[$n]} ]] && continue
      p=$(feeds_progress "${A_HTTP[$n]}" "$length")
      t=$(now)
      el=$(secs "$t0" "$t")
      mark=${el%.*}
      if [[ -n $p && $mark -gt ${last_mark[$n]} ]]; then
        last_mark[$n]=$mark
        jq -c --arg n "$n" --argjson t "$el" '{node: $n, t: $t} + .' <<<"$p" >>"$WORK/$label.timeline.jsonl"
      fi
      if [[ -n $p ]]; then
        sum=$(jq -r '"\(.sum)/\(.done)/\(.listed)"' <<<"$p")
        if [[ $sum != "${last_sum[$n]}" ]]; then
          last_sum[$n]=$sum
          progress_at=$el
        fi
      fi
      if [[ -n $p ]] && jq -e --argjson f "$feeds" '.done == $f' >/dev/null <<<"$p"; then
        DONE_AT[$n]=$el
        jq -c --arg n "$n" --argjson t "$el" '{node: $n, t: $t, done: true} + .' <<<"$p" >>"$WORK/$label.timeline.jsonl"
        note "$label: $n has every feed indexed after $el s"
      else
        pending=1
        kill -0 "${A_PID[$n]}" 2>/dev/null || die "$label: aggregator $n exited; its stderr: $(tail -n 20 "${A_DIR[$n]}/stderr")"
      fi
    done
    [[ $pending == 0 ]] && return 0
    if awk -v e="$el" -v m="$PHASE_TIMEOUT" 'BEGIN {exit !(e > m)}'; then
      note "$label: not every feed indexed within $PHASE_TIMEOUT s"
      not_done "$label" "$length" "${names[@]}"
      return 1
    fi
    if awk -v e="$el" -v p="$progress_at" -v m="$STALL_S" 'BEGIN {exit !(e - p > m)}'; then
      note "$label: no progress on any node for $STALL_S s: giving up"
      not_done "$label" "$length" "${names[@]}"
      return 1
    fi
    sleep "$POLL_S"
  done
}

not_done() { # label length name... : the feeds not at indexedVersion == length, per node (20 at most), to $WORK/LABEL.not-done.json
  local label=$1 length=$2 n
  shift 2
  for n in "$@"; do
    curl -s --max-time 10 "${A_HTTP[$n]}/v1/feeds" | jq -c --arg n "$n" --argjson L "$length" '
      [.feeds[] | select(.indexedVersion != $L)] as $nd |
      {node: $n, notDone: ($nd | length),
       feeds: [$nd[:20][] | {key, length, indexedVersion, errors, lastError, cluster}]}' 2>/dev/null ||
      jq -cn --arg n "$n" '{node: $n, error: "GET /v1/feeds failed"}'
  done | jq -cs . >"$WORK/$label.not-done.json"
  note "$label: feeds not indexed: $(jq -c '[.[] | {node, notDone, first: (.feeds[0] // null)}]' "$WORK/$label.not-done.json")"
}

wait_feed_everywhere() { # key length timeout_s name... : GET /v1/feeds/KEY indexedVersion == length on each
  local key=$1 length=$2 deadline=$((SECONDS + $3)) n v ok
  shift 3
  while ((SECONDS < deadline)); do
    ok=1
    for n in "$@"; do
      v=$(curl -s --max-time 5 "${A_HTTP[$n]}/v1/feeds/$key" | jq -r '.indexedVersion // 0' 2>/dev/null || echo 0)
      [[ $v == "$length" ]] || ok=0
    done
    [[ $ok == 1 ]] && return 0
    sleep 0.2
  done
  return 1
}

scan_log() { # file kind(agg|nats) -> {"warn", "error", "samples"}: counts and up to 20 distinct lines
  local f=$1 wp ep
  if [[ $2 == agg ]]; then wp=' WARN '; ep=' ERROR '; else wp='\[WRN\]'; ep='\[ERR\]'; fi
  if [[ ! -f $f ]]; then
    echo null
    return
  fi
  sed 's/\x1b\[[0-9;]*m//g' "$f" >"$f.plain"
  jq -n --argjson w "$(grep -c -- "$wp" "$f.plain" || true)" --argjson e "$(grep -c -- "$ep" "$f.plain" || true)" \
    --arg s "$(grep -E -- "$wp|$ep" "$f.plain" | cut -d' ' -f2- | sed -E 's/^[[:space:]]+//; s/[0-9]{4}\/[0-9]{2}\/[0-9]{2} [0-9:.]+ //' |
      awk '!seen[$0]++' | head -n 20 || true)" \
    '{warn: $w, error: $e, samples: ($s | split("\n") | map(select(. != "")))}'
}

# ---- the bees: B x E posts from bee-farm (our BeeWriter), one port ----
loadavg "start"
note "bee-farm: $B bees x $E posts (batches of $BATCH)"
start_writer farm "$BIN/bee-farm" --bees "$B" --posts "$E" --batch "$BATCH" --keys-out "$WORK/bees.keys"
FARM_LINE=${W_LINE[farm]}
FARM_PORT=$(jq -r .port <<<"$FARM_LINE")
LENGTH=$(jq -r .length <<<"$FARM_LINE")
PEER="127.0.0.1:$FARM_PORT"
ENTRIES=$((B * E))
[[ $(wc -l <"$WORK/bees.keys") == "$B" ]] || die "bee-farm wrote $(wc -l <"$WORK/bees.keys") keys, not $B"

SINGLE=null
CLUSTER=null
LIVE=null

# ---- single: one aggregator, no cluster ----
if has_part single; then
  loadavg "single start"
  start_agg single
  sleep 1
  pid=${A_PID[single]}
  f0=$(writer_say farm cpu)
  c0=$(cpu_of "$pid")
  t0=$(now)
  fol=$(follow_all "${A_HTTP[single]}" "$WORK/bees.keys" "$PEER")
  note "single: followed $B feeds: $fol"
  ok=true
  wait_indexed single "$t0" "$B" "$LENGTH" single || ok=false
  c1=$(cpu_of "$pid")
  f1=$(writer_say farm cpu)
  proc=$(proc_of "$pid")
  indexed=$(metric_of "${A_HTTP[single]}" apiary_entries_indexed)
  disk=$(du -sb "${A_DIR[single]}/data" | cut -f1)
  secs_done=${DONE_AT[single]:-}
  SINGLE=$(jq -cn --argjson ok "$ok" --arg s "$secs_done" --argjson n "$ENTRIES" --argjson c0 "$c0" --argjson c1 "$c1" \
    --argjson proc "$proc" --argjson fol "$fol" --argjson f0 "$f0" --argjson f1 "$f1" --argjson indexed "$indexed" \
    --argjson disk "$disk" --slurpfile tl <(cat "$WORK/single.timeline.jsonl" 2>/dev/null || true) \
    --slurpfile nd <(cat "$WORK/single.not-done.json" 2>/dev/null || true) '
    ($s | tonumber? // null) as $sec |
    {done: $ok, seconds: $sec, entries: $n, entriesPerSec: (if $sec then ($n / $sec | round) else null end),
     entriesIndexedMetric: $indexed, follow: $fol,
     aggCpuSeconds: (($c1 - $c0) * 100 | round / 100),
     aggCpuPercent: (if $sec then (($c1 - $c0) / $sec * 100 | round) else null end),
     aggVmHwmMB: $proc.vmHwmMB, aggVmRssMB: $proc.vmRssMB, aggThreads: $proc.threads,
     aggDataBytes: $disk,
     farmCpuSeconds: ((($f1.user + $f1.system) - ($f0.user + $f0.system)) * 1000 | round / 1000),
     notDone: ($nd[0] // null), timeline: $tl}')
  stop_aggs single
  [[ -z $KEEP_DATA ]] && rm -rf "${A_DIR[single]}/data"
  loadavg "single end"
  jq -c 'del(.timeline)' <<<"$SINGLE" >&2
  sleep 2
fi

# ---- cluster: three nats-servers, three aggregators ----
start_nats() {
  local ports i j routes name dir deadline ok why
  read -r -a ports <<<"$(free_ports $((3 * NODES)))"
  ((${#ports[@]} == 3 * NODES)) || die "could not pick $((3 * NODES)) free ports"
  for i in $(seq 0 $((NODES - 1))); do
    N_CLIENT[i]=${ports[i]}
    N_ROUTE[i]=${ports[NODES + i]}
    N_MON[i]=${ports[2 * NODES + i]}
  done
  for i in $(seq 0 $((NODES - 1))); do
    name="n$((i + 1))"
    dir="$WORK/nats/$name"
    N_DIR[i]=$dir
    mkdir -p "$dir/store"
    routes=''
    for j in $(seq 0 $((NODES - 1))); do
      [[ $j == "$i" ]] && continue
      routes+="    \"nats-route://127.0.0.1:${N_ROUTE[j]}\""$'\n'
    done
    cat >"$dir/nats.conf" <<EOF
# $name of the run-cluster.sh NATS cluster (as tests/src/nats.rs)
server_name: "$name"
listen: "127.0.0.1:${N_CLIENT[i]}"
http: "127.0.0.1:${N_MON[i]}"
jetstream {
  store_dir: "$dir/store"
  max_file_store: 16GB
  max_mem_store: 256MB
}
cluster {
  name: "apiary"
  listen: "127.0.0.1:${N_ROUTE[i]}"
  routes: [
$routes  ]
}
EOF
    echo "--- nats-server $name: $NATS_SERVER -c $dir/nats.conf" >>"$LOG"
    "$NATS_SERVER" -c "$dir/nats.conf" </dev/null >"$dir/nats.log" 2>&1 &
    N_PID[i]=$!
  done
  deadline=$((SECONDS + READY_TIMEOUT))
  while :; do
    ok=1
    why=''
    for i in $(seq 0 $((NODES - 1))); do
      kill -0 "${N_PID[i]}" 2>/dev/null || die "nats-server n$((i + 1)) exited: $(tail -n 20 "${N_DIR[i]}/nats.log")"
      if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:${N_MON[i]}/healthz" || true) != 200 ]]; then
        ok=0
        why="n$((i + 1)) /healthz not 200"
        break
      fi
      if [[ -z $(curl -s --max-time 2 "http://127.0.0.1:${N_MON[i]}/jsz" | jq -r '.meta_cluster.leader // empty' 2>/dev/null || true) ]]; then
        ok=0
        why="n$((i + 1)) knows no meta leader"
        break
      fi
    done
    [[ $ok == 1 ]] && break
    ((SECONDS < deadline)) || die "the NATS cluster was not ready within $READY_TIMEOUT s ($why); n1's log: $(tail -n 20 "${N_DIR[0]}/nats.log")"
    sleep 0.2
  done
  note "NATS: ${NODES} nodes, clients on ${N_CLIENT[*]}, monitoring on ${N_MON[*]}, pids ${N_PID[*]}"
}

leases_spread() { # waits until every node holds some shards, SHARDS in all, the same 3 s later
  local deadline=$((SECONDS + READY_TIMEOUT)) prev='' cur sum v n all
  while ((SECONDS < deadline)); do
    cur=''
    sum=0
    all=1
    for n in $CNODES; do
      v=$(metric_of "${A_HTTP[$n]}" apiary_cluster_shards_held)
      [[ $v =~ ^[0-9]+$ ]] || v=0
      ((v > 0)) || all=0
      sum=$((sum + v))
      cur+="$n=$v "
    done
    if [[ $all == 1 && $sum == "$SHARDS" && $cur == "$prev" ]]; then
      note "cluster: shard leases spread: $cur"
      echo "$cur"
      return 0
    fi
    prev=$cur
    sleep 3
  done
  note "cluster: shard leases not spread within $READY_TIMEOUT s (last: $cur)"
  return 1
}

stream_info() { # mon_port -> the entry log stream's {messages, bytes, leader, replicas} seen by that node, and the server's totals
  curl -s --max-time 5 "http://127.0.0.1:$1/jsz?acc=%24G&streams=true" | jq -c '
    {stream: ([.account_details[]? | select(.name == "$G") | .stream_detail[]? | select(.name == "apiary-entries")
               | {messages: .state.messages, bytes: .state.bytes, firstSeq: .state.first_seq, lastSeq: .state.last_seq,
                  leader: .cluster.leader, replicas: ([.cluster.replicas[]? | {name, current, lag}])}] | first),
     serverMessages: .messages, serverBytes: .bytes, streams: .streams, consumers: .consumers}' 2>/dev/null || echo null
}

CNODES=''
if has_part cluster; then
  loadavg "cluster start"
  start_nats
  for i in $(seq 1 $NODES); do
    start_agg "a$i" "a$i"
    CNODES+="a$i "
  done
  CNODES=${CNODES% }
  spread=$(leases_spread) || die "the cluster's shard leases did not settle; see ${A_DIR[a1]}/stderr"
  read -r -a cn <<<"$CNODES"
  apids=()
  for n in "${cn[@]}"; do apids+=("${A_PID[$n]}"); done
  npids=("${N_PID[@]}")
  f0=$(writer_say farm cpu)
  ac0=$(pids_cpu "${apids[@]}")
  nc0=$(pids_cpu "${npids[@]}")
  t0=$(now)
  fol=$(follow_all "${A_HTTP[a1]}" "$WORK/bees.keys" "$PEER")
  note "cluster: followed $B feeds through a1: $fol"
  ok=true
  wait_indexed cluster "$t0" "$B" "$LENGTH" "${cn[@]}" || ok=false
  ac1=$(pids_cpu "${apids[@]}")
  nc1=$(pids_cpu "${npids[@]}")
  f1=$(writer_say farm cpu)
  aproc=$(pids_proc "${apids[@]}")
  nproc_=$(pids_proc "${npids[@]}")
  done_at=$(for n in "${cn[@]}"; do echo "${DONE_AT[$n]:-null}"; done | jq -cs .)
  metrics=$(for n in "${cn[@]}"; do
    jq -cn --arg n "$n" \
      --argjson pub "$(metric_of "${A_HTTP[$n]}" apiary_cluster_links_published_total)" \
      --argjson app "$(metric_of "${A_HTTP[$n]}" apiary_cluster_links_applied_total)" \
      --argjson held "$(metric_of "${A_HTTP[$n]}" apiary_cluster_shards_held)" \
      --argjson moves "$(metric_of "${A_HTTP[$n]}" apiary_cluster_lease_moves_total)" \
      --argjson seq "$(metric_of "${A_HTTP[$n]}" apiary_cluster_stream_sequence)" \
      --argjson lag "$(metric_of "${A_HTTP[$n]}" apiary_cluster_stream_lag)" \
      --argjson idx "$(metric_of "${A_HTTP[$n]}" apiary_entries_indexed)" \
      --argjson errs "$(metric_of "${A_HTTP[$n]}" apiary_ingest_errors_total)" \
      '{node: $n, linksPublished: $pub, linksApplied: $app, shardsHeld: $held, leaseMoves: $moves,
        streamSequence: $seq, streamLag: $lag, entriesIndexed: $idx, ingestErrors: $errs}'
  done | jq -cs .)
  streams=$(for i in $(seq 0 $((NODES - 1))); do stream_info "${N_MON[i]}"; done | jq -cs .)
  disk=$(for i in $(seq 0 $((NODES - 1))); do
    sdir=$(find "${N_DIR[i]}/store" -type d -name 'apiary-entries' 2>/dev/null | head -n1 || true)
    jq -cn --arg n "n$((i + 1))" --argjson store "$(du -sb "${N_DIR[i]}/store" | cut -f1)" \
      --argjson stream "$(if [[ -n $sdir ]]; then du -sb "$sdir" | cut -f1; else echo null; fi)" \
      '{node: $n, storeBytes: $store, entryLogBytes: $stream}'
  done | jq -cs .)
  aggdisk=$(for n in "${cn[@]}"; do du -sb "${A_DIR[$n]}/data" | cut -f1; done | jq -cs .)
  CLUSTER=$(jq -cn --argjson ok "$ok" --argjson at "$done_at" --argjson n "$ENTRIES" --arg nodes "$CNODES" \
    --argjson ac0 "$ac0" --argjson ac1 "$ac1" --argjson nc0 "$nc0" --argjson nc1 "$nc1" \
    --argjson aproc "$aproc" --argjson nproc "$nproc_" --argjson fol "$fol" --argjson f0 "$f0" --argjson f1 "$f1" \
    --argjson metrics "$metrics" --argjson streams "$streams" --argjson disk "$disk" --argjson aggdisk "$aggdisk" \
    --arg spread "$spread" --slurpfile tl <(cat "$WORK/cluster.timeline.jsonl" 2>/dev/null || true) \
    --slurpfile nd <(cat "$WORK/cluster.not-done.json" 2>/dev/null || true) '
    ($nodes | split(" ")) as $names |
    (if ($at | all(. != null)) then ($at | max) else null end) as $all |
    ($at | map(select(. != null)) | min) as $first |
    ([range(0; $ac1 | length) | ($ac1[.] - $ac0[.]) * 100 | round / 100]) as $acpu |
    ([range(0; $nc1 | length) | ($nc1[.] - $nc0[.]) * 100 | round / 100]) as $ncpu |
    {done: $ok, entries: $n, nodes: $names, leasesAtStart: $spread, follow: $fol,
     secondsAllIndexers: $all, secondsFirstIndexer: $first, secondsByNode: $at,
     entriesPerSecAllIndexers: (if $all then ($n / $all | round) else null end),
     entriesPerSecFirstIndexer: (if $first then ($n / $first | round) else null end),
     cpuSeconds: {aggregators: $acpu, nats: $ncpu,
                  aggregatorsTotal: ($acpu | add * 100 | round / 100), natsTotal: ($ncpu | add * 100 | round / 100)},
     cpuPercentOfWindow: (if $all then {aggregators: (($acpu | add) / $all * 100 | round), nats: (($ncpu | add) / $all * 100 | round)} else null end),
     aggregators: [range(0; $aproc | length) | {node: $names[.], vmHwmMB: $aproc[.].vmHwmMB, vmRssMB: $aproc[.].vmRssMB, threads: $aproc[.].threads, dataBytes: $aggdisk[.]}],
     nats: [range(0; $nproc | length) | {node: "n\(. + 1)", vmHwmMB: $nproc[.].vmHwmMB, vmRssMB: $nproc[.].vmRssMB, threads: $nproc[.].threads}],
     metrics: $metrics,
     linksPublishedTotal: ($metrics | map(.linksPublished // 0) | add),
     stream: ($streams[0].stream), streamByNode: $streams, disk: $disk,
     entryLogDiskBytesTotal: ($disk | map(.entryLogBytes // 0) | add),
     natsStoreDiskBytesTotal: ($disk | map(.storeBytes) | add),
     farmCpuSeconds: ((($f1.user + $f1.system) - ($f0.user + $f0.system)) * 1000 | round / 1000),
     notDone: ($nd[0] // null), timeline: $tl}')
  loadavg "cluster ingest end"
  jq -c 'del(.timeline, .streamByNode, .metrics)' <<<"$CLUSTER" >&2
fi

# ---- live: publish -> searchable on all three indexers ----
cat >"$WORK/latency.js" <<'EOF'
// run-cluster.sh's publish -> searchable poller: for each of the writer's live posts (known in
// advance: post(first + i) of PRNG seed 99, as bee-writer's `live` makes them), GET
// /v1/search?q=<its 3 rarest words>&feed=KEY&limit=100 on every URL every pollMs until the
// post's key is in the answer on all of them; its latency on a node is our CLOCK_MONOTONIC
// (process.hrtime) at that answer minus the post's pubNs (the writer's CLOCK_MONOTONIC just
// before its put). Post 0 is looked for at once, post i from pubNs(0) + i * intervalMs on.
'use strict'
const { prng, VOCAB, post } = require(process.argv[2])
const o = JSON.parse(process.argv[3])
const rank = new Map(VOCAB.map((w, i) => [w, i]))
const rand = prng(99)
const posts = []
for (let i = 0; i < o.count; i++) posts.push(post(o.first + i, rand))
const now = () => process.hrtime.bigint()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const rareWords = (p, n) => {
  const words = p.value.text.split(' ')
  words.sort((a, b) => (rank.get(b) ?? 0) - (rank.get(a) ?? 0))
  const out = []
  for (const w of words) if (out[out.length - 1] !== w) out.push(w)
  return out.slice(0, n)
}
const queryMs = []
let errors = 0
async function track (i, onPub) {
  const p = posts[i]
  const q = rareWords(p, 3).join(' ')
  const urls = o.urls.map((u) => `${u}/v1/search?` + new URLSearchParams({ q, feed: o.key, limit: '100' }))
  const found = urls.map(() => null)
  let pubNs = null
  let polls = 0
  const started = Date.now()
  for (;;) {
    polls++
    await Promise.all(urls.map(async (u, n) => {
      if (found[n] !== null) return
      const tq = now()
      try {
        const v = await (await fetch(u)).json()
        const t = now()
        queryMs.push(Number(t - tq) / 1e6)
        const e = (v.entries || []).find((e) => e.key === p.key)
        if (e && e.value && e.value.pubNs != null) {
          found[n] = t
          if (pubNs === null) { pubNs = BigInt(e.value.pubNs); if (onPub) onPub(pubNs) }
        }
      } catch (err) { errors++ }
    }))
    if (found.every((f) => f !== null) || Date.now() - started > o.timeoutMs) break
    await sleep(o.pollMs)
  }
  const lat = found.map((f) => (f === null || pubNs === null ? null : Number(f - pubNs) / 1e6))
  return { i, lat, polls }
}
function pct (sorted, p) {
  if (!sorted.length) return null
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}
const r3 = (x) => (x == null ? null : Math.round(x * 1000) / 1000)
function summary (xs) {
  const s = xs.filter((x) => x != null).sort((a, b) => a - b)
  if (!s.length) return { count: 0 }
  return { count: s.length, p50ms: r3(pct(s, 50)), p90ms: r3(pct(s, 90)), p99ms: r3(pct(s, 99)), minMs: r3(s[0]), maxMs: r3(s[s.length - 1]), meanMs: r3(s.reduce((a, b) => a + b, 0) / s.length) }
}
async function main () {
  // Warm the connections (nothing of the set).
  await Promise.all(o.urls.map((u) => fetch(`${u}/healthz`).then((r) => r.text()).catch(() => null)))
  console.log(JSON.stringify({ ready: true }))
  let gotP0
  const p0 = new Promise((resolve) => { gotP0 = resolve })
  const tasks = [track(0, gotP0)]
  tasks[0].then(() => gotP0(null))
  const pub0 = await p0
  for (let i = 1; i < o.count; i++) {
    if (pub0 !== null) {
      const due = pub0 + BigInt(i * o.intervalMs) * 1000000n
      const wait = Number(due - now()) / 1e6
      if (wait > 0) await sleep(wait)
    } else {
      await tasks[i - 1]
    }
    tasks.push(track(i))
  }
  const rows = await Promise.all(tasks)
  const all = rows.map((r) => (r.lat.every((x) => x !== null) ? Math.max(...r.lat) : null))
  const first = rows.map((r) => (r.lat.some((x) => x !== null) ? Math.min(...r.lat.filter((x) => x !== null)) : null))
  console.log(JSON.stringify({
    posts: o.count,
    foundOnAll: all.filter((x) => x !== null).length,
    missedSomewhere: all.filter((x) => x === null).length,
    pollMs: o.pollMs,
    intervalMs: o.intervalMs,
    allIndexers: summary(all),
    firstIndexer: summary(first),
    byNode: o.urls.map((_, n) => summary(rows.map((r) => r.lat[n]))),
    pollsPerPost: summary(rows.map((r) => r.polls)),
    searchRequestMs: summary(queryMs),
    searchRequests: queryMs.length,
    errors,
    rows: rows.map((r) => [r.i, ...r.lat.map(r3)])
  }))
}
main().catch((e) => { console.error(e); process.exit(1) })
EOF

if has_part live; then
  loadavg "live start"
  start_writer live "$BIN/bee-writer" --n "$LIVE_N"
  lkey=$(jq -r .key <<<"${W_LINE[live]}")
  lport=$(jq -r .port <<<"${W_LINE[live]}")
  llength=$(jq -r .length <<<"${W_LINE[live]}")
  read -r -a cn <<<"$CNODES"
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -X POST "${A_HTTP[a1]}/v1/feeds" \
    -H 'content-type: application/json' -d "{\"key\": \"$lkey\", \"peers\": [\"127.0.0.1:$lport\"]}" || true)
  [[ $code == 2* ]] || die "live: POST /v1/feeds answered $code"
  wait_feed_everywhere "$lkey" "$llength" 300 "${cn[@]}" || die "live: the live bee ($llength blocks) was not indexed on every node within 300 s"
  lz32=$(curl -s --max-time 5 "${A_HTTP[a1]}/v1/feeds/$lkey" | jq -r .key)
  holder=$(curl -s --max-time 5 "${A_HTTP[a1]}/v1/feeds/$lkey" | jq -c '.cluster')
  note "live: bee $lz32 ($llength blocks) indexed on ${cn[*]}; its shard: $holder"
  sleep 2
  urls=$(for n in "${cn[@]}"; do echo "${A_HTTP[$n]}"; done | jq -Rcs 'split("\n") | map(select(. != ""))')
  opts=$(jq -cn --argjson urls "$urls" --arg key "$lz32" --argjson first "$LIVE_N" --argjson count "$LIVE_COUNT" \
    --argjson interval "$LIVE_INTERVAL" --argjson poll "$LIVE_POLL_MS" --argjson tmo "$LIVE_TIMEOUT_MS" \
    '{urls: $urls, key: $key, first: $first, count: $count, intervalMs: $interval, pollMs: $poll, timeoutMs: $tmo}')
  echo "--- live poller: node $WORK/latency.js js/data.js $opts" >>"$LOG"
  budget=$((LIVE_COUNT * LIVE_INTERVAL / 1000 + LIVE_TIMEOUT_MS / 1000 + 120))
  timeout "$budget" node "$WORK/latency.js" "$PWD/js/data.js" "$opts" >"$WORK/latency.out" 2>>"$LOG" &
  LAT_PID=$!
  [[ -n $(await_match "$WORK/latency.out" '"ready"' "$LAT_PID" 300 0.1) ]] || die "live: the poller did not start; see $LOG"
  ac0=$(pids_cpu "${apids[@]}")
  nc0=$(pids_cpu "${npids[@]}")
  wline=$(writer_say live "live $LIVE_INTERVAL $LIVE_COUNT" "$budget") || wline=''
  jq -e . >/dev/null 2>&1 <<<"$wline" || wline='{"error": "no answer to live"}'
  rc=0
  wait "$LAT_PID" || rc=$?
  LAT_PID=''
  ac1=$(pids_cpu "${apids[@]}")
  nc1=$(pids_cpu "${npids[@]}")
  rline=$(tail -n1 "$WORK/latency.out")
  if [[ $rc != 0 ]] || ! jq -e '.allIndexers' >/dev/null 2>&1 <<<"$rline"; then
    note "live: the poller failed (exit $rc); last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    rline=$(jq -cn --argjson rc "$rc" '{error: "poller exit \($rc)"}')
  fi
  LIVE=$(jq -c --argjson wl "$wline" --argjson ac0 "$ac0" --argjson ac1 "$ac1" --argjson nc0 "$nc0" --argjson nc1 "$nc1" \
    --arg holder "$holder" --argjson n "$LIVE_N" '
    {liveBeePosts: $n, holder: ($holder | fromjson? // null)} + . +
    {writer: ($wl | {published, publishSeconds, writerLateTicks, writerPutP50ms, writerPutP99ms, writerPutMaxMs, error}),
     cpuSeconds: {aggregators: [range(0; $ac1 | length) | ($ac1[.] - $ac0[.]) * 100 | round / 100],
                  nats: [range(0; $nc1 | length) | ($nc1[.] - $nc0[.]) * 100 | round / 100]}}' <<<"$rline")
  stop_writer live
  loadavg "live end"
  jq -c 'del(.rows)' <<<"$LIVE" >&2
fi

# ---- processes' totals, logs, then everything stops ----
TOTALS=null
if has_part cluster; then
  TOTALS=$(jq -cn --argjson a "$(pids_proc "${apids[@]}")" --argjson n "$(pids_proc "${npids[@]}")" --arg nodes "$CNODES" '
    ($nodes | split(" ")) as $names |
    {aggregators: [range(0; $a | length) | {node: $names[.], cpuSeconds: $a[.].cpu, vmHwmMB: $a[.].vmHwmMB}],
     nats: [range(0; $n | length) | {node: "n\(. + 1)", cpuSeconds: $n[.].cpu, vmHwmMB: $n[.].vmHwmMB}]}')
fi
stop_aggs
stop_nats
LOGS=$({
  for n in single $CNODES; do
    [[ -n ${A_DIR[$n]:-} ]] && jq -cn --arg n "$n" --argjson s "$(scan_log "${A_DIR[$n]}/stderr" agg)" '{($n): $s}'
  done
  for i in $(seq 0 $((${#N_DIR[@]} - 1))); do
    [[ -n ${N_DIR[i]:-} ]] && jq -cn --arg n "n$((i + 1))" --argjson s "$(scan_log "${N_DIR[i]}/nats.log" nats)" '{($n): $s}'
  done
  true
} | jq -cs 'add // {}')

META=$(jq -cn \
  --arg date "$STAMP" --argjson b "$B" --argjson e "$E" --argjson batch "$BATCH" --argjson length "$LENGTH" \
  --argjson shards "$SHARDS" --argjson replicas "$REPLICAS" --argjson nodes "$NODES" \
  --argjson followConcurrency "$FOLLOW_CONCURRENCY" --arg pollS "$POLL_S" --arg parts "$PARTS" \
  --argjson liveN "$LIVE_N" --argjson liveCount "$LIVE_COUNT" --argjson liveInterval "$LIVE_INTERVAL" \
  --argjson livePollMs "$LIVE_POLL_MS" --argjson liveTimeoutMs "$LIVE_TIMEOUT_MS" --argjson stallS "$STALL_S" --argjson phaseTimeout "$PHASE_TIMEOUT" --arg aggExtra "$AGG_EXTRA" \
  --argjson farm "$FARM_LINE" --arg nats "$("$NATS_SERVER" --version 2>&1 | head -n1)" --arg agg "$AGG_VERSION" \
  --arg node "$(node --version)" --arg rustc "$(rustc --version)" \
  --argjson cpus "$(nproc)" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
  --arg kernel "$(uname -r)" --arg commit "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --arg dirtyFiles "$(git status --porcelain -- ../../core ../../aggregator 2>/dev/null | tr '\n' ';')" \
  --arg treeSha "$TREE_SHA" --arg loadStart "$LOAD_START" --arg loadEnd "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --slurpfile loadavg "$WORK/loadavg.jsonl" '
  {date: $date, bees: $b, postsPerBee: $e, batch: $batch, beeLength: $length, entries: ($b * $e),
   shards: $shards, replicas: $replicas, clusterNodes: $nodes, roles: ["follower", "indexer"],
   followConcurrency: $followConcurrency, pollSeconds: ($pollS | tonumber), parts: $parts,
   liveN: $liveN, liveCount: $liveCount, liveIntervalMs: $liveInterval, livePollMs: $livePollMs,
   liveTimeoutMs: $liveTimeoutMs, stallSeconds: $stallS, phaseTimeoutSeconds: $phaseTimeout, aggExtra: $aggExtra, farm: ($farm | del(.keysFile, .firstKey)),
   natsServer: $nats, aggregator: $agg, node: $node, rustc: $rustc, cpus: $cpus, cpu: $cpu, kernel: $kernel,
   commit: $commit, dirtyCoreAggregator: $dirtyFiles, coreAggregatorSha256: $treeSha,
   loadavgStart: $loadStart, loadavgEnd: $loadEnd, loadavg: $loadavg}')

mkdir -p results
jq -n --argjson meta "$META" --argjson single "$SINGLE" --argjson cluster "$CLUSTER" --argjson live "$LIVE" \
  --argjson totals "$TOTALS" --argjson logs "$LOGS" '
  {meta: $meta,
   ratio: (if $single != null and $cluster != null and $single.entriesPerSec != null then
     {clusterAllIndexersOverSingle: (if $cluster.entriesPerSecAllIndexers then ($cluster.entriesPerSecAllIndexers / $single.entriesPerSec * 1000 | round / 1000) else null end),
      clusterFirstIndexerOverSingle: (if $cluster.entriesPerSecFirstIndexer then ($cluster.entriesPerSecFirstIndexer / $single.entriesPerSec * 1000 | round / 1000) else null end)}
     else null end),
   single: $single, cluster: $cluster, live: $live, processTotalsAtEnd: $totals, logs: $logs}' >"$RESULTS"

# ---- summary ----
jq -r '
  def f(x): if x == null then "-" else (x | tostring) end;
  "cluster benchmark \(.meta.date): \(.meta.bees) bees x \(.meta.postsPerBee) posts = \(.meta.entries) entries, \(.meta.cpus) CPUs, load \(.meta.loadavgStart) -> \(.meta.loadavgEnd)",
  (if .single then "single:  \(f(.single.seconds)) s, \(f(.single.entriesPerSec)) entries/s, CPU \(.single.aggCpuSeconds) s, VmHWM \(.single.aggVmHwmMB) MB" else empty end),
  (if .cluster then
    "cluster: all 3 indexers \(f(.cluster.secondsAllIndexers)) s = \(f(.cluster.entriesPerSecAllIndexers)) entries/s; first \(f(.cluster.secondsFirstIndexer)) s = \(f(.cluster.entriesPerSecFirstIndexer)) entries/s; by node \(.cluster.secondsByNode)",
    "         CPU s aggregators \(.cluster.cpuSeconds.aggregators) (\(.cluster.cpuSeconds.aggregatorsTotal)), nats \(.cluster.cpuSeconds.nats) (\(.cluster.cpuSeconds.natsTotal))",
    "         VmHWM MB aggregators \([.cluster.aggregators[].vmHwmMB]), nats \([.cluster.nats[].vmHwmMB])",
    "         links published \(f(.cluster.linksPublishedTotal)) (by node \([.cluster.metrics[].linksPublished])); stream \(f(.cluster.stream.messages)) messages, \(f(.cluster.stream.bytes)) bytes; entry log on disk \(.cluster.entryLogDiskBytesTotal) bytes (3 replicas), stores \(.cluster.natsStoreDiskBytesTotal) bytes"
   else empty end),
  (if .cluster.notDone then "cluster: NOT every feed indexed: \(.cluster.notDone | map("\(.node): \(.notDone) feeds short, e.g. \(.feeds[0] // {} | {key, indexedVersion, cluster})") | join("; "))" else empty end),
  (if .single.notDone then "single: NOT every feed indexed: \(.single.notDone | map("\(.notDone) feeds short") | join("; "))" else empty end),
  (if .ratio then "ratio cluster/single: all indexers \(f(.ratio.clusterAllIndexersOverSingle)), first indexer \(f(.ratio.clusterFirstIndexerOverSingle))" else empty end),
  (if .live then
    (if .live.error then "live: \(.live.error)" else
     "live: \(.live.foundOnAll)/\(.live.posts) posts found on all indexers; publish -> searchable on all: p50 \(f(.live.allIndexers.p50ms)) ms, p99 \(f(.live.allIndexers.p99ms)) ms, max \(f(.live.allIndexers.maxMs)) ms; on the first: p50 \(f(.live.firstIndexer.p50ms)) ms, p99 \(f(.live.firstIndexer.p99ms)) ms" end)
   else empty end),
  "log lines WARN/ERROR: \(.logs | to_entries | map("\(.key) \(.value.warn)/\(.value.error)") | join(", "))"
' "$RESULTS"
note "results: $RESULTS"
