#!/usr/bin/env node
'use strict'

// Independent verifier for Apiary proof bundles ("apiary-bee-proof/1").
//
// It shares no code with the Rust implementation: hashing, signature checking and
// hyperbee block decoding all go through the JS stack's own modules (hypercore-crypto,
// flat-tree, hypercore's lib/verifier.js + lib/caps.js + lib/messages.js, and
// hyperbee/lib/messages.js), so a disagreement between the two verifiers points at a
// real divergence from what hypercore/hyperbee do.
//
// Usage: node tests/js/verify-bundle.js --key KEY BUNDLE.json   (BUNDLE.json may be "-")
//   KEY: 64 hex chars, 52-char z-base-32, or hyper://KEY with either form.
// Prints one line of JSON and exits 0 (ok) or 1 (any failure).

const fs = require('fs')
const b4a = require('b4a')
const c = require('compact-encoding')
const crypto = require('hypercore-crypto')
const flat = require('flat-tree')
const IdEnc = require('hypercore-id-encoding')
const caps = require('hypercore/lib/caps')
const Verifier = require('hypercore/lib/verifier')
const hcMessages = require('hypercore/lib/messages')
const { Node, YoloIndex } = require('hyperbee/lib/messages')

const FORMAT = 'apiary-bee-proof/1'
const INCLUSION_FORMAT = 'apiary-inclusion-proof/1'
const MAX_DEPTH = 64

class BundleError extends Error {}

function fail(msg) {
  throw new BundleError(msg)
}

// ---------------------------------------------------------------------------------------
// Strict JSON field parsing

function isPlainObject(o) {
  return typeof o === 'object' && o !== null && !Array.isArray(o)
}

function checkFields(o, fields, where) {
  if (!isPlainObject(o)) fail(`${where} must be an object`)
  for (const f of fields) {
    if (!Object.prototype.hasOwnProperty.call(o, f)) fail(`${where} lacks field "${f}"`)
  }
  for (const f of Object.keys(o)) {
    if (!fields.includes(f)) fail(`${where} has unknown field "${f}"`)
  }
}

function uint(v, where) {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    fail(`${where} must be an integer in [0, 2^53)`)
  }
  return v
}

function hex(v, where, len = -1) {
  if (typeof v !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(v)) {
    fail(`${where} must be lowercase hex`)
  }
  const buf = b4a.from(v, 'hex')
  if (len !== -1 && buf.byteLength !== len) fail(`${where} must be ${len} bytes`)
  return buf
}

function base64(v, where) {
  if (typeof v !== 'string' || !/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(v)) {
    fail(`${where} must be standard padded base64`)
  }
  const buf = b4a.from(v, 'base64')
  // refuse non-canonical encodings (non-zero padding bits)
  if (b4a.toString(buf, 'base64') !== v) fail(`${where} is not canonical base64`)
  return buf
}

function treeNode(v, where) {
  checkFields(v, ['index', 'size', 'hash'], where)
  return {
    index: uint(v.index, where + '.index'),
    size: uint(v.size, where + '.size'),
    hash: hex(v.hash, where + '.hash', 32)
  }
}

function parseTree(t) {
  checkFields(t, ['length', 'fork', 'roots', 'signature', 'manifest'], 'tree')
  const length = uint(t.length, 'tree.length')
  const fork = uint(t.fork, 'tree.fork')
  if (!Array.isArray(t.roots)) fail('tree.roots must be an array')
  const roots = t.roots.map((r, i) => treeNode(r, `tree.roots[${i}]`))
  const signature = t.signature === null ? null : hex(t.signature, 'tree.signature')
  const manifest = t.manifest === null ? null : hex(t.manifest, 'tree.manifest')
  if (signature !== null && signature.byteLength === 0) fail('tree.signature is empty')
  if (manifest !== null && manifest.byteLength === 0) fail('tree.manifest is empty')
  return { length, fork, roots, signature, manifest }
}

