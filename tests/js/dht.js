'use strict'
// A private hyperswarm DHT for tests: one bootstrapper and N persistent nodes on one host
// (127.0.0.1 by default), nothing else reachable. Prints one JSON line
//   {"bootstrap": ["HOST:PORT"], "nodes": N}
// once every node is bootstrapped, then runs until stdin closes (or SIGTERM).
//
// Usage: node dht.js [--host 127.0.0.1] [--nodes 4] [--port 0]
const DHT = require('hyperdht')

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf('--' + name)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt
}
const HOST = opt('host', '127.0.0.1')
const N = Number(opt('nodes', 4))
const PORT = Number(opt('port', 0))

console.log = console.info = console.error

async function main() {
  // The first node bootstraps the others (as hyperdht/testnet does); any port when PORT is 0.
  const boot = new DHT({ bootstrap: [], ephemeral: false, firewalled: false, host: HOST, port: PORT })
  await boot.fullyBootstrapped()
  const bootstrap = [{ host: HOST, port: boot.address().port }]
  const nodes = [boot]
  for (let i = 0; i < N; i++) {
    const n = new DHT({ bootstrap, ephemeral: false, firewalled: false, host: HOST })
    await n.fullyBootstrapped()
    nodes.push(n)
  }
  process.stdout.write(JSON.stringify({ bootstrap: [HOST + ':' + bootstrap[0].port], nodes: nodes.length }) + '\n')
  const stop = async () => {
    for (const n of nodes.reverse()) await n.destroy().catch(() => {})
    process.exit(0)
  }
  process.stdin.on('end', stop)
  process.stdin.resume()
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}
main().catch((e) => {
  process.stderr.write('dht.js: ' + ((e && e.stack) || e) + '\n')
  process.exit(1)
})
