#!/usr/bin/env bash
# The API contract: schemathesis (PyPI) against a real apiary-aggregator and the description
# it serves at /v1/openapi.json, with every check on (no server errors, no undocumented
# status, every response in its schema, content types and headers as documented, valid
# requests accepted, invalid ones refused, auth enforced as documented, 405 with Allow for
# other methods). Fails on any failure.
#
# Two configurations, since the description declares each: with an admin token (admin
# operations need `Authorization: Bearer TOKEN`; schemathesis checks that a request without
# it or with a wrong one is refused), and with none (the loopback rule: only loopback
# clients may call them, no credentials read; the description lists no security for them).
# Each aggregator follows a publisher's bee (posts with tags, a movie, keys with `/` and
# spaces), so the feed, search and entries endpoints answer with real entries.
#
# Schemathesis follows feeds, dials the peers and writes the backups it makes up, so the
# servers run in a network namespace of their own holding only loopback (nothing it makes up
# can reach another machine) and, when run as root, as `nobody` (a made-up backup directory
# cannot land outside /tmp). /v1/stream is left out: its response never ends, and
# schemathesis reads whole bodies (the aggregator's unit tests check its parameters and
# errors, tests/tests/aggregator_features.rs its events).
#
# Needs python3 with venv and pip (schemathesis is installed into target/), util-linux's
# unshare (and setpriv as root), iproute2's ip; a non-root user needs user namespaces.
# Env: ST_MAX_EXAMPLES (default 100) examples per operation and phase, ST_WORKERS (1),
# ST_SEED (1), ST_ARGS (more `st run` options, e.g. `--report har --report-dir /tmp/r`).
set -euo pipefail

ST_VERSION=4.32.5

if [ "${1:-}" != "--inside" ]; then
  cd "$(dirname "$0")/../.."
  started=$(date +%s)
  if ! command -v ip >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
    else
      echo "schemathesis.sh: needs iproute2's ip" >&2
      exit 1
    fi
  fi
  venv="target/schemathesis-$ST_VERSION"
  if ! [ -x "$venv/bin/st" ]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" && [ "$(id -u)" = 0 ]; then
      # Debian's own python3 keeps venv in a package of its own.
      rm -rf "$venv"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$ST_VERSION"
  fi
  cargo build -q -p apiary-aggregator -p apiary-publisher
  work="$(mktemp -d /tmp/apiary-st.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work"
  mkdir -p "$work/bin"
  # Copies any user can run (the checkout may be in a home directory closed to `nobody`).
  cp target/debug/apiary-aggregator target/debug/apiary-publisher "$work/bin/"
  chmod 755 "$work/bin"/*
  # A PID namespace too: when its first process (the script below) ends, however it ends,
  # the kernel ends every server it started.
  ns=(--net --pid --fork --kill-child)
  if [ "$(id -u)" = 0 ]; then
    unshare "${ns[@]}" -- bash "$0" --inside "$work" "$PWD/$venv/bin/st" nobody
  else
    unshare --map-root-user "${ns[@]}" -- bash "$0" --inside "$work" "$PWD/$venv/bin/st" self
  fi
  echo "schemathesis.sh: passed in $(($(date +%s) - started)) s"
  exit 0
fi

# ---- Inside the network namespace ----
work="$2"
st="$3"
user="$4"
ip link set lo up
examples="${ST_MAX_EXAMPLES:-100}"
# One worker: schemathesis' workers are threads, and CPython before 3.11.8 / 3.12.2 can fail
# building ASTs in two threads at once ("AST constructor recursion depth mismatch",
# CPython gh-106905), which hypothesis does to describe its strategies.
workers="${ST_WORKERS:-1}"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Servers run as `nobody` when we are root, with a home of their own. A command prefix, not
# a function, so that `$!` of a server started with `&` is the server itself.
as_server=(env HOME="$work/home" XDG_CONFIG_HOME="$work/home")
if [ "$user" = nobody ]; then
  as_server+=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
fi
mkdir -p "$work/home" "$work/pub"
[ "$user" = nobody ] && chown -R 65534:65534 "$work/home" "$work/pub"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A publisher with one bee.
P=("$work/bin/apiary-publisher" --data-dir "$work/pub")
made="$("${as_server[@]}" "${P[@]}" init st)"
key="${made%%$'\n'*}"
for i in $(seq 1 12); do
  "${as_server[@]}" "${P[@]}" post st "post $i about bees and hives" --tag p2p --tag "t$((i % 3))" >/dev/null
done
"${as_server[@]}" "${P[@]}" put st movies/alien '{"type": "movie", "title": "Alien", "tags": ["scifi"]}' >/dev/null
"${as_server[@]}" "${P[@]}" put st 'a key/with spaces' '{"text": "odd keys are keys too"}' >/dev/null
pub_port="$(free_port)"
"${as_server[@]}" "${P[@]}" serve --no-dht --no-page --listen "127.0.0.1:$pub_port" >"$work/pub.log" 2>&1 &
pids+=($!)

start_aggregator() { # name, extra config lines -> sets $base once it has the bee
  local name="$1" extra="$2" port dir
  port="$(free_port)"
  dir="$work/$name"
  mkdir -p "$dir"
  cat >"$dir/agg.toml" <<EOF
data_dir = "$dir/data"
http = "127.0.0.1:$port"
listen = ""
dht = false
rate_limit_per_second = 100000
rate_limit_burst = 100000
request_timeout_ms = 5000
$extra

[[follow]]
key = "$key"
peers = ["127.0.0.1:$pub_port"]
EOF
  [ "$user" = nobody ] && chown -R 65534:65534 "$dir"
  "${as_server[@]}" "$work/bin/apiary-aggregator" --config "$dir/agg.toml" >"$dir/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do
    if python3 - "http://127.0.0.1:$port/v1/search?q=alien" <<'PY' 2>/dev/null; then
import sys, urllib.request
sys.exit(0 if b'"movies/alien"' in urllib.request.urlopen(sys.argv[1], timeout=2).read() else 1)
PY
      base="http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "schemathesis.sh: $name did not index the bee; its log:" >&2
  cat "$dir/log" >&2
  return 1
}

# `too_slow` is hypothesis' own check that drawing examples is fast (a loaded CI machine can
# fail it); it checks nothing of the server.
run_st() { # name, base URL, extra st options...
  local name="$1" base="$2"
  shift 2
  echo "== schemathesis: $name"
  # From the scratch directory: st keeps failures for `st replay` in ./.schemathesis.
  (cd "$work" && "$st" run "$base/v1/openapi.json" \
    --checks all \
    --max-response-time 10 \
    --max-examples "$examples" \
    --workers "$workers" \
    --request-timeout 15 \
    --exclude-path /v1/stream \
    --suppress-health-check too_slow \
    --seed "${ST_SEED:-1}" \
    --generation-database none \
    --no-color \
    ${ST_ARGS:-} \
    "$@")
}

token="st-admin-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
start_aggregator with-token "admin_token = \"$token\""
with_token="$base"
start_aggregator loopback ""
loopback="$base"

status=0
run_st "admin token" "$with_token" -H "Authorization: Bearer $token" || status=1
run_st "no token (loopback rule)" "$loopback" || status=1

for name in with-token loopback; do
  if grep -q "panicked" "$work/$name/log"; then
    echo "schemathesis.sh: $name panicked:" >&2
    grep -A5 "panicked" "$work/$name/log" >&2
    status=1
  fi
done
exit "$status"