function parseBundle(b) {
  checkFields(b, ['format', 'feed', 'tree', 'version', 'key', 'blocks', 'nodes', 'result'], 'bundle')
  if (b.format !== FORMAT) fail(`format must be "${FORMAT}"`)

  const feed = hex(b.feed, 'feed', 32)
  const tree = parseTree(b.tree)

  const version = uint(b.version, 'version')

  if (typeof b.key !== 'string') fail('key must be a string')
  if (!b.key.isWellFormed()) fail('key is not well-formed Unicode (lone surrogate)')
  const key = b4a.from(b.key, 'utf8')

  if (!Array.isArray(b.blocks)) fail('blocks must be an array')
  const blocks = b.blocks.map((x, i) => {
    checkFields(x, ['seq', 'data'], `blocks[${i}]`)
    return { seq: uint(x.seq, `blocks[${i}].seq`), data: base64(x.data, `blocks[${i}].data`) }
  })

  if (!Array.isArray(b.nodes)) fail('nodes must be an array')
  const nodes = b.nodes.map((n, i) => treeNode(n, `nodes[${i}]`))

  const r = b.result
  if (!isPlainObject(r)) fail('result must be an object')
  let result
  if (r.found === true) {
    checkFields(r, ['found', 'seq', 'value'], 'result')
    result = {
      found: true,
      seq: uint(r.seq, 'result.seq'),
      value: r.value === null ? null : base64(r.value, 'result.value')
    }
  } else if (r.found === false) {
    checkFields(r, ['found'], 'result')
    result = { found: false, seq: null, value: null }
  } else {
    fail('result.found must be true or false')
  }

  return {
    feed,
    tree,
    version,
    keyString: b.key,
    key,
    blocks,
    nodes,
    result
  }
}

// ---------------------------------------------------------------------------------------
// 1. The signed head

function decodeExact(enc, buf, what) {
  const state = c.state(0, buf.byteLength, buf)
  let v
  try {
    v = enc.decode(state)
  } catch (err) {
    fail(`${what} does not decode: ${err.message}`)
  }
  if (state.start !== state.end) fail(`${what} has ${state.end - state.start} trailing bytes`)
  return v
}

function checkSignedTree(coreKey, tree) {
  const { length, fork, roots, signature } = tree

  if (length < 1) fail('tree.length must be at least 1')
  // flat-tree indices reach 2 * length, which must stay an exact JS integer
  if (length > 2 ** 52) fail('tree.length is too large (above 2^52 blocks)')

  // roots must be exactly the full roots of `length` blocks, left to right
  const expected = flat.fullRoots(2 * length)
  if (roots.length !== expected.length) {
    fail(`tree.roots has ${roots.length} roots, a tree of ${length} blocks has ${expected.length}`)
  }
  let total = 0
  for (let i = 0; i < roots.length; i++) {
    if (roots[i].index !== expected[i]) {
      fail(`tree.roots[${i}] has index ${roots[i].index}, expected ${expected[i]}`)
    }
    total += roots[i].size
    if (!Number.isSafeInteger(total)) fail('tree byte length overflows 2^53')
  }

  const treeHash = crypto.tree(roots)

  // manifest: absent = compat core (key = ed25519 public key)
  let manifest = null
  let compat
  if (tree.manifest === null) {
    manifest = Verifier.defaultSignerManifest(coreKey)
    compat = true
  } else {
    manifest = decodeExact(hcMessages.manifest, tree.manifest, 'tree.manifest')
    let reencoded
    try {
      reencoded = c.encode(hcMessages.manifest, manifest)
    } catch (err) {
      fail(`tree.manifest does not re-encode: ${err.message}`)
    }
    if (!b4a.equals(reencoded, tree.manifest)) fail('tree.manifest is not canonically encoded')
    compat = Verifier.isCompat(coreKey, manifest)
    if (!compat && !Verifier.isValidManifest(coreKey, manifest)) {
      fail('tree.manifest does not hash to the feed key (and is not the compat form)')
    }
  }

  let verifier
  try {
    verifier = new Verifier(coreKey, manifest, { compat, legacy: false })
  } catch (err) {
    fail(`unusable manifest: ${err.message}`)
  }

  const coveredByPrologue =
    !verifier.compat && verifier.version !== 0 && verifier.prologue !== null && length <= verifier.prologue.length

  if (!coveredByPrologue) {
    if (signature === null) fail('tree.signature is missing')
    // the signature container must be exactly what this manifest uses
    if (verifier.version === 0 && (verifier.compat || (!verifier.allowPatch && verifier.signers.length === 1))) {
      if (signature.byteLength !== 64) fail(`tree.signature must be a raw 64-byte signature, has ${signature.byteLength} bytes`)
    } else {
      const enc = verifier.version >= 1 ? hcMessages.multiSignature : hcMessages.multiSignaturev0
      decodeExact(enc, signature, 'tree.signature (multisig)')
    }
  }

  const batch = {
    length,
    fork,
    hash: () => treeHash,
    signable: (ctx) => caps.treeSignable(ctx, treeHash, length, fork),
    signableCompat: (noHeader) => caps.treeSignableCompat(treeHash, length, fork, noHeader),
    clone: () => fail('patched multisig signatures are not supported')
  }

  let ok
  try {
    ok = verifier.verify(batch, signature)
  } catch (err) {
    if (err instanceof BundleError) throw err
    fail(`signature check failed: ${err.message}`)
  }
  if (!ok) fail('signature does not verify over (tree hash, length, fork)')
}

