#!/usr/bin/env bash
# The crash soaks of tests/tests/soak.rs at a larger scale: kill -9 of the aggregator during
# backfill and live writes, of the publisher's import, and of its serve, each checked against
# an oracle. Runs the whole test file again and again (a new seed each time) until MINUTES have
# passed (at least once; another iteration starts only if it should end in time), then writes
# a summary to ops/soak/results/<UTC>.md.
#
#   bash ops/soak/run.sh [MINUTES]        default 12
#
# Scale (environment; defaults in brackets, CI's in tests/tests/soak.rs):
#   AGG_KILLS [300]  ENTRIES [80000]  IMPORT_KILLS [30]  IMPORT_LINES [15500]  SERVE_KILLS [150]
#   SEED: the first iteration's seed (later ones add 1) [from the clock]
#   SOAK_RESULTS: the summary file [ops/soak/results/<UTC>.md]
# The test output goes to target/soak/<UTC>.log. Exits 1 if an iteration failed; its seed
# replays it: APIARY_SOAK_SEED=<seed> with the same scale (kill moments that wait on events
# land on the same kind of event; those after a delay land at a similar point).
set -euo pipefail
cd "$(dirname "$0")/../.."

minutes="${1:-12}"
agg_kills="${AGG_KILLS:-300}"
entries="${ENTRIES:-80000}"
import_kills="${IMPORT_KILLS:-30}"
import_lines="${IMPORT_LINES:-15500}"
serve_kills="${SERVE_KILLS:-150}"
seed="${SEED:-$(( $(date +%s) % 1000000000 ))}"
stamp="$(date -u +%Y-%m-%dT%H-%M-%SZ)"
results="${SOAK_RESULTS:-ops/soak/results/$stamp.md}"
mkdir -p target/soak "$(dirname "$results")"
log="target/soak/$stamp.log"
rows="target/soak/$stamp.rows"
: >"$rows"

# The tree is shared with other work: say what was built.
head="$(git rev-parse --short HEAD)"
git status --short -- core publisher aggregator net swarm tests >"target/soak/$stamp.dirty"

echo "building the test binaries..."
cargo test -q -p apiary-tests --test soak --no-run 2>>"$log"

start=$(date +%s)
iteration=0
failed=0
while :; do
  iteration=$((iteration + 1))
  s=$((seed + iteration - 1))
  echo "iteration $iteration, seed $s (log: $log)"
  t0=$(date +%s)
  set +e
  APIARY_SOAK_SEED=$s APIARY_SOAK_KILLS=$agg_kills APIARY_SOAK_ENTRIES=$entries \
    APIARY_SOAK_IMPORT_KILLS=$import_kills APIARY_SOAK_IMPORT_LINES=$import_lines \
    APIARY_SOAK_SERVE_KILLS=$serve_kills \
    cargo test -q -p apiary-tests --test soak -- --nocapture --test-threads=1 >>"$log.$iteration" 2>&1
  code=$?
  set -e
  cat "$log.$iteration" >>"$log"
  took=$(($(date +%s) - t0))
  grep -h '^SOAK-RESULT ' "$log.$iteration" | sed "s/^SOAK-RESULT /$iteration $s /" >>"$rows" || true
  if [ "$code" != 0 ]; then
    failed=$((failed + 1))
    {
      echo "FAILED $iteration $s exit $code after ${took}s"
      grep -h -A4 'panicked at' "$log.$iteration" | head -40
    } >>"$rows.failures"
    echo "iteration $iteration FAILED (exit $code); see $log"
  fi
  rm -f "$log.$iteration"
  if [ $(($(date +%s) - start + took)) -gt $((minutes * 60)) ]; then break; fi
done
total=$(($(date +%s) - start))

node - "$rows" "$results" "$stamp" "$head" "target/soak/$stamp.dirty" "$total" "$iteration" "$failed" \
  "$agg_kills" "$entries" "$import_kills" "$import_lines" "$serve_kills" "$log" <<'JS'
const fs = require('fs')
const [rowsFile, out, stamp, head, dirtyFile, total, iterations, failed, aggKills, entries,
  importKills, importLines, serveKills, log] = process.argv.slice(2)
const rows = fs.readFileSync(rowsFile, 'utf8').split('\n').filter(Boolean).map((l) => {
  const [it, seed, ...rest] = l.split(' ')
  return { it, seed, ...JSON.parse(rest.join(' ')) }
})
const dirty = fs.readFileSync(dirtyFile, 'utf8').split('\n').filter(Boolean)
let failures = ''
try { failures = fs.readFileSync(rowsFile + '.failures', 'utf8') } catch {}
const sum = (t, f) => rows.filter((r) => r.test === t).reduce((a, r) => a + (r[f] || 0), 0)
const kills = { aggregator: sum('aggregator', 'kills'), import: sum('import', 'kills'), serve: sum('serve', 'kills') }
const min = (s) => `${Math.floor(s / 60)} min ${s % 60} s`
const detail = (r) => {
  if (r.test === 'aggregator') return `${r.lagging} while the index lagged, ${r.midBackfill} ≥ 1000 versions behind; bee at version ${r.version}, ${r.entries} entries, ${r.writes} writes`
  if (r.test === 'import') return `${r.completedImports} imports finished before their kill; ${r.lines} lines; bee at ${r.length}`
  if (r.test === 'serve') return `${r.startupKills} during a start, ${r.inFlight} with writes in flight; ${r.acked} writes acknowledged, ${r.unsure} unsure; bee at ${r.length}`
  return ''
}
const md = [
  `# Crash soak ${stamp}`,
  '',
  `- Outcome: **${Number(failed) === 0 ? 'PASS' : `FAIL (${failed} of ${iterations} iterations)`}**`,
  `- Duration: ${min(Number(total))}, ${iterations} iteration(s) of tests/tests/soak.rs (debug build, 2 cores shared with other work)`,
  `- Kills: ${kills.aggregator + kills.import + kills.serve} in all — aggregator ${kills.aggregator}, import ${kills.import}, serve ${kills.serve} (besides those of the regression tests)`,
  `- Scale: APIARY_SOAK_KILLS=${aggKills} APIARY_SOAK_ENTRIES=${entries} APIARY_SOAK_IMPORT_KILLS=${importKills} APIARY_SOAK_IMPORT_LINES=${importLines} APIARY_SOAK_SERVE_KILLS=${serveKills}`,
  `- Built from ${head}${dirty.length ? `, with other work in progress in the shared tree: ${dirty.map((d) => '`' + d.trim() + '`').join(', ')}` : ''}`,
  `- Replay an iteration: APIARY_SOAK_SEED=<seed> with the scale above, \`cargo test -p apiary-tests --test soak -- --nocapture --test-threads=1\``,
  '',
  '| iteration | seed | soak | kills | seconds | outcome | detail |',
  '|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.it} | ${r.seed} | ${r.test} | ${r.kills} | ${r.seconds.toFixed(0)} | ${r.outcome} | ${detail(r)} |`),
  '',
  failures ? ['## Failures', '', '```', failures.trim(), '```', `Full output: ${log}`, ''].join('\n') : '',
].join('\n')
fs.writeFileSync(out, md)
console.log(md)
JS
echo "summary: $results"
[ "$failed" = 0 ]
