#!/usr/bin/env bash
# DHT benchmark: the release apiary-aggregator and apiary-publisher over a private local
# hyperswarm DHT (tests/js/dht.js), side by side with direct TCP and with plain JS peers
# (hyperswarm + corestore + hyperbee) on the same DHT, in one run. See README.md, "DHT".
#
#   bash ops/bench/run-dht.sh                                  # everything at full size
#   N=10000 ROUNDS=1 FIRST_BEES=5 FIRST_PEERS=2 COLD_TRIALS=2 IDLE_TOPICS=100 IDLE_WINDOW=10 \
#     IDLE_LATE_AT=0 bash ops/bench/run-dht.sh                 # quick check, about 2 min
#   PARTS="ingest js" bash ops/bench/run-dht.sh                # only some parts
#
# One DHT for the whole run: `node tests/js/dht.js --host 127.0.0.1 --nodes DHT_NODES` (a
# bootstrapper and DHT_NODES nodes on loopback; nothing else is reachable, the public
# bootstrap list is never used).
#
# Parts (PARTS, default "ingest js first idle"):
#   ingest: the N reference posts (js/data.js --jsonl) imported into one bee of a real
#           `apiary-publisher` data dir (`init`, `import`, batches of 1000), then
#           `apiary-publisher serve --bootstrap DHT` (it announces the bee). For each of ROUNDS
#           rounds, a fresh aggregator follows it (agg-client ingest, POST to all indexed):
#             direct: dht = false, POST {key, peers: ["127.0.0.1:PORT"]} (direct TCP);
#             dht:    dht = true, bootstrap = the local DHT, POST {key} only, once the
#                     aggregator's bridge has bootstrapped.
#           entries/s, CPU of the aggregator, its bridge child, the publisher and the
#           publisher's bridge child (and of the DHT nodes), peak RSS of each.
#   js:     JS <-> JS on the same DHT: js/writer.js --bootstrap DHT builds the same N posts
#           (Corestore + Hyperbee, batches of 1000) and announces the core with hyperswarm;
#           per round, a fresh js/dht-reader.js (Hyperswarm + Corestore, given only the key)
#           downloads the whole core: blocks/s from the join (lookup included), and of the
#           download alone. With JS_DIRECT=1 also js/reader.js over direct TCP, same writer.
#   first:  time from POST /v1/feeds {key} to the first entry in /v1/feed?feed=KEY (polled
#           every FIRST_POLL_MS): one publisher serving FIRST_BEES bees of FIRST_POSTS posts and
#           FIRST_PEERS publishers with one bee each, all announced on the DHT.
#             warm: one aggregator, bridge bootstrapped; the FIRST_BEES keys one after the
#                   other (the first needs a lookup and a connection; the others find that
#                   connection open), then the FIRST_PEERS keys (each a lookup and a new
#                   connection to another publisher);
#             cold: COLD_TRIALS fresh aggregators, each POSTs one key as soon as its HTTP
#                   answers (the bridge starts, bootstraps, looks up, connects).
#   idle:   a fresh aggregator (DHT on) follows IDLE_TOPICS random ed25519 keys nobody serves;
#           once the bridge made a lookup per topic and IDLE_SETTLE s passed, the bridge
#           child's and the aggregator's CPU (utime+stime of /proc/PID/stat, sampled every
#           second) over IDLE_WINDOW s, and their VmRSS/VmHWM; then (IDLE_LATE_AT > 0) a
#           second window starting IDLE_LATE_AT s after the follows. The aggregator looks
#           peerless bees up again 15 s after the follow, then every 30, 60, 120 ... s
#           (aggregator/src/discovery.rs refresh_peerless): the per-second timeline shows
#           those bursts.
#
# Other settings: N (100000), ROUNDS (2), DHT_NODES (4), JS_DIRECT (1), FIRST_BEES (25),
# FIRST_POSTS (10), FIRST_PEERS (5), COLD_TRIALS (5), FIRST_POLL_MS (5), IDLE_TOPICS (1000),
# IDLE_SETTLE (10), IDLE_WINDOW (60), IDLE_LATE_AT (300), PHASE_TIMEOUT (s, 900),
# KEEP_DATA=1 (keep data dirs), BUILD=0 (skip the release build: diagnostics only, e.g. while
# the shared tree does not build).
#
# stdout: one JSON line per case, then tables. Everything also goes to
# results/dht-<UTC date>.json; the processes' stderr to the log named at the end.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=lib.sh
source ./lib.sh

