// JS reader of the replication benchmark: one fresh process, one fresh Corestore, one phase.
//
//   node js/reader.js --port P --key HEX --mode full|tail [--tail 1000]
//
// Connects to the writer over TCP (store.replicate(true) on net.connect, Noise + secret-stream),
// waits for the remote length (core.update({wait: true})), then runs one phase:
//   full: core.download({start: 0, end: length}).done()
//   tail: new Hyperbee(core) + createHistoryStream({gte: length - tail}) read to the end
// `seconds` covers the phase only (not process start, connect, handshake or the first update;
// those are `connectMs`). Blocks and bytes are counted with core.on('download').
// Prints one JSON line:
//   {mode, seconds, blocks, bytes, blocksPerSec, MBps, cpuUser, cpuSystem, maxRssMB, ...}
// cpuUser/cpuSystem are the whole process's CPU seconds (like /proc/self/stat for the Rust
// reader); phaseCpuSeconds is the CPU (user + system) spent during `seconds` only.
'use strict'

const net = require('net')
const os = require('os')
const fs = require('fs')
const path = require('path')
const { dep, args, round, maxRssMB, cpu, quietStdout } = require('./common')

const Corestore = dep('corestore')
const Hyperbee = dep('hyperbee')

const out = quietStdout()
const opts = args({ port: 0, key: '', mode: 'full', tail: 1000 })

async function main () {
  if (!opts.port || !opts.key) throw new Error('--port and --key are required')
  if (opts.mode !== 'full' && opts.mode !== 'tail') throw new Error(`unknown --mode ${opts.mode}`)

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'apiary-bench-jsreader-'))
  const store = new Corestore(dir)
  const core = store.get({ key: Buffer.from(opts.key, 'hex') })
  await core.ready()
  let blocks = 0
  let bytes = 0
  core.on('download', (index, byteLength) => {
    blocks++
    bytes += byteLength
  })

  const tConnect = performance.now()
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
  const length = core.length
  const connectMs = performance.now() - tConnect

  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  let entries = null
  if (opts.mode === 'full') {
    await core.download({ start: 0, end: length }).done()
  } else {
    const bee = new Hyperbee(core, { keyEncoding: 'utf-8', valueEncoding: 'json' })
    await bee.ready()
    entries = 0
    for await (const e of bee.createHistoryStream({ gte: length - opts.tail })) {
      if (e.value) entries++
    }
    await bee.close()
  }
  const seconds = (performance.now() - t0) / 1000
  const phaseCpu = process.cpuUsage(cpu0)

  const c = cpu()
  const result = {
    tool: 'js',
    mode: opts.mode,
    seconds: round(seconds),
    blocks,
    bytes,
    blocksPerSec: Math.round(blocks / seconds),
    MBps: round(bytes / 1e6 / seconds),
    cpuUser: c.user,
    cpuSystem: c.system,
    maxRssMB: maxRssMB(),
    length,
    blocksFraction: round(blocks / length, 5),
    phaseCpuSeconds: round((phaseCpu.user + phaseCpu.system) / 1e6),
    connectMs: round(connectMs, 1),
    wireBytesIn: socket.bytesRead,
    contiguousLength: core.contiguousLength
  }
  if (entries !== null) result.entries = entries
  if (opts.mode === 'tail') result.tail = opts.tail

  socket.destroy()
  await store.close()
  fs.rmSync(dir, { recursive: true, force: true })
  out(JSON.stringify(result))
  process.exit(0)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
