#!/usr/bin/env bash
# HOSTILE PEERS at the replication port (issue 10, item 4), measured from outside: the release
# aggregator under a 1024-descriptor limit follows a publisher that posts every 200 ms, while
# one address (127.0.0.3) runs, one phase after the other (ops/bench hostile-peers):
#   trickle: 100 connections that each claim a 16 MiB frame and then send a byte a second;
#   flood:   2 connections that send 16 MiB messages as fast as they can, never reading;
#   idle:    2000 TCP connections that send nothing.
# Per phase: the aggregator's peak RSS and fds (sampled every second), /healthz probes from
# 127.0.0.1, posts made and whether all were indexed, and the attacker's counts.
#
#   bash ops/load/run-hostile-peers.sh                  # 20 s per phase
#   PHASE_SECONDS=5 bash ops/load/run-hostile-peers.sh  # quick check
set -euo pipefail
cd "$(dirname "$0")/../.."

PHASE_SECONDS=${PHASE_SECONDS:-20}
NOFILE=${NOFILE:-1024}
PHASES=${PHASES:-"trickle:100 flood:2 idle:2000"}

cargo build --release -q -p apiary-aggregator -p apiary-publisher -p apiary-bench
AGG=$PWD/target/release/apiary-aggregator
PUB=$PWD/target/release/apiary-publisher
EVIL=$PWD/target/release/hostile-peers
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

KEY=$("$PUB" --data-dir "$W/pub" init posts | head -1)
PPORT=$(free_port)
"$PUB" --data-dir "$W/pub" serve --no-dht --no-page --listen "127.0.0.1:$PPORT" >"$W/pub.log" 2>&1 &
PIDS+=($!)
HPORT=$(free_port); RPORT=$(free_port)
cat >"$W/agg.toml" <<EOF
data_dir = "$W/agg"
http = "127.0.0.1:$HPORT"
listen = "127.0.0.1:$RPORT"
dht = false
min_free_disk_mb = 16
log = "warn"
EOF
prlimit --nofile="$NOFILE:$NOFILE" "$AGG" --config "$W/agg.toml" >"$W/agg.out" 2>"$W/agg.log" &
AGG_PID=$!
PIDS+=($AGG_PID)
BASE="http://127.0.0.1:$HPORT"
for _ in $(seq 1 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
curl -sf -X POST "$BASE/v1/feeds" -H 'content-type: application/json' \
  -d "{\"key\": \"$KEY\", \"peers\": [\"127.0.0.1:$PPORT\"]}" >/dev/null
Z=${KEY#hyper://}

indexed() {
  local want
  want=$("$PUB" --data-dir "$W/pub" bees | python3 -c 'import sys,json; print(json.loads(sys.stdin.readline())["length"])')
  for _ in $(seq 1 600); do
    [ "$(curl -sf "$BASE/v1/feeds/$Z" | python3 -c 'import sys,json; print(json.load(sys.stdin)["indexedVersion"])')" = "$want" ] && { echo true; return; }
    sleep 0.1
  done
  echo false
}

phase() { # mode count
  local mode=$1 count=$2 end=$((SECONDS + PHASE_SECONDS)) n=0 peak=0 fds=0
  "$EVIL" --target "127.0.0.1:$RPORT" --mode "$mode" --count "$count" --seconds "$PHASE_SECONDS" >"$W/evil-$mode.json" 2>"$W/evil-$mode.log" &
  local evil=$!
  python3 ops/load/probe.py "$BASE/healthz" "$PHASE_SECONDS" 0.1 >"$W/probe-$mode.json" &
  local prober=$!
  while [ $SECONDS -lt $end ]; do
    "$PUB" --data-dir "$W/pub" post posts "posted during $mode $n" >/dev/null && n=$((n + 1))
    if [ -d "/proc/$AGG_PID" ]; then
      r=$(awk '/VmRSS/ {print $2}' "/proc/$AGG_PID/status"); [ "$r" -gt "$peak" ] && peak=$r
      f=$(ls "/proc/$AGG_PID/fd" | wc -l); [ "$f" -gt "$fds" ] && fds=$f
    fi
    sleep 0.2
  done
  wait "$evil" "$prober" || true
  local alive=false; kill -0 "$AGG_PID" 2>/dev/null && alive=true
  echo "{\"phase\": \"$mode\", \"connections\": $count, \"peakRssMb\": $((peak / 1024)), \"maxFds\": $fds, \"posts\": $n, \"allIndexed\": $(indexed), \"alive\": $alive, \"probe\": $(cat "$W/probe-$mode.json"), \"attacker\": $(cat "$W/evil-$mode.json" 2>/dev/null || echo null)}"
}

OUT=ops/load/results/hostile-peers-$(date -u +%Y-%m-%dT%H-%M-%SZ).json
{
  for p in $PHASES; do phase "${p%%:*}" "${p##*:}"; done
} | tee "$OUT.lines"
python3 - "$OUT.lines" "$OUT" "$NOFILE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump({"nofile": int(sys.argv[3]), "phases": rows}, open(sys.argv[2], "w"), indent=1)
print(f"{'phase':8} {'conns':>6} {'peak RSS MB':>11} {'max fds':>8} {'probes ok':>10} {'probe p99':>10} {'posts':>6} {'indexed':>8} {'alive':>6}")
for r in rows:
    p = r["probe"]
    print(f"{r['phase']:8} {r['connections']:>6} {r['peakRssMb']:>11} {r['maxFds']:>8} {p['answeredPct']:>9}% {str(p['p99ms'])+' ms':>10} {r['posts']:>6} {str(r['allIndexed']):>8} {str(r['alive']):>6}")
PY
rm -f "$OUT.lines"
echo "results: $OUT"
