'use strict'
// A hostile stand-in for swarm/js/bridge.js (pure Node, no packages): it speaks the pipe
// protocol of swarm/src/frame.rs, then breaks it in the ways a buggy bridge or a peer through
// it could. Driven by tests/tests/dht_hostile.rs:
//   run 1: announces conn 1 (then an oversized frame for it), conn 2 (then garbage that is
//          not protomux), conn 3 (echoes every message), a connection with a malformed key,
//          and a malformed control object. A message "truncate" on conn 3 makes it write half
//          a frame and exit.
//   run 2 (EVIL_STATE file exists): announces conn 9, which echoes; "close-me" on it makes
//          the bridge report it closed as a duplicate.
const fs = require('fs')
const crypto = require('crypto')

const STATE = process.env.EVIL_STATE
const second = STATE && fs.existsSync(STATE)
if (STATE) fs.writeFileSync(STATE, 'ran')

function frame(kind, body) {
  const h = Buffer.alloc(5)
  h.writeUInt32LE(body.length + 1, 0)
  h[4] = kind
  return Buffer.concat([h, body])
}
const control = (o) => process.stdout.write(frame(0, Buffer.from(JSON.stringify(o))))
function data(conn, msg) {
  const id = Buffer.alloc(4)
  id.writeUInt32LE(conn, 0)
  process.stdout.write(frame(1, Buffer.concat([id, msg])))
}
function connection(conn) {
  control({
    ev: 'connection',
    conn,
    remotePublicKey: crypto.randomBytes(32).toString('hex'),
    handshakeHash: crypto.randomBytes(64).toString('hex'),
    isInitiator: true,
    client: true,
    remote: '10.9.9.9:' + (1000 + conn),
    topics: []
  })
}

let buf = Buffer.alloc(0)
process.stdin.on('data', (chunk) => {
  buf = Buffer.concat([buf, chunk])
  while (buf.length >= 4) {
    const n = buf.readUInt32LE(0)
    if (buf.length < 4 + n) return
    const body = buf.subarray(4, 4 + n)
    buf = buf.subarray(4 + n)
    if (body[0] === 0) onControl(JSON.parse(body.subarray(1).toString()))
    else onData(body.readUInt32LE(1), body.subarray(5))
  }
})
process.stdin.on('end', () => process.exit(0))

function onControl(cmd) {
  if (cmd.op !== 'init') return
  control({ ev: 'ready', publicKey: '00'.repeat(32) })
  if (second) {
    connection(9)
    return
  }
  connection(1)
  connection(2)
  connection(3)
  // A connection whose handshake hash is not 64 bytes: refused, nothing else happens.
  control({ ev: 'connection', conn: 4, remotePublicKey: 'zz', handshakeHash: 'ab', isInitiator: true, topics: [] })
  // Not JSON.
  process.stdout.write(frame(0, Buffer.from('{not json')))
  // Conn 1: a frame far over the limit (16 MiB + 5 + more).
  const big = Buffer.alloc((1 << 24) + 1000, 0x61)
  const head = Buffer.alloc(9)
  head.writeUInt32LE(big.length + 5, 0)
  head[4] = 1
  head.writeUInt32LE(1, 5)
  process.stdout.write(Buffer.concat([head, big]))
  // Conn 2: bytes that are no protomux frame.
  data(2, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02]))
}

function onData(conn, msg) {
  if (msg.toString() === 'close-me') {
    // What hyperswarm does to the loser of two connections to one remote.
    control({ ev: 'closed', conn, error: 'Duplicate connection' })
    return
  }
  if (msg.toString() === 'truncate') {
    const h = Buffer.alloc(5)
    h.writeUInt32LE(100, 0)
    h[4] = 1
    process.stdout.write(Buffer.concat([h, Buffer.from('only a part')]), () => process.exit(1))
    return
  }
  data(conn, msg) // echo
}
