// Summary of run-writer.sh: writes the results file and prints tables of medians.
//
//   node js/summarize-writer.js WORK_DIR META_JSON OUT.json
//
// WORK_DIR holds builds.jsonl, writers.jsonl, phases.jsonl and live.jsonl (see run-writer.sh).
'use strict'

const fs = require('fs')
const path = require('path')

const [work, metaLine, outFile] = process.argv.slice(2)
const meta = JSON.parse(metaLine)
const readLines = (name) => {
  const file = path.join(work, name)
  if (!fs.existsSync(file)) return []
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
}
const builds = readLines('builds.jsonl')
const writers = readLines('writers.jsonl')
const phases = readLines('phases.jsonl')
const live = readLines('live.jsonl')

const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b)
  if (!v.length) return null
  const m = v.length >> 1
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2
}
const r = (x, d = 2) => (x == null ? null : Math.round(x * 10 ** d) / 10 ** d)
const ratio = (a, b) => (a != null && b ? r(a / b, 2) : null)
function fmt (x, d) {
  if (x == null) return '-'
  return d === 0 ? Math.round(x).toLocaleString('en-US') : x.toFixed(d)
}
function table (cols, entries) {
  const rows = [cols.map((c) => c[0])]
  for (const [name, m] of entries) rows.push(cols.map((c) => c[1](name, m)))
  const widths = cols.map((_, i) => Math.max(...rows.map((row) => row[i].length)))
  const line = (row) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ')
  console.log(line(rows[0]))
  console.log(widths.map((w) => '-'.repeat(w)).join('  '))
  for (const row of rows.slice(1)) console.log(line(row))
}
const goal = (value, target, better) => (value == null ? null : better === 'higher' ? value >= target : value <= target)

// ---- build: standalone builds + the serving writers' builds (live writers are smaller) ----
const allBuilds = [
  ...builds.filter((b) => !b.error),
  ...writers.filter((w) => w.writer === 'js' || w.writer === 'rust').map((w) => ({
    round: 'serving', tool: w.writer, buildSeconds: w.buildSeconds, putsPerSec: w.putsPerSec,
    length: w.length, byteLength: w.byteLength, buildCpuSeconds: w.buildCpuSeconds, maxRssMB: w.maxRssMB
  }))
]
const buildMedians = {}
for (const tool of ['js', 'rust']) {
  const runs = allBuilds.filter((b) => b.tool === tool)
  if (!runs.length) continue
  const m = { runs: runs.length }
  for (const f of ['buildSeconds', 'putsPerSec', 'length', 'byteLength', 'buildCpuSeconds', 'maxRssMB']) {
    m[f] = r(median(runs.map((b) => b[f])), 3)
  }
  m.putsPerSecAll = runs.map((b) => b.putsPerSec)
  buildMedians[tool] = m
}

// ---- serve ----
const SERVE_FIELDS = ['seconds', 'blocksPerSec', 'MBps', 'blocks', 'bytes', 'blocksFraction', 'phaseCpuSeconds',
  'cpuUser', 'cpuSystem', 'maxRssMB', 'writerCpuSeconds', 'writerCpuUser', 'writerCpuSystem', 'writerMaxRssMB',
  'connectMs', 'processWallSeconds', 'wireBytesIn']
const serveMedians = {}
for (const name of [...new Set(phases.map((p) => p.phase))]) {
  const runs = phases.filter((p) => p.phase === name)
  const ok = runs.filter((p) => !p.error)
  const m = { runs: runs.length, failed: runs.length - ok.length }
  for (const f of SERVE_FIELDS) m[f] = r(median(ok.map((p) => p[f])), 5)
  m.readerCpuPct = m.seconds ? r((100 * m.phaseCpuSeconds) / m.seconds, 0) : null
  m.writerCpuPct = m.seconds ? r((100 * m.writerCpuSeconds) / m.seconds, 0) : null
  m.blocksPerSecAll = ok.map((p) => p.blocksPerSec)
  serveMedians[name] = m
}
const bps = (name) => serveMedians[name]?.blocksPerSec
const mbps = (name) => serveMedians[name]?.MBps

