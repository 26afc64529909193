// Summary of run-dht.sh: reads the JSON lines of a run's work dir, writes the results file
// and prints the tables and the goals.
//   node js/summarize-dht.js WORK_DIR META_JSON RESULTS_FILE
'use strict'

const fs = require('fs')
const path = require('path')

const [work, metaText, resultsFile] = process.argv.slice(2)
const meta = JSON.parse(metaText)
const read = (name) => {
  const p = path.join(work, name)
  if (!fs.existsSync(p)) return []
  return fs.readFileSync(p, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
}
const ingest = read('ingest.jsonl')
const js = read('js.jsonl')
const first = read('first.jsonl')
const idle = read('idle.jsonl')
meta.loadavg = read('loadavg.jsonl')

const f = (x, d = 1) => (x == null || Number.isNaN(x) ? '-' : Number(x).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }))
const n0 = (x) => f(x, 0)
const table = (head, rows) => {
  const out = ['| ' + head.join(' | ') + ' |', '|' + head.map(() => ' --- |').join('')]
  for (const r of rows) out.push('| ' + r.join(' | ') + ' |')
  return out.join('\n')
}
const median = (xs) => {
  const v = xs.filter((x) => x != null && !Number.isNaN(x)).sort((a, b) => a - b)
  if (!v.length) return null
  const m = Math.floor(v.length / 2)
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2
}
const pct = (xs, p) => {
  const v = xs.filter((x) => x != null).sort((a, b) => a - b)
  return v.length ? v[Math.min(v.length - 1, Math.floor((p / 100) * v.length))] : null
}
const r2 = (x) => (x == null ? null : Math.round(x * 100) / 100)

const goals = {}
const comparison = {}
const lines = []

if (ingest.length) {
  const rows = ingest.map((r) => [
    r.case, n0(r.round),
    `${n0(r.entries)} / ${n0(r.expectedEntries)}`,
    f(r.seconds, 2),
    `**${n0(r.entriesPerSec)}**`,
    f(r.firstEntrySeconds, 2),
    r.aggCpu ? `${f(r.aggCpu.seconds, 2)} (${n0(r.aggCpu.percent)}%)` : '-',
    f(r.aggBridgeCpuSeconds, 2),
    f(r.publisherCpuSeconds, 2),
    f(r.publisherBridgeCpuSeconds, 2),
    f(r.dhtNodesCpuSeconds, 2),
    [r.aggHwmMB, r.aggBridge && r.aggBridge.vmHwmMB, r.publisher && r.publisher.vmHwmMB, r.publisherBridge && r.publisherBridge.vmHwmMB].map((x) => f(x, 0)).join(' / '),
    (r.peersVia || []).join(',') || '-'
  ])
  lines.push('1. ingest of the publisher\'s bee (POST to everything indexed): direct TCP vs by key over the DHT')
  lines.push(table(['case', 'round', 'entries', 'seconds', 'entries/s', '1st entry s', 'agg CPU s (%)', 'agg bridge CPU s', 'pub CPU s', 'pub bridge CPU s', 'DHT nodes CPU s', 'peak RSS MB: agg / agg bridge / pub / pub bridge', 'peers via'], rows))
  const direct = median(ingest.filter((r) => r.via === 'direct' && r.done).map((r) => r.entriesPerSec))
  const dht = median(ingest.filter((r) => r.via === 'dht' && r.done).map((r) => r.entriesPerSec))
  comparison.ingestDirectEntriesPerSec = direct
  comparison.ingestDhtEntriesPerSec = dht
  comparison.ingestDhtOverDirect = direct && dht ? r2(dht / direct) : null
  lines.push(`median entries/s: direct ${n0(direct)}, over the DHT ${n0(dht)}; DHT / direct = ${f(comparison.ingestDhtOverDirect, 2)}`)
  goals['ingest over the DHT >= 60% of direct TCP'] = comparison.ingestDhtOverDirect != null && comparison.ingestDhtOverDirect >= 0.6
}

