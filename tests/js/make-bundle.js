#!/usr/bin/env node
'use strict'

// Makes "apiary-bee-proof/1" bundles with the JS stack alone, so the Rust verifier can be
// checked against bundles it did not build (and verify-bundle.js against honest input).
//
// The blocks a lookup reads are recorded by hyperbee itself (its `onseq` hook on a fresh
// checkout), not by re-implementing the lookup; tree nodes are read from hypercore's
// storage.
//
//   node tests/js/make-bundle.js OUTDIR
//     builds a few demo bees (a corestore core and a compat core) in a temp dir and writes
//     OUTDIR/ok-js-<kind>-<key8>-<case>.json bundles plus OUTDIR/<key8>.KEY.txt holding each
//     feed key in hex (key8 = its first 8 hex chars).
//
//   const { makeBundle } = require('./make-bundle')
//   await makeBundle(bee, { version, key, manifest })   // key: string or buffer (full key)

const fs = require('fs')
const os = require('os')
const path = require('path')
const b4a = require('b4a')
const flat = require('flat-tree')
const Hypercore = require('hypercore')
const Hyperbee = require('hyperbee')
const Corestore = require('corestore')
const { MerkleTree } = require('hypercore/lib/merkle-tree')

const hex = (b) => b4a.toString(b, 'hex')
const b64 = (b) => b4a.toString(b, 'base64')
const jnode = (n) => ({ index: n.index, size: n.size, hash: hex(n.hash) })

// the blocks at `seqs`, as bundle entries
async function blocksFor(core, seqs) {
  const blocks = []
  for (const seq of seqs) {
    const data = await core.get(seq, { valueEncoding: null })
    blocks.push({ seq, data: b64(data) })
  }
  return blocks
}

// the tree nodes a bundle holding blocks `seqs` needs in a tree of `length` blocks:
// nodes on a block's path to its root are computed by the verifier, their siblings given
async function nodesFor(core, seqs, length = core.length) {
  const rootIdx = flat.fullRoots(2 * length)
  const onPath = new Set()
  for (const seq of seqs) {
    let i = 2 * seq
    onPath.add(i)
    while (!rootIdx.includes(i)) {
      i = flat.parent(i)
      onPath.add(i)
    }
  }
  const need = new Set()
  for (const i of onPath) {
    if (i % 2 === 0) continue
    for (const ch of flat.children(i)) if (!onPath.has(ch)) need.add(ch)
  }
  const nodes = []
  for (const i of [...need].sort((a, b) => a - b)) nodes.push(jnode(await MerkleTree.get(core.state, i)))
  return nodes
}

// opts.manifest: 'auto' (the core's manifest unless compat), 'none', or 'compat-form'
// (the compat core's default signer manifest, which does not hash to the key)
async function makeBundle(bee, opts = {}) {
  const core = bee.core
  await core.ready()
  const L = core.length
  const version = opts.version === undefined ? L : opts.version
  const key = typeof opts.key === 'string' ? b4a.from(opts.key, 'utf8') : opts.key

  // the blocks hyperbee's own get() reads at that version
  const reads = new Set()
  const fresh = new Hyperbee(core.session(), { keyEncoding: 'binary', valueEncoding: 'binary' })
  await fresh.ready()
  const view = fresh.checkout(version)
  const entry = await view.get(key, {
    onseq: (seq) => reads.add(seq),
    keyEncoding: 'binary',
    valueEncoding: 'binary',
    update: false
  })
  await view.close()
  await fresh.close()

  const seqs = [...reads].sort((a, b) => a - b)
  const blocks = await blocksFor(core, seqs)
  const roots = await MerkleTree.getRoots(core.state, L)
  const nodes = await nodesFor(core, seqs, L)

  const mode = opts.manifest || 'auto'
  let manifest = null
  const raw = core.getManifest({ raw: true })
  if (mode === 'auto' && !core.core.compat) manifest = hex(raw)
  if (mode === 'compat-form') manifest = hex(raw)

  return {
    format: 'apiary-bee-proof/1',
    feed: hex(core.key),
    tree: {
      length: L,
      fork: core.fork,
      roots: roots.map(jnode),
      signature: core.state.signature ? hex(core.state.signature) : null,
      manifest
    },
    version,
    key: b4a.toString(key, 'utf8'),
    blocks,
    nodes,
    result: entry
      ? { found: true, seq: entry.seq, value: entry.value === null ? null : b64(entry.value) }
      : { found: false }
  }
}

async function fill(bee) {
  const sub = bee.sub('users')
  for (let i = 0; i < 30; i++) await bee.put('k' + String(i).padStart(3, '0'), { i })
  await bee.put('k005', { i: 5, again: true })
  await bee.del('k007')
  await bee.put('empty', null)
  await sub.put('alice', { role: 'admin' })
  await sub.put('bob', { role: 'user' })
  const batch = bee.batch()
  await batch.put('b1', 'one')
  await batch.put('b2', 'two')
  await batch.flush()
  await bee.del('k020')
  await bee.put('z-last', 'end')
}

async function demo(outDir) {
  fs.mkdirSync(outDir, { recursive: true })
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'apiary-make-bundle-'))
  const store = new Corestore(path.join(tmp, 'store'))
  const compat = new Hypercore(path.join(tmp, 'compat'), { compat: true })
  const written = []

  try {
    const bees = [
      ['store', new Hyperbee(store.get({ name: 'demo' }), { keyEncoding: 'utf-8', valueEncoding: 'json' })],
      ['compat', new Hyperbee(compat, { keyEncoding: 'utf-8', valueEncoding: 'json' })]
    ]
    for (const [name, bee] of bees) {
      await bee.ready()
      await fill(bee)
      const id = hex(bee.core.key).slice(0, 8)
      fs.writeFileSync(path.join(outDir, `${id}.KEY.txt`), hex(bee.core.key) + '\n')
      const L = bee.core.length
      const cases = [
        ['found', { key: 'k012' }],
        ['found-overwritten', { key: 'k005' }],
        ['absent', { key: 'k0125' }],
        ['deleted', { key: 'k007' }],
        ['deleted-last', { key: 'k020' }],
        ['null-value', { key: 'empty' }],
        ['sub', { key: 'users\u0000alice' }],
        ['last', { key: 'z-last' }],
        ['old-version', { key: 'k020', version: L - 1 }],
        ['before-put', { key: 'k012', version: 10 }],
        ['empty-version', { key: 'k000', version: 1 }],
        ['header-only-version', { key: 'k000', version: 2 }]
      ]
      if (name === 'compat') cases.push(['compat-form-manifest', { key: 'k012', manifest: 'compat-form' }])
      for (const [what, o] of cases) {
        const bundle = await makeBundle(bee, o)
        const file = path.join(outDir, `ok-js-${name}-${id}-${what}.json`)
        fs.writeFileSync(file, JSON.stringify(bundle, null, 2) + '\n')
        written.push(file)
      }
    }
  } finally {
    await store.close()
    await compat.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  return written
}

module.exports = { makeBundle, blocksFor, nodesFor, fill, demo }

if (require.main === module) {
  const out = process.argv[2]
  if (!out) {
    console.error('usage: make-bundle.js OUTDIR')
    process.exit(1)
  }
  demo(out).then(
    (files) => console.log(files.join('\n')),
    (err) => {
      console.error(err)
      process.exit(1)
    }
  )
}
