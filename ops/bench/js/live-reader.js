// JS reader of the live latency benchmark (the reader of the reference live.js, as a process
// driven over stdout instead of IPC).
//
//   node js/live-reader.js --port P --key HEX [--count 1000] [--idle-timeout 15]
//
// Connects to a writer on 127.0.0.1 (fresh Corestore, store.replicate(true) on net.connect),
// waits for its length, opens `bee.createHistoryStream({live: true, gte: bee.version})` and
// prints {"ready": true, "start": version}. Each entry's value carries `pubNs`, the writer's
// process.hrtime.bigint() (CLOCK_MONOTONIC, ns) just before its put; latency = our
// process.hrtime.bigint() when the stream yields the entry - pubNs. Stops after `count`
// entries, or `idle-timeout` seconds without a new one, and prints one JSON line:
//   {received, p50ms, p90ms, p99ms, maxMs, meanMs, ...}
'use strict'

const net = require('net')
const os = require('os')
const fs = require('fs')
const path = require('path')
const { dep, args, round, maxRssMB, quietStdout } = require('./common')

const Corestore = dep('corestore')
const Hyperbee = dep('hyperbee')

const out = quietStdout()
const opts = args({ port: 0, key: '', count: 1000, 'idle-timeout': 15 })

const pct = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : null)

async function main () {
  if (!opts.port || !opts.key) throw new Error('--port and --key are required')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'apiary-bench-jslive-'))
  const store = new Corestore(dir)
  const core = store.get({ key: Buffer.from(opts.key, 'hex') })
  await core.ready()

  const found = core.findingPeers()
  const socket = net.connect(opts.port, '127.0.0.1')
  socket.setNoDelay(true)
  const stream = store.replicate(true)
  socket.pipe(stream).pipe(socket)
  socket.on('error', () => {})
  stream.on('error', () => {})
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  found()
  await core.update({ wait: true })
  const bee = new Hyperbee(core, { keyEncoding: 'utf-8', valueEncoding: 'json' })
  await bee.ready()
  const start = bee.version

  const lat = []
  let withoutStamp = 0
  let finish
  const finished = new Promise((resolve) => { finish = resolve })
  let idle = null
  const arm = () => {
    clearTimeout(idle)
    idle = setTimeout(finish, opts['idle-timeout'] * 1000)
  }
  const history = bee.createHistoryStream({ live: true, gte: start })
  history.on('data', (e) => {
    const now = process.hrtime.bigint()
    if (!e.value || e.value.pubNs === undefined) {
      withoutStamp++
      return
    }
    lat.push(Number(now - BigInt(e.value.pubNs)) / 1e6)
    arm()
    if (lat.length >= opts.count) finish()
  })
  history.on('error', (e) => {
    console.error('history stream error:', e)
    finish()
  })
  const cpu0 = process.cpuUsage()
  out(JSON.stringify({ ready: true, start }))
  arm()
  await finished
  clearTimeout(idle)
  const cpu1 = process.cpuUsage(cpu0)
  history.destroy()

  const sorted = [...lat].sort((a, b) => a - b)
  const result = {
    tool: 'js',
    received: lat.length,
    p50ms: round(pct(sorted, 50)),
    p90ms: round(pct(sorted, 90)),
    p99ms: round(pct(sorted, 99)),
    maxMs: round(sorted[sorted.length - 1]),
    meanMs: round(lat.reduce((a, b) => a + b, 0) / (lat.length || 1)),
    start,
    length: core.length,
    withoutStamp,
    readerCpuSeconds: round((cpu1.user + cpu1.system) / 1e6),
    readerMaxRssMB: maxRssMB()
  }
  socket.destroy()
  await bee.close().catch(() => {})
  await store.close().catch(() => {})
  fs.rmSync(dir, { recursive: true, force: true })
  out(JSON.stringify(result))
  process.exit(0)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
