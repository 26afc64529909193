// Writer of the replication benchmark: builds the reference bee and serves it over TCP.
//
//   node js/writer.js [--n 100000] [--batch 1000] [--seed 1] [--bootstrap HOST:PORT]
//
// Builds Corestore + Hyperbee (name 'posts', keyEncoding utf-8, valueEncoding json) with n posts
// of the reference dataset, put in batches of `batch` (one flush each), exactly as the
// reference writer does. Then serves `store.replicate(false)` on 127.0.0.1:<random port> and
// prints one JSON line:
//   {"key": hex, "port": P, "length": blocks, "byteLength": bytes, "buildSeconds": s, ...}
// With --bootstrap (a private DHT, run-dht.sh) it also announces the core on hyperswarm
// (server only, the core's discovery key as topic, store.replicate on every connection) and
// prints the line once the announce is flushed to the DHT, with `announceMs`.
// After that it answers lines on stdin, one JSON line each on stdout:
//   "cpu"  -> {"user": s, "system": s, "maxRssMB": MB}   (process.cpuUsage() since start)
//   "live INTERVAL_MS COUNT" -> puts COUNT more posts, one every INTERVAL_MS on a fixed schedule
//            (post(n + i) from PRNG seed 99, as the reference live.js), each value carrying
//            pubNs = process.hrtime.bigint() (CLOCK_MONOTONIC, ns) taken just before its
//            bee.put; then prints {"published", "publishSeconds", "writerLateTicks", ...}
//   "quit" -> closes everything and exits (so does stdin EOF).
'use strict'

const net = require('net')
const os = require('os')
const fs = require('fs')
const path = require('path')
const readline = require('readline')
const { dep, args, round, maxRssMB, cpu, quietStdout } = require('./common')
const { prng, post } = require('./data')

const Corestore = dep('corestore')
const Hyperbee = dep('hyperbee')

const out = quietStdout()
const opts = args({ n: 100000, batch: 1000, seed: 1, bootstrap: '' })

async function main () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'apiary-bench-writer-'))
  const store = new Corestore(dir)
  const core = store.get({ name: 'posts' })
  const bee = new Hyperbee(core, { keyEncoding: 'utf-8', valueEncoding: 'json' })
  await bee.ready()

  const rand = prng(opts.seed)
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let i = 0; i < opts.n; i += opts.batch) {
    const b = bee.batch()
    const end = Math.min(opts.n, i + opts.batch)
    for (let j = i; j < end; j++) {
      const p = post(j, rand)
      await b.put(p.key, p.value)
    }
    await b.flush()
  }
  const buildSeconds = (performance.now() - t0) / 1000
  const buildCpu = process.cpuUsage(cpu0)

  const sockets = new Set()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.setNoDelay(true)
    const stream = store.replicate(false)
    socket.pipe(stream).pipe(socket)
    const drop = () => {
      sockets.delete(socket)
      stream.destroy()
      socket.destroy()
    }
    socket.on('error', drop).on('close', drop)
    stream.on('error', drop)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))

  let swarm = null
  let announceMs = null
  if (opts.bootstrap) {
    const Hyperswarm = dep('hyperswarm')
    const tA = performance.now()
    swarm = new Hyperswarm({ bootstrap: opts.bootstrap.split(',') })
    swarm.on('connection', (conn) => {
      const stream = store.replicate(conn)
      stream.on('error', () => {})
    })
    await swarm.join(core.discoveryKey, { server: true, client: false }).flushed()
    announceMs = round(performance.now() - tA, 1)
  }

  let closing = null
  const close = () => {
    if (closing) return closing
    closing = (async () => {
      if (swarm) await swarm.destroy()
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
      await bee.close()
      await store.close()
      fs.rmSync(dir, { recursive: true, force: true })
    })()
    return closing
  }

  out(JSON.stringify({
    key: core.key.toString('hex'),
    port: server.address().port,
    length: core.length,
    byteLength: core.byteLength,
    buildSeconds: round(buildSeconds),
    n: opts.n,
    putsPerSec: Math.round(opts.n / buildSeconds),
    buildCpuSeconds: round((buildCpu.user + buildCpu.system) / 1e6),
    cpu: cpu(),
    maxRssMB: maxRssMB(),
    announceMs
  }))

  let livePosts = 0
  const rl = readline.createInterface({ input: process.stdin, terminal: false })
  rl.on('line', async (line) => {
    const cmd = line.trim()
    if (cmd === 'cpu') {
      out(JSON.stringify({ ...cpu(), maxRssMB: maxRssMB() }))
    } else if (cmd.startsWith('live ')) {
      const [, interval, count] = cmd.split(/\s+/).map(Number)
      out(JSON.stringify(await live(bee, opts.n + livePosts, interval, count)))
      livePosts += count
    } else if (cmd === 'quit') {
      rl.close()
    } else if (cmd) {
      out(JSON.stringify({ error: `unknown command ${cmd}` }))
    }
  })
  rl.on('close', async () => {
    await close()
    process.exit(0)
  })
}

// One put per `interval` ms on a fixed schedule (no drift), as the reference live.js.
async function live (bee, first, interval, count) {
  const rand = prng(99)
  const t0 = performance.now()
  let late = 0
  const putMs = []
  for (let i = 0; i < count; i++) {
    const wait = t0 + i * interval - performance.now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    else if (wait < -interval) late++
    const p = post(first + i, rand)
    const tp = process.hrtime.bigint()
    p.value.pubNs = tp.toString()
    await bee.put(p.key, p.value)
    putMs.push(Number(process.hrtime.bigint() - tp) / 1e6)
  }
  const publishSeconds = (performance.now() - t0) / 1000
  putMs.sort((a, b) => a - b)
  const pct = (p) => putMs[Math.min(putMs.length - 1, Math.floor((p / 100) * putMs.length))]
  return {
    tool: 'js',
    published: count,
    intervalMs: interval,
    publishSeconds: round(publishSeconds),
    writerLateTicks: late,
    writerPutP50ms: round(pct(50)),
    writerPutP99ms: round(pct(99)),
    writerPutMaxMs: round(putMs[putMs.length - 1]),
    length: bee.core.length,
    cpu: cpu()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