// ---- live ----
const LIVE_FIELDS = ['received', 'published', 'p50ms', 'p90ms', 'p99ms', 'maxMs', 'meanMs', 'writerPutP50ms',
  'writerPutP99ms', 'writerPutMaxMs', 'writerLateTicks', 'readerCpuSeconds', 'readerMaxRssMB']
const liveMedians = {}
for (const name of [...new Set(live.map((p) => p.pair))]) {
  const runs = live.filter((p) => p.pair === name)
  const ok = runs.filter((p) => !p.error)
  const m = { runs: runs.length, failed: runs.length - ok.length }
  for (const f of LIVE_FIELDS) m[f] = r(median(ok.map((p) => p[f])), 3)
  liveMedians[name] = m
}
const lv = (pair, f) => liveMedians[pair]?.[f]

const build = {
  putsPerSecRustOverJs: ratio(buildMedians.rust?.putsPerSec, buildMedians.js?.putsPerSec),
  byteLengthRustOverJs: ratio(buildMedians.rust?.byteLength, buildMedians.js?.byteLength)
}
const serve = {
  jsFromRustOverJsFromJsBlocksPerSec: ratio(bps('js full <- rust'), bps('js full <- js')),
  jsFromRustOverJsFromJsMBps: ratio(mbps('js full <- rust'), mbps('js full <- js')),
  rustFromRustOverJsFromJsBlocksPerSec: ratio(bps('rust full <- rust'), bps('js full <- js')),
  rustFromRustOverJsFromJsMBps: ratio(mbps('rust full <- rust'), mbps('js full <- js')),
  rustFromJsOverJsFromJsBlocksPerSec: ratio(bps('rust full <- js'), bps('js full <- js')),
  jsTailFromRustBlocksFraction: serveMedians['js tail <- rust']?.blocksFraction ?? null,
  jsTailFromJsBlocksFraction: serveMedians['js tail <- js']?.blocksFraction ?? null,
  jsTailSecondsJsServerOverRustServer: ratio(serveMedians['js tail <- js']?.seconds, serveMedians['js tail <- rust']?.seconds)
}
const goals = {
  buildPutsPerSec3x: goal(build.putsPerSecRustOverJs, 3, 'higher'),
  jsReaderFromOurServer1_5x: goal(serve.jsFromRustOverJsFromJsBlocksPerSec, 1.5, 'higher'),
  rustReaderFromOurServer10xJsJs: goal(serve.rustFromRustOverJsFromJsBlocksPerSec, 10, 'higher'),
  liveRustRustP50: goal(lv('rust -> rust', 'p50ms'), lv('js -> js', 'p50ms'), 'lower'),
  liveRustRustP99: goal(lv('rust -> rust', 'p99ms'), lv('js -> js', 'p99ms'), 'lower'),
  liveRustJsP50: goal(lv('rust -> js', 'p50ms'), lv('js -> js', 'p50ms'), 'lower'),
  liveRustJsP99: goal(lv('rust -> js', 'p99ms'), lv('js -> js', 'p99ms'), 'lower')
}

const result = {
  bench: 'writer-side-by-side',
  meta,
  builds: allBuilds,
  writers,
  phases,
  live,
  medians: { build: buildMedians, serve: serveMedians, live: liveMedians },
  comparison: { build, serve },
  goals
}
fs.writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n')

// ---- tables ----
console.log('')
console.log(`writer/server side by side: N=${meta.n}, batches of ${meta.batch}; load ${meta.loadavgStart} -> ${meta.loadavgEnd}`)
if (meta.dataCheck) console.log(`data check: ${meta.dataCheck.ok ? '' : 'FAILED: '}${meta.dataCheck.output.slice(-1)[0] || ''}`)