// ---------------------------------------------------------------------------------------
// 2. Merkle paths from the blocks to the signed roots

function checkMerkle(tree, blocks, nodes) {
  const L = tree.length

  const rootFor = (leaf) => {
    for (const r of tree.roots) {
      if (flat.leftSpan(r.index) <= leaf && leaf <= flat.rightSpan(r.index)) return r
    }
    return null
  }

  // every node on a path from a bundle block up to its root is computed, never given
  const onPath = new Set()
  const leaves = new Map()
  const reached = new Map()
  for (const b of blocks) {
    const leaf = 2 * b.seq
    leaves.set(leaf, b)
    const root = rootFor(leaf)
    if (root === null) fail(`block ${b.seq} is outside a tree of ${L} blocks`)
    reached.set(root.index, root)
    let i = leaf
    onPath.add(i)
    while (i !== root.index) {
      i = flat.parent(i)
      onPath.add(i)
    }
  }

  const given = new Map()
  let prev = -1
  for (const n of nodes) {
    if (given.has(n.index)) fail(`node ${n.index} is given twice`)
    if (n.index <= prev) fail(`nodes are not sorted by index (${n.index} after ${prev})`)
    prev = n.index
    if (onPath.has(n.index)) fail(`node ${n.index} lies on a path from a bundle block and must be computed, not given`)
    given.set(n.index, n)
  }

  const used = new Set()
  const memo = new Map()

  const compute = (i) => {
    if (memo.has(i)) return memo.get(i)
    let node
    if (!onPath.has(i)) {
      node = given.get(i)
      if (!node) fail(`node ${i} is needed but missing from nodes`)
      used.add(i)
    } else if (i % 2 === 0) {
      const b = leaves.get(i)
      // An inclusion proof gives its leaf; a bundle's leaves are hashed from the blocks.
      node = b.leaf ? b.leaf : { index: i, size: b.data.byteLength, hash: crypto.data(b.data) }
    } else {
      const [l, r] = flat.children(i)
      const a = compute(l)
      const z = compute(r)
      const size = a.size + z.size
      if (!Number.isSafeInteger(size)) fail(`size of node ${i} overflows 2^53`)
      node = { index: i, size, hash: crypto.parent(a, z) }
    }
    memo.set(i, node)
    return node
  }

  for (const root of reached.values()) {
    const got = compute(root.index)
    if (got.size !== root.size || !b4a.equals(got.hash, root.hash)) {
      fail(`root ${root.index} computed from the blocks does not match the signed root`)
    }
  }

  for (const n of nodes) {
    if (!used.has(n.index)) fail(`node ${n.index} is not used by any block's path`)
  }
}

