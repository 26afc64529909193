'use strict'
// Apiary interop peer: a JS Hypercore/Hyperbee node driven over stdin/stdout.
//
// Protocol: one JSON object per line in both directions.
//   request : {"id": <number>, "cmd": "<name>", ...args}
//   reply   : {"id": <same>, "ok": true, ...result}  |  {"id": <same>, "ok": false, "error": "msg"}
//   event   : {"event": "live", "name": N, "entry": {...}}   (unsolicited, no id)
// Requests are executed strictly one after another. Only protocol lines go to
// stdout; all logging goes to stderr. On stdin EOF everything is closed and the
// process exits with code 0.
//
// Wire values: bee keys are utf-8 strings, bee values are JSON values, core keys
// are 64-char hex strings. Run from anywhere: `node tests/js/peer.js`.

const path = require('path')
const net = require('net')
const readline = require('readline')
const { once } = require('events')
const Corestore = require('corestore')
const Hypercore = require('hypercore')
const Hyperbee = require('hyperbee')
const Hyperswarm = require('hyperswarm')

// Keep stdout clean: anything a library might console.log goes to stderr.
console.log = console.info = console.debug = console.error
const log = (...args) => console.error('[peer.js]', ...args)

// Report (never silently die on) stray errors. We log and keep serving, so a
// broken socket in the background cannot take down a test run.
process.on('uncaughtException', (err) => log('uncaughtException:', err && err.stack ? err.stack : err))
process.on('unhandledRejection', (err) => log('unhandledRejection:', err && err.stack ? err.stack : err))

const BEE_OPTS = { keyEncoding: 'utf-8', valueEncoding: 'json' }

const state = {
  dir: null, // corestore directory given by `init`
  store: null, // Corestore
  bees: new Map(), // name -> { bee, core, compat, separate }
  compatCores: [], // standalone Hypercores (own storage) replicated next to the store
  streams: [], // live replication (protocol) streams
  servers: [],
  sockets: [],
  connections: 0, // total sockets accepted by `serve` or opened by `connect`
  lives: [], // live history streams
  swarm: null, // Hyperswarm (the `swarm` command)
  swarmConnections: 0
}

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const hex = (buf) => (buf ? Buffer.from(buf).toString('hex') : null)

// Normalise a Hyperbee entry to plain JSON ({seq,key,value}); null stays null.
function entry(e) {
  if (!e) return null
  return { seq: e.seq, key: e.key, value: e.value === undefined ? null : e.value }
}

function needStore() {
  if (!state.store) throw new Error('no store: send init first')
  return state.store
}

function getBee(name) {
  const b = state.bees.get(name)
  if (!b) throw new Error('unknown bee: ' + name)
  return b
}

function writeResult(b) {
  return { length: b.core.length, version: b.bee.version }
}

// Only copy range/history options that were actually given.
function pickOpts(opts) {
  const out = {}
  if (!opts) return out
  for (const k of ['gt', 'gte', 'lt', 'lte', 'reverse', 'limit']) {
    if (opts[k] !== undefined && opts[k] !== null) out[k] = opts[k]
  }
  return out
}

function removeFrom(list, item) {
  const i = list.indexOf(item)
  if (i !== -1) list.splice(i, 1)
}

// Attach one standalone (compat) core to one replication stream.
function attachCompat(core, stream) {
  try {
    core.replicate(stream)
  } catch (err) {
    log('attaching compat core failed:', err.message)
  }
}

// Wire a TCP socket to a new corestore replication stream (+ all standalone cores).
function replicateSocket(socket, isInitiator) {
  const s = needStore().replicate(isInitiator)
  for (const core of state.compatCores) attachCompat(core, s)
  state.streams.push(s)
  state.sockets.push(socket)
  state.connections++
  const onerr = (what) => (err) => log(what + ' error:', err && err.message)
  socket.on('error', onerr('socket'))
  s.on('error', onerr('replication stream'))
  s.on('close', () => removeFrom(state.streams, s))
  socket.on('close', () => {
    removeFrom(state.sockets, socket)
    s.destroy()
  })
  socket.pipe(s).pipe(socket)
  return s
}

