// JS reader over the DHT (run-dht.sh): given only the key, finds the writer with hyperswarm on
// a private DHT and downloads the whole core.
//
//   node js/dht-reader.js --key HEX --bootstrap HOST:PORT
//
// Corestore in a fresh temp dir, core = store.get({key}), Hyperswarm({bootstrap}) joined on the
// core's discovery key as a client only, store.replicate(conn) on every connection, then
// core.update({wait: true}) and core.download({start: 0, end: length}).done(), as js/reader.js
// does over TCP. Prints one JSON line:
//   {seconds, blocks, blocksPerSec, totalSeconds, totalBlocksPerSec, lookupMs, updateMs, ...}
// `seconds` is the download only (after the first update, as js/reader.js); `totalSeconds`
// runs from the join (lookup, hole punch / connect, Noise, first update and the download),
// the counterpart of the aggregator's POST-to-indexed figure. Blocks are counted with
// core.on('download'); CPU is the whole process's (cpuUser, cpuSystem) and the download's
// (phaseCpuSeconds).
'use strict'

const os = require('os')
const fs = require('fs')
const path = require('path')
const { dep, args, round, maxRssMB, cpu, quietStdout } = require('./common')

const Corestore = dep('corestore')
const Hyperswarm = dep('hyperswarm')

const out = quietStdout()
const opts = args({ key: '', bootstrap: '' })

async function main () {
  if (!opts.key || !opts.bootstrap) throw new Error('--key and --bootstrap are required')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'apiary-bench-jsdhtreader-'))
  const store = new Corestore(dir)
  const core = store.get({ key: Buffer.from(opts.key, 'hex') })
  await core.ready()
  let blocks = 0
  let bytes = 0
  core.on('download', (index, byteLength) => {
    blocks++
    bytes += byteLength
  })

  const swarm = new Hyperswarm({ bootstrap: opts.bootstrap.split(',') })
  let connections = 0
  let firstConnectionMs = null
  const tJoin = performance.now()
  const cpuJoin = process.cpuUsage()
  swarm.on('connection', (conn) => {
    connections++
    if (firstConnectionMs === null) firstConnectionMs = performance.now() - tJoin
    const stream = store.replicate(conn)
    stream.on('error', () => {})
  })
  const done = core.findingPeers()
  swarm.join(core.discoveryKey, { server: false, client: true })
  swarm.flush().then(done, done)
  await core.update({ wait: true })
  const length = core.length
  const updateMs = performance.now() - tJoin

  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await core.download({ start: 0, end: length }).done()
  const seconds = (performance.now() - t0) / 1000
  const totalSeconds = (performance.now() - tJoin) / 1000
  const phaseCpu = process.cpuUsage(cpu0)
  const totalCpu = process.cpuUsage(cpuJoin)

  const c = cpu()
  const result = {
    tool: 'js',
    via: 'dht',
    seconds: round(seconds),
    blocks,
    bytes,
    blocksPerSec: Math.round(blocks / seconds),
    MBps: round(bytes / 1e6 / seconds),
    totalSeconds: round(totalSeconds),
    totalBlocksPerSec: Math.round(blocks / totalSeconds),
    lookupMs: round(firstConnectionMs, 1),
    updateMs: round(updateMs, 1),
    connections,
    length,
    contiguousLength: core.contiguousLength,
    phaseCpuSeconds: round((phaseCpu.user + phaseCpu.system) / 1e6),
    totalCpuSeconds: round((totalCpu.user + totalCpu.system) / 1e6),
    cpuUser: c.user,
    cpuSystem: c.system,
    maxRssMB: maxRssMB()
  }
  await swarm.destroy()
  await store.close()
  fs.rmSync(dir, { recursive: true, force: true })
  out(JSON.stringify(result))
  process.exit(0)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
