// Deterministic "social post" dataset for the replication benchmark.
//
// This mirrors the generator of the JS reference benchmark
// (../shared/bench/js-reference/lib.js: prng, VOCAB, TAGS, word, tid, post) EXACTLY:
// same mulberry32 PRNG, same seeds (posts: 1, vocabulary: 42), same syllables, tags,
// Zipf-like word pick, TID-like keys and timestamps. So the bee built here is
// byte-for-byte the same dataset as the reference's (100k posts -> 100,001 blocks, ~359 B each).
// `node js/data.js --check` compares it against the reference lib.js when that is reachable.
'use strict'

// mulberry32: returns a function giving floats in [0, 1).
function prng (seed) {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// 2000 pseudo-words made of 1-3 syllables, at least 3 characters, in first-seen order (seed 42).
const SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ra', 'to', 'su', 'vi', 'de', 'po', 'an', 'el', 'or', 'un', 'is', 'ba', 'ge', 'hu', 'fi', 'zo', 'ch', 'st', 'tr', 'pl']
const VOCAB = buildVocab()
function buildVocab () {
  const rand = prng(42)
  const words = new Set()
  while (words.size < 2000) {
    const syllables = 1 + Math.floor(rand() * 3)
    let w = ''
    for (let k = 0; k < syllables; k++) w += SYLLABLES[Math.floor(rand() * SYLLABLES.length)]
    if (w.length >= 3) words.add(w)
  }
  return Array.from(words)
}

const TAGS = ['news', 'tech', 'rust', 'p2p', 'music', 'art', 'sports', 'food', 'travel', 'photo', 'science', 'politics', 'games', 'books', 'dev', 'meme']

// Zipf-like: rank = floor(V * u^2.5).
function pickWord (rand) {
  return VOCAB[Math.floor(VOCAB.length * Math.pow(rand(), 2.5))]
}

// 11 base32-sortable characters of the microsecond timestamp, then 2 of clock id.
const B32 = '234567abcdefghijklmnopqrstuvwxyz'
function tid (micros, clock = 0) {
  let n = BigInt(micros)
  const chars = []
  for (let k = 0; k < 11; k++) {
    chars.unshift(B32[Number(n & 31n)])
    n >>= 5n
  }
  return chars.join('') + B32[(clock >> 5) & 31] + B32[clock & 31]
}

// Post i: 2024-01-01 + i * 1.7 s + up to 1 s jitter; 20-60 words; 0-3 tags.
// The PRNG calls happen in the same order as the reference (jitter, word count, words, tag count, tags).
const T0 = Date.UTC(2024, 0, 1)
function post (i, rand) {
  const ms = T0 + i * 1700 + Math.floor(rand() * 1000)
  const wordCount = 20 + Math.floor(rand() * 41)
  const words = []
  for (let k = 0; k < wordCount; k++) words.push(pickWord(rand))
  const tagCount = Math.floor(rand() * 4)
  const tags = []
  for (let k = 0; k < tagCount; k++) tags.push(TAGS[Math.floor(rand() * TAGS.length)])
  return {
    key: tid(ms * 1000 + (i % 1000)),
    value: { type: 'post', text: words.join(' '), createdAt: new Date(ms).toISOString(), tags }
  }
}

module.exports = { prng, VOCAB, TAGS, tid, post }

// `node js/data.js --lines [n]`: the dataset as text, for `bench-data --check` (the Rust port):
// a line `vocab <the 2000 words, comma separated>`, then one line per post:
// `<key> <JSON.stringify(value)>`.
if (require.main === module && process.argv[2] === '--lines') {
  const n = Number(process.argv[3] || 100000)
  const rand = prng(1)
  const chunks = ['vocab ' + VOCAB.join(',') + '\n']
  for (let i = 0; i < n; i++) {
    const p = post(i, rand)
    chunks.push(p.key + ' ' + JSON.stringify(p.value) + '\n')
    if (chunks.length >= 4096) process.stdout.write(chunks.splice(0).join(''))
  }
  process.stdout.write(chunks.join(''))
}

// `node js/data.js --jsonl [n] [seed]`: the posts as `apiary-publisher import` lines,
// `{"key": …, "value": {…}}` (run-dht.sh imports the 100k posts into a publisher bee this way).
if (require.main === module && process.argv[2] === '--jsonl') {
  const n = Number(process.argv[3] || 100000)
  const rand = prng(Number(process.argv[4] || 1))
  const chunks = []
  for (let i = 0; i < n; i++) {
    chunks.push(JSON.stringify(post(i, rand)) + '\n')
    if (chunks.length >= 4096) process.stdout.write(chunks.splice(0).join(''))
  }
  process.stdout.write(chunks.join(''))
}

// `node js/data.js --check [n]`: same posts as the reference generator?
if (require.main === module && process.argv[2] === '--check') {
  const path = require('path')
  const n = Number(process.argv[3] || 100000)
  process.env.NODE_PATH = path.join(__dirname, '../../../tests/js/node_modules')
  require('module').Module._initPaths()
  const ref = require(path.join(__dirname, '../../../../shared/bench/js-reference/lib.js'))
  const a = prng(1)
  const b = ref.prng(1)
  let bytes = 0
  for (let i = 0; i < n; i++) {
    const x = JSON.stringify(post(i, a))
    const y = JSON.stringify(ref.post(i, b))
    if (x !== y) {
      console.error(`post ${i} differs:\n  ours: ${x}\n  ref:  ${y}`)
      process.exit(1)
    }
    bytes += x.length
  }
  if (JSON.stringify(VOCAB) !== JSON.stringify(ref.VOCAB)) {
    console.error('VOCAB differs')
    process.exit(1)
  }
  console.log(`ok: ${n} posts identical to the reference generator (${bytes} bytes of JSON)`)
}