function registerCompat(core) {
  state.compatCores.push(core)
  for (const s of state.streams) attachCompat(core, s)
}

// Run fn on the bee a read command targets: optional checkout, then optional sub.
// Only a checkout owns a session that must be closed afterwards (a sub shares its
// parent's core session; closing the sub would close the parent's core).
async function withView(req, fn) {
  const b = getBee(req.name)
  let view = b.bee
  let checkout = null
  if (req.version !== undefined && req.version !== null) {
    // A checkout past the known length would wait forever for missing blocks.
    if (req.version > Math.max(1, b.core.length)) {
      throw new Error('version ' + req.version + ' > length ' + b.core.length)
    }
    checkout = view = b.bee.checkout(req.version)
  }
  if (req.sub !== undefined && req.sub !== null) view = view.sub(req.sub, BEE_OPTS)
  try {
    return await fn(view)
  } finally {
    if (checkout) await checkout.close().catch((e) => log('checkout close:', e.message))
  }
}

async function collect(stream, map) {
  const out = []
  for await (const e of stream) out.push(map(e))
  return out
}

// Count blocks present locally in [s, e) using range has() (bitfield-backed),
// splitting only where the range is incomplete.
async function countLocal(core, s, e) {
  if (e <= s) return 0
  if (await core.has(s, e)) return e - s
  if (e - s === 1) return 0
  const mid = s + Math.floor((e - s) / 2)
  return (await countLocal(core, s, mid)) + (await countLocal(core, mid, e))
}

