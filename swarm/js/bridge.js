'use strict'
// Apiary's DHT bridge: runs the official hyperswarm and hands every connection it makes to
// the Rust parent as whole messages. Noise ends here; the parent gets the remote public key,
// the handshake hash and the initiator flag, which is all hypercore's capabilities need.
//
// The pipe protocol (stdin: parent -> bridge, stdout: bridge -> parent) is documented next
// to the Rust code that reads it, swarm/src/frame.rs. In short, frames of
//   u32le length of what follows | u8 kind | body
// where kind 0 is a JSON control object and kind 1 is `u32le connection id | one message`.
// Logs go to stderr, one line each; the parent puts them into its tracing logs.
//
// Flow control, per connection, both ways, in bytes of messages:
// - bridge -> parent: at most WINDOW bytes unacknowledged; past it the connection is paused
//   (so the remote is slowed by the transport) until the parent acks what it consumed.
// - parent -> bridge: we ack what the connection accepted; a write that returns false is
//   acked only after 'drain', so the parent stops sending when the remote is slow.

const Hyperswarm = require('hyperswarm')
const DHT = require('hyperdht')
const b4a = require('b4a')

const KIND_CONTROL = 0
const KIND_DATA = 1
// Largest frame body: a kind byte, a connection id and a message of up to 16 MiB.
const MAX_BODY = 1 + 4 + (1 << 24)
const WINDOW = 1 << 20
const ACK_EVERY = 64 * 1024
// Both sides send a keep-alive every 5 s: a connection silent for this long is dead or
// stalled, and is closed (hyperswarm sets no such timeout itself).
const IDLE_TIMEOUT = 30000

// Nothing but frames may reach stdout.
console.log = console.info = console.debug = console.warn = console.error
const log = (...a) => process.stderr.write(a.join(' ') + '\n')
process.on('uncaughtException', (e) => log('error: uncaught', (e && e.stack) || e))
process.on('unhandledRejection', (e) => log('error: unhandled rejection', (e && e.stack) || e))

const hex = (b) => b4a.toString(b, 'hex')
const fromHex = (s, len) => {
  if (typeof s !== 'string' || s.length !== len * 2 || !/^[0-9a-f]*$/i.test(s)) {
    throw new Error('expected ' + len + ' bytes of hex')
  }
  return b4a.from(s, 'hex')
}

let swarm = null
let closing = false
// hyperswarm caps the connections it dials (maxPeers) but not those it accepts: we do.
let maxServerConnections = 256
let serverOpen = 0
const conns = new Map() // id -> Conn
let nextId = 1
const counts = { lookups: 0, announces: 0, connections: 0, clientConnections: 0, serverConnections: 0, refused: 0 }

// ---- output: frames are batched per turn of the event loop --------------------------------
let outQueue = []
let outScheduled = false

function flushOut() {
  outScheduled = false
  if (outQueue.length === 0) return
  const buf = outQueue.length === 1 ? outQueue[0] : b4a.concat(outQueue)
  outQueue = []
  process.stdout.write(buf)
}

function pushOut(buf) {
  outQueue.push(buf)
  if (!outScheduled) {
    outScheduled = true
    setImmediate(flushOut)
  }
}

function control(obj) {
  const body = b4a.from(JSON.stringify(obj))
  const head = b4a.allocUnsafe(5)
  head.writeUInt32LE(body.byteLength + 1, 0)
  head[4] = KIND_CONTROL
  pushOut(head)
  pushOut(body)
}

function data(id, msg) {
  const head = b4a.allocUnsafe(9)
  head.writeUInt32LE(msg.byteLength + 5, 0)
  head[4] = KIND_DATA
  head.writeUInt32LE(id, 5)
  pushOut(head)
  pushOut(msg)
}

// ---- input: a frame parser that copies each message once ----------------------------------
let chunks = []
let buffered = 0

function take(n) {
  const out = b4a.allocUnsafe(n)
  let off = 0
  while (off < n) {
    const c = chunks[0]
    const want = n - off
    if (c.byteLength <= want) {
      c.copy(out, off)
      off += c.byteLength
      chunks.shift()
    } else {
      c.copy(out, off, 0, want)
      chunks[0] = c.subarray(want)
      off += want
    }
  }
  buffered -= n
  return out
}

let pendingLength = -1

