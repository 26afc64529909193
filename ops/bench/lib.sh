# shellcheck shell=bash
# ops/bench/lib.sh: what the run-*.sh scripts share, sourced by each of them after `cd` into
# ops/bench: starting the long-lived processes (writers driven over FIFOs, servers that print
# their address), sampling CPU and memory from /proc, and stopping processes at the end.
#
# The functions write to $LOG (the run's log) and some to $WORK (its temp dir): a script sets
# both before it starts anything. Writers are tracked in the arrays W_PID, W_IN, W_OUT and
# W_LINE, by name.

note() { echo "# $*" >&2; }
has_part() { [[ " $PARTS " == *" $1 "* ]]; }
now() { date +%s.%N; }
unix_ms() { echo $(($(date +%s%N) / 1000000)); }
loadavg() { # label: appends the load average to $WORK/loadavg.jsonl and notes it
  jq -cn --arg at "$1" --arg l "$(cut -d' ' -f1-3 /proc/loadavg)" '{at: $at, loadavg: $l}' >>"$WORK/loadavg.jsonl"
  note "load average ($1): $(cut -d' ' -f1-3 /proc/loadavg)"
}

# ---- starting processes ----

# Polls FILE every INTERVAL s, at most TRIES times, for the first match of the grep -o
# PATTERN, while PID lives; prints the match (empty when the process ended or time ran out).
await_match() { # file pattern pid tries interval
  local m=''
  for _ in $(seq "$4"); do
    m=$(grep -o -m1 -- "$2" "$1" 2>/dev/null | head -n1 || true)
    [[ -n $m ]] && break
    kill -0 "$3" 2>/dev/null || break
    sleep "$5"
  done
  echo "$m"
}

# Writers: long-lived processes that answer one JSON line per command line. Each runs with
# its stdin and stdout on FIFOs in $WORK/writer-NAME; its first line (the build line) goes
# into W_LINE[NAME]. Returns 1 when no first line came within 1800 s.
declare -A W_PID W_IN W_OUT W_LINE
spawn_writer() { # name cmd...
  local name=$1 dir="$WORK/writer-$1" fd_in fd_out line
  shift
  mkdir -p "$dir"
  mkfifo "$dir/in" "$dir/out"
  echo "--- writer $name: $*" >>"$LOG"
  "$@" <"$dir/in" >"$dir/out" 2>>"$LOG" &
  W_PID[$name]=$!
  exec {fd_in}>"$dir/in" {fd_out}<"$dir/out"
  W_IN[$name]=$fd_in
  W_OUT[$name]=$fd_out
  read -r -t 1800 line <&"$fd_out" || return 1
  W_LINE[$name]=$line
}

# As spawn_writer; exits with the log's tail when the writer does not start.
start_writer() { # name cmd...
  if ! spawn_writer "$@"; then
    note "writer $1 did not start; the log:"
    tail -n 30 "$LOG" >&2
    exit 1
  fi
  note "writer $1: ${W_LINE[$1]}"
}

writer_say() { # name command [timeout s] -> the writer's one-line answer
  local line
  echo "$2" >&"${W_IN[$1]}"
  read -r -t "${3:-30}" line <&"${W_OUT[$1]}"
  echo "$line"
}

# `quit`, then up to WRITER_STOP_TRIES tenths of a second for the exit (100 unless the script
# sets it), then SIGTERM; closes the FIFOs.
stop_writer() { # name
  local name=$1 pid=${W_PID[$1]:-}
  [[ -z $pid ]] && return 0
  if kill -0 "$pid" 2>/dev/null; then
    echo quit >&"${W_IN[$name]}" 2>/dev/null || true
    for _ in $(seq "${WRITER_STOP_TRIES:-100}"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  local fd_in=${W_IN[$name]} fd_out=${W_OUT[$name]}
  exec {fd_in}>&- {fd_out}<&- || true
  unset "W_PID[$name]"
}

stop_writers() {
  local name
  for name in "${!W_PID[@]}"; do stop_writer "$name"; done
}

# ---- stopping processes ----

# SIGINT (a clean shutdown), up to 30 s for the exit, then SIGKILL; reaps it.
stop_pid() { # pid
  [[ -z $1 ]] && return 0
  if kill -0 "$1" 2>/dev/null; then
    kill -INT "$1" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
}

# ---- /proc figures of any process ----

cpu_of() { # pid -> utime+stime in seconds (empty when gone)
  local s
  s=$(cut -d')' -f2- "/proc/$1/stat" 2>/dev/null) || return 0
  awk '{printf "%.2f\n", ($12 + $13) / 100}' <<<"$s"
}

# The jq program over /proc/PID/stat ($stat, after the comm) and /proc/PID/status ($status):
# $f the stat fields from the state on, $s the status fields without their " kB".
PROC_JQ='($stat | split(" ") | map(select(. != ""))) as $f
    | ($status | split("\n") | map(split(":") | {(.[0]): ((.[1] // "") | gsub("^\\s+|\\s*kB$"; ""))}) | add) as $s'

proc_of() { # pid -> {"cpu": s, "vmRssMB", "vmHwmMB", "threads"} now, or null when gone
  local stat status
  if ! stat=$(cut -d')' -f2- "/proc/$1/stat" 2>/dev/null) || ! status=$(cat "/proc/$1/status" 2>/dev/null); then
    echo null
    return 0
  fi
  jq -cn --arg stat "$stat" --arg status "$status" "$PROC_JQ"'
    | {cpu: ((($f[11] | tonumber) + ($f[12] | tonumber)) / 100),
       vmRssMB: (($s.VmRSS | tonumber) / 1024 * 10 | round / 10),
       vmHwmMB: (($s.VmHWM | tonumber) / 1024 * 10 | round / 10),
       threads: ($s.Threads | tonumber)}'
}

proc_full() { # pid -> {"cpu": s, "vmRssMB", "vmHwmMB", "rssAnonMB", "rssFileMB", "fds", "threads"} now
  local stat status
  stat=$(cut -d')' -f2- "/proc/$1/stat")
  status=$(cat "/proc/$1/status")
  jq -cn --arg stat "$stat" --arg status "$status" --argjson fds "$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l)" "$PROC_JQ"'
    | {cpu: ((($f[11] | tonumber) + ($f[12] | tonumber)) / 100),
       vmRssMB: (($s.VmRSS | tonumber) / 1024 * 10 | round / 10),
       vmHwmMB: (($s.VmHWM | tonumber) / 1024 * 10 | round / 10),
       rssAnonMB: (($s.RssAnon | tonumber) / 1024 * 10 | round / 10),
       rssFileMB: (($s.RssFile | tonumber) / 1024 * 10 | round / 10),
       fds: $fds, threads: ($s.Threads | tonumber)}'
}

delta() { # before after -> after - before (seconds, 2 decimals) or null
  if [[ -z $1 || -z $2 || $1 == null || $2 == null ]]; then echo null; else awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f\n", b - a}'; fi
}