N=${N:-100000}
PARTS=${PARTS:-ingest js first idle}
ROUNDS=${ROUNDS:-2}
DHT_NODES=${DHT_NODES:-4}
JS_DIRECT=${JS_DIRECT:-1}
FIRST_BEES=${FIRST_BEES:-25}
FIRST_POSTS=${FIRST_POSTS:-10}
FIRST_PEERS=${FIRST_PEERS:-5}
COLD_TRIALS=${COLD_TRIALS:-5}
FIRST_POLL_MS=${FIRST_POLL_MS:-5}
IDLE_TOPICS=${IDLE_TOPICS:-1000}
IDLE_SETTLE=${IDLE_SETTLE:-10}
IDLE_WINDOW=${IDLE_WINDOW:-60}
IDLE_LATE_AT=${IDLE_LATE_AT:-300}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-900}
KEEP_DATA=${KEEP_DATA:-}
BUILD=${BUILD:-1}

TARGET_DIR=${CARGO_TARGET_DIR:-../../target}
BIN="$TARGET_DIR/release"
AGG="$BIN/apiary-aggregator"
PUB="$BIN/apiary-publisher"
CLIENT="$BIN/agg-client"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS="results/dht-$STAMP.json"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/apiary-bench-dht-XXXXXX")
LOG="$WORK/run.log"
: >"$WORK/ingest.jsonl" >"$WORK/js.jsonl" >"$WORK/first.jsonl" >"$WORK/idle.jsonl" >"$WORK/loadavg.jsonl"
: >"$WORK/empty.toml"

# What was built: core/, swarm/, aggregator/ and publisher/ as they are in the working tree (a
# hash of their uncommitted changes, tracked and untracked, goes into meta with the commit,
# taken before and after the build: the tree is shared, and a difference means someone changed
# those sources while this script built them).
SRC_DIRS="core swarm aggregator publisher"
tree_sha() {
  # shellcheck disable=SC2086
  (cd ../.. && { git diff HEAD -- $SRC_DIRS; git ls-files --others --exclude-standard -z -- $SRC_DIRS | xargs -0 -r cat; } | sha256sum | cut -d' ' -f1)
}
TREE_SHA=$(tree_sha)
DIRTY_BEFORE_BUILD=$(cd ../.. && git status --porcelain -- $SRC_DIRS 2>/dev/null | tr '\n' ';')
DIRTY_AFTER_BUILD=''
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $BUILD == 1 ]]; then
  note "building apiary-aggregator, apiary-publisher and apiary-bench (release)"
  (cd ../.. && cargo build --release -p apiary-aggregator -p apiary-publisher -p apiary-bench >&2)
  TREE_SHA_AFTER=$(tree_sha)
  COMMIT_AFTER=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  DIRTY_AFTER_BUILD=$(cd ../.. && git status --porcelain -- $SRC_DIRS 2>/dev/null | tr '\n' ';')
else
  note "BUILD=0: using the binaries in $BIN as they are (sourcesSha256 then says nothing about them)"
fi
if [[ ! -d ../../tests/js/node_modules/hyperswarm ]]; then
  note "installing the JS peers in tests/js (npm ci)"
  (cd ../../tests/js && npm ci --no-audit --no-fund >>"$LOG" 2>&1)
fi

# ---- /proc figures of any process: cpu_of, proc_of, delta (lib.sh) ----
bridge_of() { # parent pid -> pid of its `node …bridge.js` child (waits up to 60 s), or empty
  local c
  for _ in $(seq 600); do
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
      if tr '\0' ' ' <"/proc/$c/cmdline" 2>/dev/null | grep -q 'bridge\.js'; then
        echo "$c"
        return 0
      fi
    done
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
}

# ---- the private DHT ----
DHT_PID=''
DHT_FD=''
BOOT=''
start_dht() {
  mkfifo "$WORK/dht-in"
  echo "--- dht: node tests/js/dht.js --host 127.0.0.1 --nodes $DHT_NODES" >>"$LOG"
  node ../../tests/js/dht.js --host 127.0.0.1 --nodes "$DHT_NODES" <"$WORK/dht-in" >"$WORK/dht.out" 2>>"$LOG" &
  DHT_PID=$!
  exec {DHT_FD}>"$WORK/dht-in"
  for _ in $(seq 300); do
    BOOT=$(jq -r '.bootstrap[0] // empty' "$WORK/dht.out" 2>/dev/null || true)
    [[ -n $BOOT ]] && break
    kill -0 "$DHT_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $BOOT ]]; then
    note "the DHT did not start; the log:"
    tail -n 30 "$LOG" >&2
    exit 1
  fi
  note "DHT: pid $DHT_PID, bootstrap $BOOT, $DHT_NODES nodes + the bootstrapper"
}
stop_dht() {
  [[ -z $DHT_PID ]] && return 0
  exec {DHT_FD}>&- || true
  for _ in $(seq 100); do kill -0 "$DHT_PID" 2>/dev/null || break; sleep 0.1; done
  kill "$DHT_PID" 2>/dev/null || true
  wait "$DHT_PID" 2>/dev/null || true
  DHT_PID=''
}