const commands = {
  async init(req) {
    if (state.store) throw new Error('already initialised')
    if (!req.dir) throw new Error('init needs dir')
    state.dir = req.dir
    state.store = new Corestore(req.dir)
    await state.store.ready()
    return {}
  },

  async create(req) {
    const store = needStore()
    if (state.bees.has(req.name)) throw new Error('bee exists: ' + req.name)
    let core
    if (req.compat) {
      // Standalone compat core (key == signer public key) in its own storage dir.
      core = new Hypercore(path.join(state.dir, 'compat-' + req.name), { compat: true })
    } else {
      core = store.get({ name: req.name }) // default manifest v1 core
    }
    const bee = new Hyperbee(core, BEE_OPTS)
    await bee.ready()
    if (req.compat) registerCompat(core)
    state.bees.set(req.name, { bee, core, compat: !!req.compat, separate: !!req.compat })
    return { key: hex(core.key), discoveryKey: hex(core.discoveryKey), length: core.length }
  },

  async put(req) {
    const b = getBee(req.name)
    await b.bee.put(req.key, req.value)
    return writeResult(b)
  },

  async del(req) {
    const b = getBee(req.name)
    await b.bee.del(req.key)
    return writeResult(b)
  },

  async batch(req) {
    const b = getBee(req.name)
    const batch = b.bee.batch()
    for (const op of req.ops || []) {
      if (op.type === 'put') await batch.put(op.key, op.value)
      else if (op.type === 'del') await batch.del(op.key)
      else throw new Error('bad batch op type: ' + op.type)
    }
    await batch.flush()
    return writeResult(b)
  },

  async subput(req) {
    const b = getBee(req.name)
    await b.bee.sub(req.prefix, BEE_OPTS).put(req.key, req.value)
    return writeResult(b)
  },

  async subdel(req) {
    const b = getBee(req.name)
    await b.bee.sub(req.prefix, BEE_OPTS).del(req.key)
    return writeResult(b)
  },

  // keys: prefix + 8-digit zero-padded index for index in [start, start+count)
  async fill(req) {
    const b = getBee(req.name)
    const count = req.count || 0
    const start = req.start || 0
    const prefix = req.prefix === undefined ? 'k' : req.prefix
    const per = req.batch || 1000
    const text = 'x'.repeat(req.valueBytes || 0)
    for (let i = start; i < start + count; i += per) {
      const batch = b.bee.batch()
      const end = Math.min(start + count, i + per)
      for (let j = i; j < end; j++) {
        await batch.put(prefix + String(j).padStart(8, '0'), { i: j, text })
      }
      await batch.flush()
    }
    return writeResult(b)
  },

  async truncate(req) {
    const b = getBee(req.name)
    await b.core.truncate(req.length)
    return { length: b.core.length, fork: b.core.fork }
  },

  async serve() {
    needStore()
    const server = net.createServer((socket) => replicateSocket(socket, false))
    server.on('error', (err) => log('server error:', err.message))
    await once(server.listen(0, '127.0.0.1'), 'listening') // rejects on 'error'
    state.servers.push(server)
    return { port: server.address().port }
  },

  async connect(req) {
    needStore()
    const socket = net.connect(req.port, '127.0.0.1')
    await once(socket, 'connect') // rejects on 'error' (e.g. ECONNREFUSED)
    replicateSocket(socket, req.initiator !== false)
    return {}
  },

  // Open a remote bee read-only by key. Corestore opens any core by key alone
  // (it verifies the first upgrade against the key, guessing the compat signer
  // manifest when no manifest is sent), so this works for compat cores too.
  // With "separate": true the core is instead opened as a standalone
  // `new Hypercore(<dir>/remote-<name>, key)` replicated on the existing (and
  // future) connections - kept as a fallback / for comparison.
  async open(req) {
    const store = needStore()
    if (state.bees.has(req.name)) throw new Error('bee exists: ' + req.name)
    const key = Buffer.from(req.key, 'hex')
    if (key.length !== 32) throw new Error('key must be 64 hex chars')
    let core
    if (req.separate) {
      core = new Hypercore(path.join(state.dir, 'remote-' + req.name), key)
      await core.ready()
      registerCompat(core)
    } else {
      core = store.get({ key })
    }
    const bee = new Hyperbee(core, BEE_OPTS)
    await bee.ready()
    state.bees.set(req.name, { bee, core, compat: false, separate: !!req.separate })
    if (state.streams.length > 0) await core.update({ wait: true })
    return writeResult({ bee, core })
  },

  // Extra: pull the latest remote length (no-op result for local writers).
  async update(req) {
    const b = getBee(req.name)
    if (state.streams.length > 0 || state.swarm) await b.core.update({ wait: true })
    return writeResult(b)
  },

  get: (req) => withView(req, async (v) => ({ entry: entry(await v.get(req.key)) })),

  range: (req) =>
    withView(req, async (v) => ({ entries: await collect(v.createReadStream(pickOpts(req.opts)), entry) })),

  history: (req) =>
    withView(req, async (v) => ({
      entries: await collect(v.createHistoryStream(pickOpts(req.opts)), (e) => ({ type: e.type, ...entry(e) }))
    })),

  // left = the bee (or its checkout), right = version `other`
  diff: (req) =>
    withView(req, async (v) => ({
      entries: await collect(v.createDiffStream(req.other, pickOpts(req.opts)), (d) => ({
        left: entry(d.left),
        right: entry(d.right)
      }))
    })),

  info: (req) =>
    withView(req, async (v) => ({
      length: v.core.length,
      version: v.version,
      fork: v.core.fork,
      byteLength: v.core.byteLength,
      key: hex(v.core.key),
      discoveryKey: hex(v.core.discoveryKey),
      writable: v.core.writable,
      downloaded: await countLocal(v.core, 0, v.core.length)
    })),

  // Background live history stream; every entry becomes an unsolicited event line.
  async live(req) {
    const b = getBee(req.name)
    const opts = { live: true }
    if (req.gte !== undefined && req.gte !== null) opts.gte = req.gte
    const stream = b.bee.createHistoryStream(opts)
    state.lives.push(stream)
    stream.on('data', (e) => send({ event: 'live', name: req.name, entry: { type: e.type, ...entry(e) } }))
    stream.on('error', (err) => log('live stream error (' + req.name + '):', err.message))
    return {}
  },

  // A Hyperswarm on the given bootstrap nodes, replicating the whole store on every
  // connection, as hyper apps do (`swarm.on('connection', c => store.replicate(c))`).
  // With "garbage": true it writes junk on every connection instead (a hostile peer).
  async swarm(req) {
    const store = needStore()
    if (state.swarm) throw new Error('swarm exists')
    if (!Array.isArray(req.bootstrap)) throw new Error('swarm needs bootstrap (never the public list)')
    state.swarm = new Hyperswarm({ bootstrap: req.bootstrap })
    state.swarm.on('connection', (conn) => {
      state.swarmConnections++
      conn.on('error', (err) => log('swarm connection error:', err && err.message))
      if (req.garbage) {
        conn.write(Buffer.from('this is not protomux'))
        conn.write(Buffer.alloc(5000, 0xff))
        return
      }
      const s = store.replicate(conn)
      s.on('error', (err) => log('swarm replication error:', err && err.message))
    })
    return { publicKey: hex(state.swarm.keyPair.publicKey) }
  },

  // Announce a bee on the swarm (server and client, the hyperswarm default).
  async announce(req) {
    const b = getBee(req.name)
    if (!state.swarm) throw new Error('no swarm')
    await state.swarm.join(b.core.discoveryKey).flushed()
    return { discoveryKey: hex(b.core.discoveryKey) }
  },

  // Join a topic given in hex (e.g. the discovery key of a bee someone else holds).
  async joinTopic(req) {
    if (!state.swarm) throw new Error('no swarm')
    await state.swarm.join(Buffer.from(req.topic, 'hex')).flushed()
    return {}
  },

  // Find the peers of an opened bee by its discovery key and wait for its remote length.
  async discover(req) {
    const b = getBee(req.name)
    if (!state.swarm) throw new Error('no swarm')
    state.swarm.join(b.core.discoveryKey)
    await state.swarm.flush()
    await b.core.update({ wait: true })
    return writeResult(b)
  },

  // Extra: connection bookkeeping.
  async stats() {
    return {
      connections: state.connections,
      open: state.sockets.length,
      swarmConnections: state.swarmConnections,
      bees: [...state.bees.keys()]
    }
  },

  async close() {
    await shutdown()
    return {}
  }
}

