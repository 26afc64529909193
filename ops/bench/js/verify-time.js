'use strict'
// The JS verifier's time per bundle: every *.json in DIR (written by proof-client --out)
// checked with tests/js/verify-bundle.js (hypercore-crypto, hyperbee's encoding), each 5
// times after a warm-up pass. Prints one JSON line: {count, refused, jsVerifyUs: {p50, p99,
// max, mean}}.
//   node js/verify-time.js DIR
const fs = require('fs')
const path = require('path')
const { verifyBundle } = require('../../../tests/js/verify-bundle.js')

const dir = process.argv[2]
const bundles = fs.readdirSync(dir).filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')))
let refused = 0
const check = (b) => {
  try {
    verifyBundle(b, Buffer.from(b.feed, 'hex'))
    return true
  } catch {
    return false
  }
}
for (const b of bundles) if (!check(b)) refused++
const us = []
for (let round = 0; round < 5; round++) {
  for (const b of bundles) {
    const t = process.hrtime.bigint()
    check(b)
    us.push(Number(process.hrtime.bigint() - t) / 1000)
  }
}
us.sort((a, b) => a - b)
const at = (p) => us.length ? Math.round(us[Math.round((p / 100) * (us.length - 1))] * 10) / 10 : null
const mean = us.length ? Math.round(us.reduce((a, b) => a + b, 0) / us.length * 10) / 10 : null
console.log(JSON.stringify({ count: bundles.length, refused, jsVerifyUs: { p50: at(50), p99: at(99), max: at(100), mean } }))