function onInput(chunk) {
  chunks.push(chunk)
  buffered += chunk.byteLength
  for (;;) {
    if (pendingLength < 0) {
      if (buffered < 4) return
      const c = chunks[0]
      if (c.byteLength >= 4) {
        pendingLength = c.readUInt32LE(0)
        if (c.byteLength === 4) chunks.shift()
        else chunks[0] = c.subarray(4)
        buffered -= 4
      } else {
        pendingLength = take(4).readUInt32LE(0)
      }
      if (pendingLength < 1 || pendingLength > MAX_BODY) {
        log('error: bad frame length from the parent:', pendingLength)
        process.exit(3)
      }
    }
    if (buffered < pendingLength) return
    const body = take(pendingLength)
    pendingLength = -1
    try {
      onFrame(body)
    } catch (e) {
      log('error: frame from the parent:', (e && e.message) || e)
    }
  }
}

function onFrame(body) {
  if (body[0] === KIND_DATA) {
    if (body.byteLength < 5) throw new Error('short data frame')
    const c = conns.get(body.readUInt32LE(1))
    if (!c) return // closed meanwhile
    const msg = body.subarray(5)
    c.pendingAck += msg.byteLength
    if (!c.conn.write(msg)) c.blocked = true
    scheduleAck(c)
    return
  }
  if (body[0] !== KIND_CONTROL) throw new Error('unknown frame kind ' + body[0])
  const cmd = JSON.parse(b4a.toString(body.subarray(1)))
  command(cmd)
}

function scheduleAck(c) {
  if (c.blocked || c.ackScheduled || c.pendingAck === 0) return
  if (c.pendingAck >= ACK_EVERY) return sendAck(c)
  c.ackScheduled = true
  setImmediate(() => {
    c.ackScheduled = false
    if (!c.blocked) sendAck(c)
  })
}

function sendAck(c) {
  if (c.pendingAck === 0 || !conns.has(c.id)) return
  control({ ev: 'ack', conn: c.id, bytes: c.pendingAck })
  c.pendingAck = 0
}

// ---- commands from the parent --------------------------------------------------------------
function command(cmd) {
  switch (cmd.op) {
    case 'init':
      return init(cmd)
    case 'join': {
      const topic = fromHex(cmd.topic, 32)
      const d = swarm.join(topic, { server: !!cmd.server, client: !!cmd.client })
      // hyperswarm's flush resolves even when no DHT node answered: say how many we know.
      d.flushed().then(
        () => control({ ev: 'joined', topic: cmd.topic, nodes: swarm.dht.nodes.length }),
        (e) => log('warn: join did not flush:', (e && e.message) || e)
      )
      return
    }
    case 'refresh': {
      // Look the topic up again now (hyperswarm's own refresh is every ~10 minutes).
      const d = swarm.status(fromHex(cmd.topic, 32))
      if (d) {
        // A refresh can fail ("Too few nodes responded" while the DHT is still down): that is
        // "reached no node" too; the parent keeps retrying on its own clock either way.
        d.refresh().then(
          () => control({ ev: 'joined', topic: cmd.topic, nodes: swarm.dht.nodes.length }),
          (e) => {
            log('warn: refresh:', (e && e.message) || e)
            control({ ev: 'joined', topic: cmd.topic, nodes: 0 })
          }
        )
      }
      return
    }
    case 'leave':
      swarm.leave(fromHex(cmd.topic, 32)).catch((e) => log('warn: leave:', e.message))
      return
    case 'joinPeer':
      swarm.joinPeer(fromHex(cmd.key, 32))
      return
    case 'leavePeer':
      swarm.leavePeer(fromHex(cmd.key, 32))
      return
    case 'ack': {
      const c = conns.get(cmd.conn)
      if (!c) return
      c.unacked = Math.max(0, c.unacked - Number(cmd.bytes || 0))
      if (c.paused && c.unacked < WINDOW / 2) {
        c.paused = false
        c.conn.resume()
      }
      return
    }
    case 'close': {
      const c = conns.get(cmd.conn)
      if (!c) return
      c.conn.end()
      // A remote that never ends its side must not keep the connection forever.
      setTimeout(() => c.conn.destroy(), 10000).unref()
      return
    }
    case 'stats':
      return control({ ev: 'stats', id: cmd.id, ...stats() })
    case 'shutdown':
      return shutdown(0)
    default:
      throw new Error('unknown op ' + cmd.op)
  }
}