// ---------------------------------------------------------------------------------------
// 3. The hyperbee lookup, over the bundle's blocks only

function decodeBeeBlock(seq, bytes) {
  let node
  try {
    node = Node.decode(bytes)
  } catch (err) {
    fail(`block ${seq} is not a hyperbee node: ${err.message}`)
  }
  if (Node.decode.bytes !== bytes.byteLength) fail(`block ${seq} is not a well-framed hyperbee node`)
  if (!b4a.isBuffer(node.index) || !b4a.isBuffer(node.key)) fail(`block ${seq} lacks index or key`)

  let index
  try {
    index = YoloIndex.decode(node.index)
  } catch (err) {
    fail(`block ${seq} has an undecodable index: ${err.message}`)
  }
  if (YoloIndex.decode.bytes !== node.index.byteLength) fail(`block ${seq} has a badly framed index`)

  for (let i = 0; i < index.levels.length; i++) {
    const lvl = index.levels[i]
    for (const v of lvl.keys.concat(lvl.children)) {
      if (!Number.isSafeInteger(v) || v < 0) fail(`block ${seq} level ${i} has an out-of-range pointer`)
    }
    if (lvl.children.length % 2 !== 0) fail(`block ${seq} level ${i} has an odd children list`)
  }

  // refuse anything hyperbee would not have written byte for byte (unknown fields,
  // overlong varints, sub-messages whose contents overrun their declared length)
  let same = false
  try {
    same = b4a.equals(YoloIndex.encode(index), node.index) && b4a.equals(Node.encode(node), bytes)
  } catch {
    same = false
  }
  if (!same) fail(`block ${seq} is not canonically encoded`)

  return { seq, key: node.key, value: node.value, levels: index.levels }
}

function isDeletion(block) {
  if (block.value !== null) return false
  for (const lvl of block.levels) {
    if (lvl.keys.includes(block.seq)) return false
  }
  return true
}

function lookup(version, key, blocks) {
  const bySeq = new Map()
  for (const b of blocks) bySeq.set(b.seq, { raw: b, decoded: null, read: false })

  const read = (seq, what) => {
    if (seq === 0) fail(`${what} points at block 0 (the header)`)
    if (seq >= version) fail(`${what} points at block ${seq}, beyond version ${version}`)
    const e = bySeq.get(seq)
    if (!e) fail(`the lookup reads block ${seq}, which is not in the bundle`)
    e.read = true
    if (e.decoded === null) e.decoded = decodeBeeBlock(seq, e.raw.data)
    return e.decoded
  }

  const finish = (res) => {
    for (const [seq, e] of bySeq) {
      if (!e.read) fail(`block ${seq} is in the bundle but the lookup never reads it`)
    }
    return res
  }

  if (version < 2) return finish({ found: false, seq: null, value: null })

  let block = read(version - 1, 'the root')
  let offset = 0
  let what = `the root (level 0 of block ${version - 1})`

  for (let depth = 0; ; depth++) {
    if (depth >= MAX_DEPTH) fail(`the lookup goes deeper than ${MAX_DEPTH} nodes`)
    const level = block.levels[offset]
    if (!level) fail(`${what}: block ${block.seq} has no level ${offset}`)

    if (b4a.equals(block.key, key)) {
      if (isDeletion(block)) return finish({ found: false, seq: null, value: null })
      return finish({ found: true, seq: block.seq, value: block.value })
    }

    let lo = 0
    let hi = level.keys.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      const ks = level.keys[mid]
      const kb = ks === block.seq ? block : read(ks, `key ${mid} of block ${block.seq} level ${offset}`)
      const cmp = b4a.compare(key, kb.key)
      if (cmp === 0) return finish({ found: true, seq: kb.seq, value: kb.value })
      if (cmp < 0) hi = mid
      else lo = mid + 1
    }

    if (level.children.length === 0) return finish({ found: false, seq: null, value: null })
    if (2 * lo + 1 >= level.children.length) {
      fail(`block ${block.seq} level ${offset} has no child ${lo}`)
    }
    const cs = level.children[2 * lo]
    const co = level.children[2 * lo + 1]
    what = `child ${lo} of block ${block.seq} level ${offset}`
    block = read(cs, what)
    offset = co
  }
}

