// Writer of the replication benchmark: builds the reference bee and serves it over TCP.
//
//   node js/writer.js [--n 100000] [--batch 1000] [--seed 1]
//
// Builds Corestore + Hyperbee (name 'posts', keyEncoding utf-8, valueEncoding json) with n posts
// of the reference dataset, put in batches of `batch` (one flush each), exactly as the
// reference writer does. Then serves `store.replicate(false)` on 127.0.0.1:<random port> and
// prints one JSON line:
//   {"key": hex, "port": P, "length": blocks, "byteLength": bytes, "buildSeconds": s, ...}
// After that it answers lines on stdin, one JSON line each on stdout:
//   "cpu"  -> {"user": s, "system": s, "maxRssMB": MB}   (process.cpuUsage() since start)
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
const opts = args({ n: 100000, batch: 1000, seed: 1 })

async function main () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'apiary-bench-writer-'))
  const store = new Corestore(dir)
  const core = store.get({ name: 'posts' })
  const bee = new Hyperbee(core, { keyEncoding: 'utf-8', valueEncoding: 'json' })
  await bee.ready()

  const rand = prng(opts.seed)
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

  let closing = null
  const close = () => {
    if (closing) return closing
    closing = (async () => {
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
    cpu: cpu(),
    maxRssMB: maxRssMB()
  }))

  const rl = readline.createInterface({ input: process.stdin, terminal: false })
  rl.on('line', async (line) => {
    const cmd = line.trim()
    if (cmd === 'cpu') {
      out(JSON.stringify({ ...cpu(), maxRssMB: maxRssMB() }))
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

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
