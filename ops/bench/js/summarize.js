// Summary of run-replicate.sh: writes the results file and prints a table of medians.
//
//   node js/summarize.js PHASES.jsonl WRITER_JSON META_JSON OUT.json
'use strict'

const fs = require('fs')

const [phasesFile, writerLine, metaLine, outFile] = process.argv.slice(2)
const phases = fs.readFileSync(phasesFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
const writer = JSON.parse(writerLine)
const meta = JSON.parse(metaLine)

const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b)
  if (!v.length) return null
  const m = v.length >> 1
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2
}
const r = (x, d = 2) => (x == null ? null : Math.round(x * 10 ** d) / 10 ** d)

const FIELDS = ['seconds', 'blocksPerSec', 'MBps', 'blocks', 'bytes', 'blocksFraction', 'phaseCpuSeconds',
  'cpuUser', 'cpuSystem', 'maxRssMB', 'writerCpuSeconds', 'writerCpuUser', 'writerCpuSystem', 'connectMs', 'processWallSeconds']
const ORDER = ['js full', 'rust full', 'js tail', 'rust tail']

const medians = {}
for (const name of ORDER) {
  const runs = phases.filter((p) => p.phase === name)
  if (!runs.length) continue
  const ok = runs.filter((p) => !p.error)
  const m = { runs: runs.length, failed: runs.length - ok.length }
  for (const f of FIELDS) m[f] = r(median(ok.map((p) => p[f])), 5)
  m.readerCpuPct = m.seconds ? r((100 * m.phaseCpuSeconds) / m.seconds, 0) : null
  m.writerCpuPct = m.seconds ? r((100 * m.writerCpuSeconds) / m.seconds, 0) : null
  medians[name] = m
}

const ratio = (a, b) => (a != null && b ? r(a / b, 2) : null)
const comparison = {
  fullBlocksPerSecRustOverJs: ratio(medians['rust full']?.blocksPerSec, medians['js full']?.blocksPerSec),
  tailSecondsJsOverRust: ratio(medians['js tail']?.seconds, medians['rust tail']?.seconds)
}

const result = { bench: 'replicate-side-by-side', meta, writer, phases, medians, comparison }
fs.writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n')

// ---- table ----
const cols = [
  ['phase', (n) => n],
  ['runs', (n, m) => (m.failed ? `${m.runs - m.failed}/${m.runs}` : String(m.runs))],
  ['seconds', (n, m) => fmt(m.seconds, 3)],
  ['blocks/s', (n, m) => fmt(m.blocksPerSec, 0)],
  ['MB/s', (n, m) => fmt(m.MBps, 2)],
  ['blocks', (n, m) => fmt(m.blocks, 0)],
  ['fraction', (n, m) => (m.blocksFraction == null ? '-' : (100 * m.blocksFraction).toFixed(2) + '%')],
  ['rdr CPU s', (n, m) => fmt(m.phaseCpuSeconds, 2)],
  ['rdr CPU%', (n, m) => fmt(m.readerCpuPct, 0)],
  ['rdr RSS MB', (n, m) => fmt(m.maxRssMB, 1)],
  ['wtr CPU s', (n, m) => fmt(m.writerCpuSeconds, 2)],
  ['wtr CPU%', (n, m) => fmt(m.writerCpuPct, 0)],
  ['connect ms', (n, m) => fmt(m.connectMs, 1)]
]
function fmt (x, d) {
  if (x == null) return '-'
  return d === 0 ? Math.round(x).toLocaleString('en-US') : x.toFixed(d)
}
const rows = [cols.map((c) => c[0])]
for (const [name, m] of Object.entries(medians)) rows.push(cols.map((c) => c[1](name, m)))
const widths = cols.map((_, i) => Math.max(...rows.map((row) => row[i].length)))
const line = (row) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ')

console.log('')
console.log(`replicate side by side: N=${meta.n} (${writer.length} blocks, ${(writer.byteLength / 1e6).toFixed(1)} MB), ` +
  `${meta.rounds} round(s), medians; writer build ${writer.buildSeconds}s`)
console.log(line(rows[0]))
console.log(widths.map((w) => '-'.repeat(w)).join('  '))
for (const row of rows.slice(1)) console.log(line(row))
console.log(`full download, Rust/JS blocks/s: ${comparison.fullBlocksPerSecRustOverJs ?? '-'}x;  tail, JS/Rust seconds: ${comparison.tailSecondsJsOverRust ?? '-'}x`)
console.log('rdr CPU = reader CPU during the phase; wtr CPU = writer CPU from just before the reader started to just after it exited; % = of the phase seconds (100% = one core)')