let shutdownPromise = null
function shutdown() {
  if (shutdownPromise) return shutdownPromise
  shutdownPromise = (async () => {
    for (const s of state.lives) s.destroy()
    if (state.swarm) await state.swarm.destroy().catch((e) => log('swarm destroy:', e.message))
    for (const server of state.servers) server.close()
    for (const s of state.streams.slice()) s.destroy()
    for (const sock of state.sockets.slice()) sock.destroy()
    for (const b of state.bees.values()) await b.bee.close().catch((e) => log('bee close:', e.message))
    for (const c of state.compatCores) await c.close().catch((e) => log('core close:', e.message))
    if (state.store) await state.store.close().catch((e) => log('store close:', e.message))
  })()
  return shutdownPromise
}

// Strict in-order processing: each line is chained onto the previous one.
async function handle(line) {
  if (!line.trim()) return
  let req
  try {
    req = JSON.parse(line)
  } catch (err) {
    send({ id: null, ok: false, error: 'bad json: ' + err.message })
    return
  }
  const id = req.id === undefined ? null : req.id
  const fn = Object.prototype.hasOwnProperty.call(commands, req.cmd) ? commands[req.cmd] : null
  if (!fn) {
    send({ id, ok: false, error: 'unknown cmd: ' + req.cmd })
    return
  }
  try {
    const result = await fn(req)
    send({ id, ok: true, ...result })
  } catch (err) {
    log('cmd', req.cmd, 'failed:', err && err.stack ? err.stack : err)
    send({ id, ok: false, error: (err && err.message) || String(err) })
  }
  if (req.cmd === 'close') process.exit(0)
}

let queue = Promise.resolve()
const rl = readline.createInterface({ input: process.stdin, terminal: false })
rl.on('line', (line) => {
  queue = queue.then(() => handle(line))
})
// On EOF: finish queued requests (but give up waiting after 10 s so a request
// stuck on a vanished peer cannot keep the process alive), then close and exit 0.
rl.on('close', () => {
  const drained = Promise.race([queue, new Promise((resolve) => setTimeout(resolve, 10000))])
  drained
    .then(() => shutdown())
    .then(
      () => process.exit(0),
      (err) => {
        log('shutdown failed:', err)
        process.exit(0)
      }
    )
})