if (js.length) {
  const rows = js.map((r) => [
    r.case, n0(r.round),
    n0(r.blocks),
    f(r.totalSeconds, 2),
    r.totalBlocksPerSec != null ? `**${n0(r.totalBlocksPerSec)}**` : '-',
    f(r.seconds, 2),
    n0(r.blocksPerSec),
    f(r.lookupMs != null ? r.lookupMs : r.connectMs, 1),
    `${f((r.cpuUser || 0) + (r.cpuSystem || 0), 2)} (phase ${f(r.phaseCpuSeconds, 2)})`,
    f(r.writerCpuSeconds, 2),
    f(r.dhtNodesCpuSeconds, 2),
    `${f(r.maxRssMB, 0)} / ${f(r.writerMaxRssMB, 0)}`
  ])
  lines.push('2. JS <-> JS: js/dht-reader.js (key only) and js/reader.js (TCP) from js/writer.js')
  lines.push(table(['case', 'round', 'blocks', 'from join s', 'blocks/s from join', 'download s', 'blocks/s download', 'lookup (DHT) / connect (TCP) ms', 'reader CPU s', 'writer CPU s', 'DHT nodes CPU s', 'RSS MB reader / writer'], rows))
  const jsDht = median(js.filter((r) => r.via === 'dht').map((r) => r.totalBlocksPerSec))
  const jsDhtPhase = median(js.filter((r) => r.via === 'dht').map((r) => r.blocksPerSec))
  const jsDirect = median(js.filter((r) => r.via === 'direct').map((r) => r.blocksPerSec))
  comparison.jsDhtBlocksPerSecFromJoin = jsDht
  comparison.jsDhtBlocksPerSecDownload = jsDhtPhase
  comparison.jsDirectBlocksPerSec = jsDirect
  const agg = comparison.ingestDhtEntriesPerSec
  comparison.aggDhtOverJsDht = agg && jsDht ? r2(agg / jsDht) : null
  comparison.aggDhtOverJsDhtDownloadOnly = agg && jsDhtPhase ? r2(agg / jsDhtPhase) : null
  lines.push(`median JS <-> JS over the DHT: ${n0(jsDht)} blocks/s from the join (${n0(jsDhtPhase)} download only); over TCP ${n0(jsDirect)}`)
  if (agg) {
    lines.push(`aggregator over the DHT (${n0(agg)} entries/s, POST to indexed) / JS <-> JS over the DHT: ${f(comparison.aggDhtOverJsDht, 2)}x (${f(comparison.aggDhtOverJsDhtDownloadOnly, 2)}x against its download alone)`)
    goals['aggregator over the DHT >= 3x JS <-> JS over the DHT'] = comparison.aggDhtOverJsDht != null && comparison.aggDhtOverJsDht >= 3
  }
}

if (first.length) {
  const rows = []
  for (const r of first.filter((x) => x.mode === 'warm')) {
    const a = r.all || {}
    const rest = r.restKeys || {}
    const vias = [...new Set((r.rows || []).flatMap((x) => x.via || []))].join(',')
    rows.push([r.case, `${n0(r.found)}/${n0(r.keys)}`, f(a.p50ms, 1), f(a.p90ms, 1), f(a.maxMs, 1), f(r.firstKeyMs, 1),
      rest.count ? `${f(rest.p50ms, 1)} / ${f(rest.maxMs, 1)}` : '-', vias || '-'])
  }
  const cold = first.filter((x) => x.mode === 'cold')
  const coldMs = cold.map((r) => r.rows && r.rows[0] && r.rows[0].ms)
  const coldStart = cold.map((r) => r.rows && r.rows[0] && r.rows[0].sinceStartMs)
  if (cold.length) {
    rows.push([`cold bridge (${cold.length} fresh aggregators): POST -> first entry`, `${n0(coldMs.filter((x) => x != null).length)}/${n0(cold.length)}`,
      f(pct(coldMs, 50), 1), f(pct(coldMs, 90), 1), f(Math.max(...coldMs.filter((x) => x != null)), 1), '-', '-',
      [...new Set(cold.flatMap((r) => (r.rows || []).flatMap((x) => x.via || [])))].join(',') || '-'])
    rows.push(['cold bridge: aggregator process start -> first entry', '', f(pct(coldStart, 50), 1), f(pct(coldStart, 90), 1),
      f(Math.max(...coldStart.filter((x) => x != null)), 1), '-', '-', '-'])
  }
  lines.push(`3. POST /v1/feeds {key} -> first entry in /v1/feed?feed=KEY (polled every ${meta.firstPollMs} ms), ms`)
  lines.push(table(['case', 'found', 'p50', 'p90', 'max', 'first key', 'other keys p50 / max', 'peers via'], rows))
  if (cold.length) {
    lines.push('cold trials (ms): ' + cold.map((r) => `POST->entry ${f(r.rows && r.rows[0] && r.rows[0].ms, 0)}, start->entry ${f(r.rows && r.rows[0] && r.rows[0].sinceStartMs, 0)}, bridge ready ${f(r.bridgeReadyMs, 0)}, bootstrapped ${f(r.bridgeBootstrappedMs, 0)}`).join('; '))
  }
  const warm = first.find((x) => x.mode === 'warm' && x.set === 'first')
  const peers = first.find((x) => x.mode === 'warm' && x.set === 'peers')
  comparison.firstEntryWarmP50ms = warm && warm.all ? warm.all.p50ms : null
  comparison.firstEntryNewPeerP50ms = peers && peers.all ? peers.all.p50ms : null
  comparison.firstEntryColdP50ms = pct(coldMs, 50)
  if (warm) goals['first entry p50 <= 1 s, warm bridge (bees of one publisher)'] = warm.found === warm.keys && warm.all.p50ms <= 1000
  if (peers) goals['first entry p50 <= 1 s, warm bridge, a new publisher each'] = peers.found === peers.keys && peers.all.p50ms <= 1000
}

