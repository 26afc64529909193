// Shared helpers of the benchmark scripts: the JS packages (taken from tests/js/node_modules,
// the versions the interop tests pin: hypercore 11.37.1, hyperbee 2.27.3, corestore 7.12.5),
// a tiny CLI parser and process stats.
'use strict'

const path = require('path')

const NODE_MODULES = path.join(__dirname, '../../../tests/js/node_modules')
const dep = (name) => require(path.join(NODE_MODULES, name))

// --name value | --name=value; numbers where the default is a number.
function args (defaults) {
  const out = { ...defaults }
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) continue
    const eq = argv[i].indexOf('=')
    const name = eq === -1 ? argv[i].slice(2) : argv[i].slice(2, eq)
    const value = eq === -1 ? argv[++i] : argv[i].slice(eq + 1)
    if (!(name in defaults)) throw new Error(`unknown option --${name}`)
    out[name] = typeof defaults[name] === 'number' ? Number(value) : value
  }
  return out
}

const round = (x, digits = 3) => (x == null ? x : Math.round(x * 10 ** digits) / 10 ** digits)

// Peak resident set (maxRSS is in KiB on Linux).
const maxRssMB = () => round(process.resourceUsage().maxRSS / 1024, 1)

// CPU time of this process so far, in seconds.
function cpu () {
  const u = process.cpuUsage()
  return { user: round(u.user / 1e6, 3), system: round(u.system / 1e6, 3) }
}

// Only JSON result lines go to stdout; anything a library logs goes to stderr.
function quietStdout () {
  const out = (line) => process.stdout.write(line + '\n')
  console.log = console.info = console.debug = console.error
  return out
}

module.exports = { dep, args, round, maxRssMB, cpu, quietStdout }