if (Object.keys(buildMedians).length) {
  console.log('')
  console.log('build (medians over all builds of N posts)')
  table([
    ['writer', (n) => n],
    ['runs', (n, m) => String(m.runs)],
    ['seconds', (n, m) => fmt(m.buildSeconds, 3)],
    ['puts/s', (n, m) => fmt(m.putsPerSec, 0)],
    ['all puts/s', (n, m) => m.putsPerSecAll.map((x) => fmt(x, 0)).join(' ')],
    ['CPU s', (n, m) => fmt(m.buildCpuSeconds, 2)],
    ['blocks', (n, m) => fmt(m.length, 0)],
    ['MB', (n, m) => fmt(m.byteLength / 1e6, 1)],
    ['RSS MB', (n, m) => fmt(m.maxRssMB, 1)]
  ], Object.entries(buildMedians))
  console.log(`Rust/JS puts/s: ${build.putsPerSecRustOverJs ?? '-'}x (goal >= 3x); Rust/JS bytes: ${build.byteLengthRustOverJs ?? '-'}x`)
}

if (Object.keys(serveMedians).length) {
  console.log('')
  console.log(`serve (medians over ${meta.rounds} round(s); "reader mode <- server")`)
  table([
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
    ['srv CPU s', (n, m) => fmt(m.writerCpuSeconds, 2)],
    ['srv CPU%', (n, m) => fmt(m.writerCpuPct, 0)],
    ['srv RSS MB', (n, m) => fmt(m.writerMaxRssMB, 1)],
    ['connect ms', (n, m) => fmt(m.connectMs, 1)]
  ], Object.entries(serveMedians))
  console.log(`JS reader, our server / JS server: ${serve.jsFromRustOverJsFromJsBlocksPerSec ?? '-'}x blocks/s (goal >= 1.5x), ${serve.jsFromRustOverJsFromJsMBps ?? '-'}x MB/s`)
  console.log(`Rust reader from our server / JS<-JS: ${serve.rustFromRustOverJsFromJsBlocksPerSec ?? '-'}x blocks/s (goal >= 10x), ${serve.rustFromRustOverJsFromJsMBps ?? '-'}x MB/s; Rust reader from the JS server / JS<-JS: ${serve.rustFromJsOverJsFromJsBlocksPerSec ?? '-'}x`)
  console.log(`JS tail from our server: ${serve.jsTailFromRustBlocksFraction == null ? '-' : (100 * serve.jsTailFromRustBlocksFraction).toFixed(2) + '%'} of the blocks fetched (from the JS server: ${serve.jsTailFromJsBlocksFraction == null ? '-' : (100 * serve.jsTailFromJsBlocksFraction).toFixed(2) + '%'})`)
  console.log('rdr CPU = reader CPU during the phase; srv CPU = serving writer CPU from just before the reader started to just after it exited; % = of the phase seconds (100% = one core)')
}

if (Object.keys(liveMedians).length) {
  console.log('')
  console.log(`live publish -> read (a put every ${meta.liveIntervalMs} ms, ${meta.liveCount} puts, bee of ${meta.liveN}; medians over ${meta.liveRounds} round(s); "writer -> reader")`)
  table([
    ['pair', (n) => n],
    ['runs', (n, m) => (m.failed ? `${m.runs - m.failed}/${m.runs}` : String(m.runs))],
    ['recv/pub', (n, m) => `${fmt(m.received, 0)}/${fmt(m.published, 0)}`],
    ['p50 ms', (n, m) => fmt(m.p50ms, 2)],
    ['p90 ms', (n, m) => fmt(m.p90ms, 2)],
    ['p99 ms', (n, m) => fmt(m.p99ms, 2)],
    ['max ms', (n, m) => fmt(m.maxMs, 2)],
    ['mean ms', (n, m) => fmt(m.meanMs, 2)],
    ['put p50 ms', (n, m) => fmt(m.writerPutP50ms, 2)],
    ['put p99 ms', (n, m) => fmt(m.writerPutP99ms, 2)],
    ['late', (n, m) => fmt(m.writerLateTicks, 0)],
    ['rdr CPU s', (n, m) => fmt(m.readerCpuSeconds, 2)],
    ['rdr RSS MB', (n, m) => fmt(m.readerMaxRssMB, 1)]
  ], Object.entries(liveMedians))
  console.log('latency = reader CLOCK_MONOTONIC when it has decoded the entry - writer CLOCK_MONOTONIC just before its put; put = the writer\'s own put (included)')
}

console.log('')
console.log('goals: ' + Object.entries(goals).map(([k, v]) => `${k}=${v == null ? '-' : v ? 'met' : 'NOT met'}`).join(', '))
