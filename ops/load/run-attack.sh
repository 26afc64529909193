#!/usr/bin/env bash
# ATTACK load test (issue 10): the release aggregator under a 1024-descriptor limit (what a
# default systemd service gets), once quiet and once while one address holds SLOW slow HTTP
# connections (ops/load/slowloris.py, reopened as the server closes them). In each phase, at
# the same time: wrk at /v1/feed, a probe of /healthz every 100 ms from another address
# (ops/load/probe.py), and a publisher posting every 200 ms through its CLI (the aggregator
# follows it by its address). Sampled every second: the aggregator's RSS and open fds.
#
#   bash ops/load/run-attack.sh                    # 20 s per phase, 1500 slow connections
#   PHASE_SECONDS=5 SLOW=300 bash ops/load/run-attack.sh   # quick check
#
# Goal with the attack on: >= 95% of probes answered, /healthz p99 <= 50 ms, every post
# indexed, the process alive. stdout: one JSON line per phase, then a table; everything also
# goes to ops/load/results/attack-<UTC>.json.
set -euo pipefail
cd "$(dirname "$0")/../.."

PHASE_SECONDS=${PHASE_SECONDS:-20}
SLOW=${SLOW:-1500}
NOFILE=${NOFILE:-1024}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
POST_EVERY=${POST_EVERY:-0.2}