// ---------------------------------------------------------------------------------------

function toBase64(buf) {
  return buf === null ? null : b4a.toString(buf, 'base64')
}

// ---------------------------------------------------------------------------------------
// Inclusion proofs (apiary-inclusion-proof/1): a block's leaf in the signed log, no lookup

function verifyInclusionUnsafe(p, coreKey) {
  checkFields(p, ['format', 'feed', 'tree', 'version', 'key', 'seq', 'leaf', 'nodes', 'note'], 'proof')
  if (!b4a.equals(hex(p.feed, 'feed', 32), coreKey)) fail('feed is not the given key')
  const tree = parseTree(p.tree)
  const seq = uint(p.seq, 'seq')
  uint(p.version, 'version')
  if (typeof p.key !== 'string' || typeof p.note !== 'string') fail('key and note must be strings')
  const leaf = treeNode(p.leaf, 'leaf')
  if (seq >= tree.length || leaf.index !== 2 * seq) fail(`leaf ${leaf.index} is not block ${seq} of a log of ${tree.length}`)
  if (!Array.isArray(p.nodes)) fail('nodes must be an array')
  const nodes = p.nodes.map((n, i) => treeNode(n, `nodes[${i}]`))
  checkSignedTree(coreKey, tree)
  checkMerkle(tree, [{ seq, leaf }], nodes)
  return {
    ok: true,
    inclusionOnly: true,
    feed: b4a.toString(coreKey, 'hex'),
    length: tree.length,
    fork: tree.fork,
    seq,
    size: leaf.size,
    hash: b4a.toString(leaf.hash, 'hex')
  }
}

function verifyBundle(bundleObject, key32) {
  try {
    if (isPlainObject(bundleObject) && bundleObject.format === INCLUSION_FORMAT) {
      if (!b4a.isBuffer(key32) && !(key32 instanceof Uint8Array)) fail('key must be a buffer')
      if (key32.byteLength !== 32) fail('key must be 32 bytes')
      return verifyInclusionUnsafe(bundleObject, b4a.from(key32.buffer, key32.byteOffset, key32.byteLength))
    }
    return verifyBundleUnsafe(bundleObject, key32)
  } catch (err) {
    if (err instanceof BundleError) throw new Error(err.message)
    throw new Error(`internal error: ${err && err.message ? err.message : String(err)}`)
  }
}