if (idle.length) {
  for (const r of idle) {
    lines.push(`4. ${r.case}: ${n0(r.topics)} follows in ${f(r.followSeconds, 1)} s (status ${JSON.stringify(r.postStatus)}), ` +
      `every topic looked up and the bridge under 5% of a core ${f(r.allLookedUpAfterSeconds, 1)} s after the first follow (${r.settled ? 'settled' : 'NOT settled'})`)
    const rows = r.windows.map((w) => [
      `${w.window}: s ${f(w.fromSeconds, 0)}-${f(w.fromSeconds + w.seconds, 0)} after the follows`,
      `**${f(w.bridgeCpuPercent, 2)}%** (${f(w.bridgeCpuSeconds, 2)} s)`,
      `${f(w.bridgeVmRssMB, 1)} / ${f(w.bridgeVmHwmMB, 1)}`,
      `${f(w.aggCpuPercent, 2)}% (${f(w.aggCpuSeconds, 2)} s)`,
      `${f(w.aggVmRssMB, 1)} / ${f(w.aggVmHwmMB, 1)}`,
      f(w.dhtNodesCpuSeconds, 2),
      n0(w.lookupsInWindow),
      w.busySeconds.length ? w.busySeconds.map((s) => f(s, 0)).join(',') : 'none',
      f(w.bridgeCpuWithoutBusySeconds / Math.max(1, w.seconds - w.busySeconds.length) * 100, 2) + '%'
    ])
    lines.push(table(['window', 'bridge CPU (% of a core)', 'bridge RSS / HWM MB', 'agg CPU', 'agg RSS / HWM MB', 'DHT nodes CPU s', 'lookups', 'busy seconds (bridge >= 5% in that s)', 'bridge CPU outside busy s'], rows))
    r.windows.forEach((w, i) => {
      goals[`idle bridge <= 1% of a core (${w.window})`] = w.bridgeCpuPercent <= 1
      goals[`idle bridge RSS <= 100 MB (${w.window})`] = w.bridgeVmRssMB <= 100
      if (i === 0) {
        comparison.idleBridgeCpuPercent = w.bridgeCpuPercent
        comparison.idleBridgeRssMB = w.bridgeVmRssMB
      }
    })
  }
}

lines.push('goals: ' + Object.entries(goals).map(([k, v]) => `${k}: ${v ? 'met' : 'NOT met'}`).join('; '))
const results = { meta, ingest, js, first, idle, comparison, goals }
fs.writeFileSync(resultsFile, JSON.stringify(results, null, 2) + '\n')
console.log('\n' + lines.join('\n\n'))