# ---- JS writers: long-lived processes over FIFOs: start_writer, writer_say, stop_writer (lib.sh) ----

# ---- publishers: `apiary-publisher serve` on a prepared data dir ----
declare -A P_PID P_PORT P_DIR
make_bee() { # data_dir name posts seed -> hex key (the bee is created and filled)
  local hex
  hex=$("$PUB" --config "$WORK/empty.toml" --data-dir "$1" init "$2" 2>>"$LOG" | sed -n 's/^hex: //p')
  node js/data.js --jsonl "$3" "$4" >"$1.$2.jsonl"
  "$PUB" --config "$WORK/empty.toml" --data-dir "$1" import "$2" "$1.$2.jsonl" >>"$LOG" 2>&1
  rm -f "$1.$2.jsonl"
  echo "$hex"
}
start_pub() { # name bees (waits until every bee is announced on the DHT)
  local name=$1 bees=$2 dir=${P_DIR[$1]} out="${P_DIR[$1]}.stdout" addr=''
  echo "--- publisher $name: $PUB --data-dir $dir serve --listen 127.0.0.1:0 --no-page --bootstrap $BOOT" >>"$LOG"
  "$PUB" --config "$WORK/empty.toml" --data-dir "$dir" serve --listen 127.0.0.1:0 --no-page --bootstrap "$BOOT" \
    >"$out" 2>>"$LOG" &
  P_PID[$name]=$!
  for _ in $(seq 1200); do
    addr=$(sed -n 's/^serving .* on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out" 2>/dev/null | head -n1)
    if [[ -n $addr && $(grep -c '^announced on the DHT' "$out" 2>/dev/null) -ge $bees ]]; then break; fi
    kill -0 "${P_PID[$name]}" 2>/dev/null || break
    sleep 0.05
  done
  if [[ -z $addr || $(grep -c '^announced on the DHT' "$out" 2>/dev/null) -lt $bees ]]; then
    note "publisher $name did not announce its $bees bee(s); its stdout and the log:"
    cat "$out" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
  P_PORT[$name]=$addr
  note "publisher $name: pid ${P_PID[$name]}, 127.0.0.1:$addr, $bees bee(s) announced"
}
stop_pub() { # name
  local pid=${P_PID[$1]:-}
  [[ -z $pid ]] && return 0
  stop_pid "$pid"
  unset "P_PID[$1]"
}

# ---- aggregators: a fresh data dir and config per case ----
AGG_PID=''
AGG_HTTP=''
AGG_DIR=''
AGG_STARTED_MS=''
start_agg() { # name dht(0|1)
  AGG_DIR="$WORK/agg-$1"
  mkdir -p "$AGG_DIR"
  {
    echo "# run-dht.sh: fresh data dir, HTTP on a free port, no dial-in listener, rate limits"
    echo "# high enough for the polling client; the DHT on the local test DHT or off."
    echo "data_dir = \"$AGG_DIR/data\""
    echo 'http = "127.0.0.1:0"'
    echo 'listen = ""'
    echo 'rate_limit_per_second = 1000000'
    echo 'rate_limit_burst = 1000000'
    if [[ $2 == 1 ]]; then
      echo 'dht = true'
      echo "bootstrap = [\"$BOOT\"]"
    else
      echo 'dht = false'
    fi
  } >"$AGG_DIR/aggregator.toml"
  echo "--- aggregator $1: $AGG --config $AGG_DIR/aggregator.toml" >>"$LOG"
  AGG_STARTED_MS=$(unix_ms)
  "$AGG" --config "$AGG_DIR/aggregator.toml" >"$AGG_DIR/stdout" 2>"$AGG_DIR/stderr" &
  AGG_PID=$!
  AGG_HTTP=$(await_match "$AGG_DIR/stdout" 'http://127\.0\.0\.1:[0-9]*' "$AGG_PID" 3000 0.01)
  if [[ -z $AGG_HTTP ]]; then
    note "aggregator $1 did not start; its stderr:"
    tail -n 30 "$AGG_DIR/stderr" >&2
    exit 1
  fi
  note "aggregator $1: pid $AGG_PID, $AGG_HTTP, dht=$2"
}
agg_bootstrapped() { # waits until the aggregator's bridge says it bootstrapped (60 s at most)
  for _ in $(seq 600); do
    grep -q 'DHT bootstrapped' "$AGG_DIR/stderr" 2>/dev/null && return 0
    sleep 0.1
  done
  note "the aggregator's bridge did not bootstrap within 60 s"
  return 1
}
log_ms() { # pattern -> Unix ms of the first aggregator log line matching it, or null
  local t
  t=$(sed 's/\x1b\[[0-9;]*m//g' "$AGG_DIR/stderr" | grep -m1 "$1" | cut -d' ' -f1 || true)
  if [[ -z $t ]]; then echo null; else echo $(($(date -d "$t" +%s%N) / 1000000)); fi
}
metric() { # name -> value from /metrics, or null
  local v
  v=$(curl -s --max-time 5 "$AGG_HTTP/metrics" | awk -v m="$1" '$1 == m {print $2; exit}') || true
  echo "${v:-null}"
}
stop_agg() {
  [[ -z $AGG_PID ]] && return 0
  local bridge
  bridge=$(for c in $(cat /proc/"$AGG_PID"/task/*/children 2>/dev/null); do
    tr '\0' ' ' <"/proc/$c/cmdline" 2>/dev/null | grep -q 'bridge\.js' && echo "$c"; done | head -n1 || true)
  stop_pid "$AGG_PID"
  # Its bridge leaves when its stdin closes; make sure it is gone.
  if [[ -n $bridge ]]; then
    for _ in $(seq 100); do kill -0 "$bridge" 2>/dev/null || break; sleep 0.1; done
    kill "$bridge" 2>/dev/null || true
  fi
  { echo "--- stderr of aggregator $AGG_DIR"; cat "$AGG_DIR/stderr"; } >>"$LOG" 2>/dev/null || true
  AGG_PID=''
  [[ -z $KEEP_DATA && -n $AGG_DIR ]] && rm -rf "$AGG_DIR/data"
  true
}

stop_all() {
  stop_agg
  stop_writers
  for name in "${!P_PID[@]}"; do stop_pub "$name"; done
  stop_dht
}
trap stop_all EXIT

start_dht

# ---- ingest: the publisher's N-post bee, direct TCP and by key over the DHT ----
if has_part ingest; then
  loadavg "ingest start"
  P_DIR[ingest]="$WORK/pub-ingest"
  note "publisher: init + import of $N posts"
  t0=$(now)
  key=$(make_bee "${P_DIR[ingest]}" posts "$N" 1)
  import_s=$(delta "$t0" "$(now)")
  echo "$key" >"$WORK/ingest.keys"
  start_pub ingest 1
  ppid=${P_PID[ingest]}
  pbridge=$(bridge_of "$ppid")
  port=${P_PORT[ingest]}
  length=$((N + 1))
  for round in $(seq "$ROUNDS"); do
    for via in direct dht; do
      name="ingest-$via-$round"
      if [[ $via == dht ]]; then
        start_agg "$name" 1
        agg_bootstrapped || true
        abridge=$(bridge_of "$AGG_PID")
        peer=()
      else
        start_agg "$name" 0
        abridge=''
        peer=(--peer "127.0.0.1:$port")
      fi
      sleep 1
      p0=$(cpu_of "$ppid"); pb0=$(cpu_of "$pbridge"); d0=$(cpu_of "$DHT_PID")
      ab0=''; [[ -n $abridge ]] && ab0=$(cpu_of "$abridge")
      line=$(timeout "$PHASE_TIMEOUT" "$CLIENT" ingest --http "$AGG_HTTP" --keys "$WORK/ingest.keys" \
        "${peer[@]}" --entries "$N" --length "$length" --pid "$AGG_PID" 2>>"$LOG") || line='{"error": "ingest failed"}'
      p1=$(cpu_of "$ppid"); pb1=$(cpu_of "$pbridge"); d1=$(cpu_of "$DHT_PID")
      ab1=''; [[ -n $abridge ]] && ab1=$(cpu_of "$abridge")
      abproc=null; [[ -n $abridge ]] && abproc=$(proc_of "$abridge")
      status=$(curl -s --max-time 5 "$AGG_HTTP/v1/feeds/$key" || echo null)
      jq -e . >/dev/null 2>&1 <<<"$status" || status=null
      dhtm=null
      [[ $via == dht ]] && dhtm=$(jq -cn --argjson l "$(metric apiary_dht_lookups_total)" \
        --argjson c "$(metric apiary_dht_connections_total)" '{lookups: $l, connections: $c}')
      stop_agg
      jq -c --arg via "$via" --argjson round "$round" --argjson status "$status" \
        --argjson pub "$(delta "$p0" "$p1")" --argjson pubBridge "$(delta "$pb0" "$pb1")" \
        --argjson aggBridge "$(delta "$ab0" "$ab1")" --argjson dht "$(delta "$d0" "$d1")" \
        --argjson abproc "$abproc" --argjson pproc "$(proc_of "$ppid")" --argjson pbproc "$(proc_of "$pbridge")" \
        --argjson dhtm "$dhtm" --argjson importSeconds "$import_s" '
        {case: (if $via == "dht" then "aggregator <- publisher, by key over the DHT" else "aggregator <- publisher, direct TCP" end),
         via: $via, round: $round, importSeconds: $importSeconds} + . +
        {peersVia: (if $status == null then null else [$status.peers[]?.via] end),
         aggCpuSeconds: .aggCpu.seconds, aggHwmMB: .aggEnd.vmHwmMB,
         aggBridgeCpuSeconds: $aggBridge, aggBridge: $abproc,
         publisherCpuSeconds: $pub, publisherBridgeCpuSeconds: $pubBridge,
         publisher: $pproc, publisherBridge: $pbproc,
         dhtNodesCpuSeconds: $dht, dhtMetrics: $dhtm}' <<<"$line" | tee -a "$WORK/ingest.jsonl"
      sleep 1
    done
  done
  stop_pub ingest
  loadavg "ingest end"
fi

# ---- js: JS writer and JS reader on the same DHT ----
if has_part js; then
  loadavg "js start"
  name=js-writer
  start_writer "$name" node js/writer.js --n "$N" --bootstrap "$BOOT"
  key=$(jq -r .key <<<"${W_LINE[$name]}")
  port=$(jq -r .port <<<"${W_LINE[$name]}")
  for round in $(seq "$ROUNDS"); do
    modes=(dht)
    [[ $JS_DIRECT == 1 ]] && modes+=(direct)
    for via in "${modes[@]}"; do
      before=$(writer_say "$name" cpu)
      d0=$(cpu_of "$DHT_PID")
      t0=$(now)
      if [[ $via == dht ]]; then
        echo "--- js reader over the DHT: node js/dht-reader.js --key $key --bootstrap $BOOT" >>"$LOG"
        r=$(timeout "$PHASE_TIMEOUT" node js/dht-reader.js --key "$key" --bootstrap "$BOOT" 2>>"$LOG") || r=''
      else
        echo "--- js reader over TCP: node js/reader.js --port $port --key $key --mode full" >>"$LOG"
        r=$(timeout "$PHASE_TIMEOUT" node js/reader.js --port "$port" --key "$key" --mode full 2>>"$LOG") || r=''
      fi
      wall=$(delta "$t0" "$(now)")
      after=$(writer_say "$name" cpu)
      d1=$(cpu_of "$DHT_PID")
      jq -e . >/dev/null 2>&1 <<<"$r" || r='{"error": "reader failed"}'
      jq -c --arg via "$via" --argjson round "$round" --argjson w "${W_LINE[$name]}" --argjson b "$before" \
        --argjson a "$after" --argjson wall "$wall" --argjson dht "$(delta "$d0" "$d1")" '
        {case: (if $via == "dht" then "JS reader <- JS writer, by key over the DHT" else "JS reader <- JS writer, direct TCP" end),
         via: $via, round: $round, n: $w.n, writerLength: $w.length, writerAnnounceMs: $w.announceMs} + . +
        {processWallSeconds: $wall, writerCpuSeconds: ((($a.user + $a.system) - ($b.user + $b.system)) * 1000 | round / 1000),
         writerMaxRssMB: $a.maxRssMB, dhtNodesCpuSeconds: $dht}' <<<"$r" | tee -a "$WORK/js.jsonl"
      sleep 1
    done
  done
  stop_writer "$name"
  loadavg "js end"
fi

# ---- first: POST {key} -> first entry in /v1/feed ----
if has_part first; then
  loadavg "first start"
  note "publishers: 1 with $FIRST_BEES bees of $FIRST_POSTS posts, $FIRST_PEERS with one bee each"
  P_DIR[first]="$WORK/pub-first"
  : >"$WORK/first.keys"
  for b in $(seq "$FIRST_BEES"); do
    make_bee "${P_DIR[first]}" "b$b" "$FIRST_POSTS" $((1 + b)) >>"$WORK/first.keys"
  done
  : >"$WORK/peers.keys"
  for i in $(seq "$FIRST_PEERS"); do
    P_DIR[peer$i]="$WORK/pub-peer$i"
    make_bee "${P_DIR[peer$i]}" bee "$FIRST_POSTS" $((100 + i)) >>"$WORK/peers.keys"
  done
  start_pub first "$FIRST_BEES"
  for i in $(seq "$FIRST_PEERS"); do start_pub "peer$i" 1; done
  sleep 1

  # warm: one aggregator, bridge bootstrapped
  start_agg first-warm 1
  agg_bootstrapped || true
  sleep 2
  a0=$(proc_of "$AGG_PID")
  for set in first peers; do
    r=$(timeout "$PHASE_TIMEOUT" "$CLIENT" first --http "$AGG_HTTP" --keys "$WORK/$set.keys" \
      --poll-ms "$FIRST_POLL_MS" 2>>"$LOG") || r='{"error": "first failed"}'
    jq -c --arg set "$set" --argjson bees "$FIRST_BEES" '
      {case: (if $set == "first" then "warm bridge: \($bees) bees of one publisher, one after the other"
              else "warm bridge: one bee on each of \(.keys) other publishers (a lookup and a new connection each)" end),
       mode: "warm", set: $set} + .' <<<"$r" | tee -a "$WORK/first.jsonl"
  done
  jq -c --argjson a0 "$a0" --argjson a1 "$(proc_of "$AGG_PID")" \
    --argjson l "$(metric apiary_dht_lookups_total)" --argjson c "$(metric apiary_dht_connections_total)" \
    '{case: "warm aggregator after the follows", mode: "warm-after", aggBefore: $a0, aggAfter: $a1, dhtLookups: $l, dhtConnections: $c}' -n \
    | tee -a "$WORK/first.jsonl"
  stop_agg

  # cold: a fresh aggregator per trial, the POST as soon as its HTTP answers
  for t in $(seq "$COLD_TRIALS"); do
    k=$(sed -n "$(( (t - 1) % FIRST_BEES + 1 ))p" "$WORK/first.keys")
    echo "$k" >"$WORK/cold-$t.keys"
    start_agg "first-cold-$t" 1
    r=$(timeout "$PHASE_TIMEOUT" "$CLIENT" first --http "$AGG_HTTP" --keys "$WORK/cold-$t.keys" \
      --poll-ms "$FIRST_POLL_MS" --started-unix-ms "$AGG_STARTED_MS" 2>>"$LOG") || r='{"error": "first failed"}'
    sleep 0.5
    ready=$(log_ms 'DHT bridge ready')
    boot=$(log_ms 'DHT bootstrapped')
    jq -c --argjson t "$t" --argjson started "$AGG_STARTED_MS" --argjson ready "$ready" --argjson boot "$boot" '
      {case: "cold bridge: a fresh aggregator, POST as soon as its HTTP answers", mode: "cold", trial: $t} + . +
      {bridgeReadyMs: (if $ready == null then null else $ready - $started end),
       bridgeBootstrappedMs: (if $boot == null then null else $boot - $started end)}' <<<"$r" | tee -a "$WORK/first.jsonl"
    stop_agg
    sleep 1
  done
  stop_pub first
  for i in $(seq "$FIRST_PEERS"); do stop_pub "peer$i"; done
  loadavg "first end"
fi

# ---- idle: IDLE_TOPICS joined topics nobody serves ----
if has_part idle; then
  loadavg "idle start"
  node -e "
    const c = require('crypto')
    for (let i = 0; i < $IDLE_TOPICS; i++) {
      const { publicKey } = c.generateKeyPairSync('ed25519')
      console.log(Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url').toString('hex'))
    }" >"$WORK/idle.keys"
  start_agg idle 1
  agg_bootstrapped || true
  abridge=$(bridge_of "$AGG_PID")
  sleep 2
  base_agg=$(proc_of "$AGG_PID")
  base_bridge=$(proc_of "$abridge")
  l_base=$(metric apiary_dht_lookups_total)
  t_follow=$(now)
  f=$(timeout "$PHASE_TIMEOUT" "$CLIENT" ingest --http "$AGG_HTTP" --keys "$WORK/idle.keys" --entries 0 \
    --per-feed-max 0 --concurrency 4 --poll-ms 100 2>>"$LOG") || f='{"error": "follow failed"}'
  follow_s=$(delta "$t_follow" "$(now)")
  # Settled: every topic joined and looked up once, then IDLE_SETTLE s.
  settled=false
  for _ in $(seq 1200); do
    top=$(metric apiary_dht_topics)
    look=$(metric apiary_dht_lookups_total)
    if [[ $top != null && $look != null && $top -ge $IDLE_TOPICS && $((look - l_base)) -ge $IDLE_TOPICS ]]; then settled=true; break; fi
    sleep 0.5
  done
  # ... and the bridge's CPU back under 5% of a core over 2 s (120 s at most).
  for _ in $(seq 60); do
    c0=$(cpu_of "$abridge"); sleep 2; c1=$(cpu_of "$abridge")
    awk -v a="$c0" -v b="$c1" 'BEGIN {exit !((b - a) < 0.1)}' && break
  done
  joined_s=$(delta "$t_follow" "$(now)")
  note "idle: $IDLE_TOPICS follows in ${follow_s}s, every topic looked up and the bridge calm after ${joined_s}s ($settled); settling ${IDLE_SETTLE}s"
  sleep "$IDLE_SETTLE"

  window() { # label start_at(s after the follows, or now) -> JSON line
    local name=$1 at=$2 t a b samples a0 b0 p0 a1 b1 p1 l0 l1 t0 t1
    if [[ $at != now ]]; then
      local wait_s
      wait_s=$(awk -v t0="$t_follow" -v at="$at" -v n="$(now)" 'BEGIN {w = t0 + at - n; print (w > 0 ? w : 0)}')
      note "idle: waiting ${wait_s}s for the window at ${at}s"
      sleep "$wait_s"
    fi
    l0=$(metric apiary_dht_lookups_total)
    t0=$(now); a0=$(cpu_of "$AGG_PID"); b0=$(cpu_of "$abridge"); p0=$(cpu_of "$DHT_PID")
    # One sample a second on a fixed schedule: [seconds after the follows, bridge CPU s, agg CPU s].
    local prev_a=$a0 prev_b=$b0 i rows=''
    for i in $(seq "$IDLE_WINDOW"); do
      sleep "$(awk -v t0="$t0" -v i="$i" -v n="$(now)" 'BEGIN {w = t0 + i - n; printf "%.3f", (w > 0 ? w : 0)}')"
      t=$(now); a=$(cpu_of "$AGG_PID"); b=$(cpu_of "$abridge")
      rows+="$(awk -v t="$t" -v f="$t_follow" -v a0="$prev_a" -v a="$a" -v b0="$prev_b" -v b="$b" \
        'BEGIN {printf "[%.1f,%.2f,%.2f]", t - f, b - b0, a - a0}')"$'\n'
      prev_a=$a; prev_b=$b
    done
    t1=$(now); a1=$(cpu_of "$AGG_PID"); b1=$(cpu_of "$abridge"); p1=$(cpu_of "$DHT_PID")
    samples=$(jq -sc . <<<"$rows")
    l1=$(metric apiary_dht_lookups_total)
    jq -c -n --arg name "$name" --argjson from "$(delta "$t_follow" "$t0")" --argjson secs "$(delta "$t0" "$t1")" \
      --argjson bcpu "$(delta "$b0" "$b1")" --argjson acpu "$(delta "$a0" "$a1")" --argjson dcpu "$(delta "$p0" "$p1")" \
      --argjson bp "$(proc_of "$abridge")" --argjson ap "$(proc_of "$AGG_PID")" \
      --argjson l0 "$l0" --argjson l1 "$l1" --argjson samples "$samples" '
      {window: $name, fromSeconds: $from, seconds: $secs,
       bridgeCpuSeconds: $bcpu, bridgeCpuPercent: ($bcpu / $secs * 100 * 100 | round / 100),
       bridgeVmRssMB: $bp.vmRssMB, bridgeVmHwmMB: $bp.vmHwmMB,
       aggCpuSeconds: $acpu, aggCpuPercent: ($acpu / $secs * 100 * 100 | round / 100),
       aggVmRssMB: $ap.vmRssMB, aggVmHwmMB: $ap.vmHwmMB, aggThreads: $ap.threads,
       dhtNodesCpuSeconds: $dcpu, lookupsInWindow: (if $l0 == null or $l1 == null then null else $l1 - $l0 end),
       busySeconds: [$samples[] | select(.[1] >= 0.05) | .[0]],
       bridgeCpuWithoutBusySeconds: ([$samples[] | select(.[1] < 0.05) | .[1]] | add // 0 | . * 100 | round / 100),
       samples: $samples}'
  }
  w1=$(window "after the joins settle" now)
  w2=null
  if [[ $IDLE_LATE_AT != 0 ]]; then w2=$(window "late" "$IDLE_LATE_AT"); fi
  jq -c -n --argjson topics "$IDLE_TOPICS" --argjson f "$f" --argjson followS "$follow_s" --argjson joinedS "$joined_s" \
    --argjson settled "$settled" --argjson w1 "$w1" --argjson w2 "$w2" --argjson ba "$base_agg" --argjson bb "$base_bridge" \
    --argjson lookups "$(metric apiary_dht_lookups_total)" --argjson topicsNow "$(metric apiary_dht_topics)" \
    --argjson rssMetric "$(metric apiary_dht_bridge_rss_bytes)" '
    {case: "bridge idle with \($topics) joined topics nobody serves", topics: $topics,
     followSeconds: $followS, postStatus: $f.postStatus, allLookedUpAfterSeconds: $joinedS, settled: $settled,
     aggBeforeFollows: $ba, bridgeBeforeFollows: $bb,
     windows: ([$w1, $w2] | map(select(. != null))),
     lookupsTotalAtEnd: $lookups, topicsAtEnd: $topicsNow, bridgeRssMetricMB: (if $rssMetric == null then null else ($rssMetric / 1048576 * 10 | round / 10) end)}' \
    | tee -a "$WORK/idle.jsonl"
  stop_agg
  loadavg "idle end"
fi

trap - EXIT
stop_all

# ---- results file and tables ----
META=$(jq -cn \
  --arg date "$STAMP" --argjson n "$N" --arg parts "$PARTS" --argjson rounds "$ROUNDS" \
  --argjson dhtNodes "$DHT_NODES" --argjson firstBees "$FIRST_BEES" --argjson firstPosts "$FIRST_POSTS" \
  --argjson firstPeers "$FIRST_PEERS" --argjson coldTrials "$COLD_TRIALS" --argjson firstPollMs "$FIRST_POLL_MS" \
  --argjson idleTopics "$IDLE_TOPICS" --argjson idleSettle "$IDLE_SETTLE" --argjson idleWindow "$IDLE_WINDOW" \
  --argjson idleLateAt "$IDLE_LATE_AT" \
  --arg node "$(node --version)" --arg rustc "$(rustc --version)" \
  --arg hyperswarm "$(jq -r .version ../../tests/js/node_modules/hyperswarm/package.json)" \
  --argjson cpus "$(nproc)" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
  --arg kernel "$(uname -r)" --arg commit "$COMMIT" --arg commitAfter "${COMMIT_AFTER:-}" \
  --arg dirtyBefore "$DIRTY_BEFORE_BUILD" --arg dirtyAfter "$DIRTY_AFTER_BUILD" \
  --arg treeSha "$TREE_SHA" --arg treeShaAfter "${TREE_SHA_AFTER:-}" --argjson built "$BUILD" \
  --arg loadStart "$LOAD_START" --arg loadEnd "$(cut -d' ' -f1-3 /proc/loadavg)" \
  '{date: $date, n: $n, parts: $parts, rounds: $rounds, dhtNodes: $dhtNodes,
    firstBees: $firstBees, firstPosts: $firstPosts, firstPeers: $firstPeers, coldTrials: $coldTrials,
    firstPollMs: $firstPollMs, idleTopics: $idleTopics, idleSettleSeconds: $idleSettle,
    idleWindowSeconds: $idleWindow, idleLateAtSeconds: $idleLateAt,
    node: $node, rustc: $rustc, hyperswarm: $hyperswarm, cpus: $cpus, cpu: $cpu, kernel: $kernel,
    commit: $commit, commitAfterBuild: $commitAfter, built: ($built == 1),
    dirtySourcesBeforeBuild: $dirtyBefore, dirtySourcesAfterBuild: $dirtyAfter,
    sourcesSha256: $treeSha, sourcesSha256AfterBuild: $treeShaAfter,
    sourcesChangedDuringBuild: ($built == 1 and ($treeSha != $treeShaAfter or $commit != $commitAfter)),
    loadavgStart: $loadStart, loadavgEnd: $loadEnd}')
mkdir -p results
node js/summarize-dht.js "$WORK" "$META" "$RESULTS"
note "results: $RESULTS ; log: $LOG"