function verifyBundleUnsafe(bundleObject, key32) {
  if (!b4a.isBuffer(key32) && !(key32 instanceof Uint8Array)) fail('key must be a buffer')
  if (key32.byteLength !== 32) fail('key must be 32 bytes')
  const coreKey = b4a.from(key32.buffer, key32.byteOffset, key32.byteLength)

  const b = parseBundle(bundleObject)
  if (!b4a.equals(b.feed, coreKey)) fail('feed is not the given key')

  const L = b.tree.length
  if (b.version < 1 || b.version > L) fail(`version ${b.version} is not in [1, ${L}]`)

  // blocks sorted by seq, each once, all in [1, L)
  let prev = -1
  for (const blk of b.blocks) {
    if (blk.seq === prev) fail(`block ${blk.seq} is given twice`)
    if (blk.seq < prev) fail(`blocks are not sorted by seq (${blk.seq} after ${prev})`)
    prev = blk.seq
    if (blk.seq === 0) fail('block 0 (the header) cannot be part of a lookup')
    if (blk.seq >= L) fail(`block ${blk.seq} is beyond the tree length ${L}`)
  }

  checkSignedTree(coreKey, b.tree)
  checkMerkle(b.tree, b.blocks, b.nodes)

  const got = lookup(b.version, b.key, b.blocks)
  const want = b.result
  if (got.found !== want.found) {
    fail(`result says ${want.found ? 'found' : 'absent'} but the lookup ends ${got.found ? 'at block ' + got.seq : 'absent'}`)
  }
  if (got.found) {
    if (got.seq !== want.seq) fail(`result says seq ${want.seq} but the lookup ends at block ${got.seq}`)
    const gv = got.value
    const wv = want.value
    if ((gv === null) !== (wv === null) || (gv !== null && !b4a.equals(gv, wv))) {
      fail(`result value does not match block ${got.seq}'s value`)
    }
  }

  return {
    ok: true,
    feed: b4a.toString(coreKey, 'hex'),
    length: L,
    fork: b.tree.fork,
    version: b.version,
    key: b.keyString,
    found: got.found,
    seq: got.found ? got.seq : null,
    value: got.found ? toBase64(got.value) : null
  }
}

// ---------------------------------------------------------------------------------------
// CLI

function parseKeyArg(s) {
  if (typeof s !== 'string') fail('missing --key')
  let id = s
  if (id.startsWith('hyper://')) {
    id = id.slice('hyper://'.length)
    if (id.endsWith('/')) id = id.slice(0, -1)
  }
  if (/^[0-9a-fA-F]{64}$/.test(id)) return b4a.from(id, 'hex')
  if (id.length === 52) {
    let key
    try {
      key = IdEnc.decode(id)
    } catch {
      fail('--key is not valid z-base-32')
    }
    if (key.byteLength !== 32 || IdEnc.encode(key) !== id) fail('--key is not canonical z-base-32')
    return key
  }
  fail('--key must be 64 hex chars, 52 z-base-32 chars, or hyper://KEY')
}

function parseArgs(argv) {
  let key = null
  let file = null
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--key') {
      if (i + 1 >= argv.length) fail('--key needs a value')
      if (key !== null) fail('--key given twice')
      key = argv[++i]
    } else if (a.startsWith('--key=')) {
      if (key !== null) fail('--key given twice')
      key = a.slice('--key='.length)
    } else if (a !== '-' && a.startsWith('-')) {
      fail(`unknown option ${a}`)
    } else {
      if (file !== null) fail('more than one bundle file given')
      file = a
    }
  }
  if (key === null) fail('usage: verify-bundle.js --key KEY BUNDLE.json|-')
  if (file === null) fail('usage: verify-bundle.js --key KEY BUNDLE.json|-')
  return { key: parseKeyArg(key), file }
}

function main() {
  let out
  try {
    const { key, file } = parseArgs(process.argv.slice(2))
    let raw
    try {
      raw = fs.readFileSync(file === '-' ? 0 : file)
    } catch (err) {
      fail(`cannot read ${file === '-' ? 'stdin' : file}: ${err.code || err.message}`)
    }
    let text
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(raw)
    } catch {
      fail('bundle is not valid UTF-8')
    }
    let obj
    try {
      obj = JSON.parse(text)
    } catch (err) {
      fail(`bundle is not JSON: ${err.message}`)
    }
    out = verifyBundle(obj, key)
  } catch (err) {
    out = { ok: false, error: err && err.message ? err.message : String(err) }
  }
  process.stdout.write(JSON.stringify(out) + '\n')
  process.exitCode = out.ok ? 0 : 1
}

module.exports = { verifyBundle }

if (require.main === module) main()