function stats() {
  const dht = swarm ? swarm.dht : null
  return {
    ...counts,
    open: conns.size,
    topics: swarm ? swarm._discovery.size : 0,
    peers: swarm ? swarm.peers.size : 0,
    nodes: dht ? dht.nodes.length : 0,
    host: dht ? dht.host : null,
    port: dht ? dht.port : null,
    firewalled: dht ? dht.firewalled : null,
    punches: dht && dht.stats ? dht.stats.punches : null,
    rss: process.memoryUsage.rss()
  }
}

function init(cmd) {
  if (swarm) throw new Error('init twice')
  const keyPair = DHT.keyPair(fromHex(cmd.seed, 32))
  maxServerConnections = Number(cmd.maxServerConnections) || 256
  const opts = { keyPair }
  if (Array.isArray(cmd.bootstrap)) opts.bootstrap = cmd.bootstrap
  swarm = new Hyperswarm(opts)
  // Counted for the parent's metrics: every lookup and announce hyperswarm makes.
  const lookup = swarm.dht.lookup.bind(swarm.dht)
  swarm.dht.lookup = (...a) => {
    counts.lookups++
    return lookup(...a)
  }
  const announce = swarm.dht.announce.bind(swarm.dht)
  swarm.dht.announce = (...a) => {
    counts.announces++
    return announce(...a)
  }
  swarm.on('connection', onConnection)
  control({ ev: 'ready', publicKey: hex(keyPair.publicKey) })
  swarm.dht.fullyBootstrapped().then(
    () => control({ ev: 'bootstrapped', host: swarm.dht.host, port: swarm.dht.port, firewalled: swarm.dht.firewalled, nodes: swarm.dht.nodes.length }),
    (e) => log('warn: bootstrap:', e.message)
  )
}

async function onConnection(conn, info) {
  const id = nextId++
  nextId = nextId > 0xffffffff ? 1 : nextId
  const c = { id, conn, unacked: 0, paused: false, pendingAck: 0, blocked: false, ackScheduled: false, error: null, announced: false }
  if (!info.client && serverOpen >= maxServerConnections) {
    counts.refused++
    conn.on('error', () => {})
    conn.destroy()
    return
  }
  counts.connections++
  if (info.client) counts.clientConnections++
  else {
    counts.serverConnections++
    serverOpen++
    conn.once('close', () => serverOpen--)
  }
  const ontopic = (t) => control({ ev: 'topic', conn: id, topic: hex(t) })
  conn.on('error', (e) => {
    c.error = (e && (e.code || e.message)) || String(e)
  })
  conn.on('close', () => {
    info.removeListener('topic', ontopic)
    conns.delete(id)
    if (c.announced) control({ ev: 'closed', conn: id, error: c.error })
  })
  // Server connections are handed over before their stream has opened.
  if (!conn.handshakeHash) {
    await new Promise((resolve) => conn.once('open', resolve).once('close', resolve))
    if (conn.destroyed || !conn.handshakeHash) return
  }
  conn.setTimeout(IDLE_TIMEOUT)
  conns.set(id, c)
  c.announced = true
  const raw = conn.rawStream
  control({
    ev: 'connection',
    conn: id,
    remotePublicKey: hex(conn.remotePublicKey),
    handshakeHash: hex(conn.handshakeHash),
    isInitiator: conn.isInitiator,
    client: !!info.client,
    remote: raw && raw.remoteHost ? raw.remoteHost + ':' + raw.remotePort : 'relayed',
    topics: (info.topics || []).map(hex)
  })
  info.on('topic', ontopic)
  conn.on('drain', () => {
    c.blocked = false
    scheduleAck(c)
  })
  conn.on('data', (msg) => {
    if (msg.byteLength === 0) return // a keep-alive
    data(id, msg)
    c.unacked += msg.byteLength
    if (!c.paused && c.unacked >= WINDOW) {
      c.paused = true
      conn.pause()
    }
  })
}

async function shutdown(code) {
  if (closing) return
  closing = true
  const t = setTimeout(() => process.exit(code), 5000)
  t.unref()
  try {
    if (swarm) await swarm.destroy()
  } catch (e) {
    log('warn: destroy:', e.message)
  }
  flushOut()
  process.stdout.end(() => process.exit(code))
}

process.stdin.on('data', onInput)
// The parent is gone (or closed our input): nothing is left to do.
process.stdin.on('end', () => shutdown(0))
process.stdin.on('error', () => shutdown(0))
process.stdout.on('error', () => process.exit(0))
process.once('SIGTERM', () => shutdown(0))
process.once('SIGINT', () => shutdown(0))