command -v wrk >/dev/null || { echo "wrk is needed (Debian: apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p apiary-aggregator -p apiary-publisher
AGG=$PWD/target/release/apiary-aggregator
PUB=$PWD/target/release/apiary-publisher
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The publisher: a bee with some posts, served on loopback.
KEY=$("$PUB" --data-dir "$W/pub" init posts | head -1)
for i in $(seq 1 50); do "$PUB" --data-dir "$W/pub" post posts "warm-up post $i" >/dev/null; done
PPORT=$(free_port)
"$PUB" --data-dir "$W/pub" serve --no-dht --no-page --listen "127.0.0.1:$PPORT" >"$W/pub.log" 2>&1 &
PIDS+=($!)

HPORT=$(free_port); RPORT=$(free_port)
cat >"$W/agg.toml" <<EOF
data_dir = "$W/agg"
http = "127.0.0.1:$HPORT"
listen = "127.0.0.1:$RPORT"
dht = false
rate_limit_per_second = 1000000
rate_limit_burst = 1000000
min_free_disk_mb = 16
log = "warn"
EOF
prlimit --nofile="$NOFILE:$NOFILE" "$AGG" --config "$W/agg.toml" >"$W/agg.out" 2>"$W/agg.log" &
AGG_PID=$!
PIDS+=($AGG_PID)
BASE="http://127.0.0.1:$HPORT"
for _ in $(seq 1 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
Z=${KEY#hyper://}
curl -sf -X POST "$BASE/v1/feeds" -H 'content-type: application/json' \
  -d "{\"key\": \"$KEY\", \"peers\": [\"127.0.0.1:$PPORT\"]}" >/dev/null

status() { curl -sf "$BASE/v1/feeds/$Z"; }
wait_indexed() { # seconds
  local want
  for _ in $(seq 1 $(( $1 * 10 ))); do
    want=$("$PUB" --data-dir "$W/pub" bees | python3 -c 'import sys,json; print(json.loads(sys.stdin.readline())["length"])')
    [ "$(status | python3 -c 'import sys,json; print(json.load(sys.stdin)["indexedVersion"])')" = "$want" ] && return 0
    sleep 0.1
  done
  return 1
}
wait_indexed 60

sample() { # phase: RSS (kB) and fds every second while the phase runs
  local end=$((SECONDS + PHASE_SECONDS))
  while [ $SECONDS -lt $end ]; do
    if [ -d "/proc/$AGG_PID" ]; then
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$AGG_PID/status")
      fds=$(ls "/proc/$AGG_PID/fd" | wc -l)
      echo "{\"phase\": \"$1\", \"t\": $SECONDS, \"rssKb\": $rss, \"fds\": $fds}"
    fi
    sleep 1
  done >>"$W/samples.jsonl"
}

post_loop() { # posts for the phase; prints how many
  local end=$((SECONDS + PHASE_SECONDS)) n=0
  while [ $SECONDS -lt $end ]; do
    "$PUB" --data-dir "$W/pub" post posts "posted during $1 $n" >/dev/null && n=$((n + 1))
    sleep "$POST_EVERY"
  done
  echo "$n"
}

run_phase() { # name
  local name=$1
  sample "$name" &
  local sampler=$!
  python3 ops/load/probe.py "$BASE/healthz" "$PHASE_SECONDS" 0.1 >"$W/probe-$name.json" &
  local prober=$!
  post_loop "$name" >"$W/posts-$name" &
  local poster=$!
  wrk -t2 -c"$WRK_CONNECTIONS" -d"${PHASE_SECONDS}s" --latency "$BASE/v1/feed?limit=20" >"$W/wrk-$name.txt" 2>&1 || true
  wait "$prober" "$poster" "$sampler"
  local rps p99 posts indexed alive
  rps=$(awk '/Requests\/sec/ {print $2}' "$W/wrk-$name.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$W/wrk-$name.txt")
  posts=$(cat "$W/posts-$name")
  if wait_indexed 60; then indexed=true; else indexed=false; fi
  if kill -0 "$AGG_PID" 2>/dev/null; then alive=true; else alive=false; fi
  local peak_rss max_fds
  peak_rss=$(python3 -c "import json; s=[json.loads(l) for l in open('$W/samples.jsonl') if '\"$name\"' in l]; print(max([x['rssKb'] for x in s] or [0]))")
  max_fds=$(python3 -c "import json; s=[json.loads(l) for l in open('$W/samples.jsonl') if '\"$name\"' in l]; print(max([x['fds'] for x in s] or [0]))")
  echo "{\"phase\": \"$name\", \"wrkRps\": ${rps:-0}, \"wrkP99\": \"${p99:-?}\", \"probe\": $(cat "$W/probe-$name.json"), \"posts\": $posts, \"allIndexed\": $indexed, \"alive\": $alive, \"peakRssKb\": $peak_rss, \"maxFds\": $max_fds}"
}

OUT=ops/load/results/attack-$(date -u +%Y-%m-%dT%H-%M-%SZ).json
{
  run_phase quiet
  python3 ops/load/slowloris.py "127.0.0.1:$HPORT" "$SLOW" $((PHASE_SECONDS + 8)) 127.0.0.2 >"$W/slowloris.json" &
  SLOWPID=$!
  sleep 3 # let the slow connections pile up first
  ATTACK=$(run_phase attack)
  wait "$SLOWPID" || true
  echo "${ATTACK%\}}, \"slowloris\": $(cat "$W/slowloris.json")}"
} | tee "$OUT.lines"
python3 - "$OUT.lines" "$OUT" "$W/samples.jsonl" "$SLOW" "$NOFILE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
samples = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
json.dump({"slowConnections": int(sys.argv[4]), "nofile": int(sys.argv[5]), "phases": rows, "samples": samples},
          open(sys.argv[2], "w"), indent=1)
print(f"{'phase':8} {'wrk req/s':>10} {'wrk p99':>9} {'probes ok':>10} {'probe p99':>10} {'posts':>6} {'indexed':>8} {'alive':>6} {'RSS MB':>7} {'fds':>5}")
for r in rows:
    p = r["probe"]
    print(f"{r['phase']:8} {r['wrkRps']:>10} {r['wrkP99']:>9} {p['answeredPct']:>9}% {str(p['p99ms'])+' ms':>10} {r['posts']:>6} {str(r['allIndexed']):>8} {str(r['alive']):>6} {r['peakRssKb']//1024:>7} {r['maxFds']:>5}")
for r in rows:
    if "slowloris" in r:
        print("slow connections:", r["slowloris"])
PY
rm -f "$OUT.lines"
echo "results: $OUT"
