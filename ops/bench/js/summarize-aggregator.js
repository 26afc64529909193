// Summary of run-aggregator.sh: reads the JSON lines of a run's work dir, writes the results
// file and prints the tables and the goals.
//   node js/summarize-aggregator.js WORK_DIR META_JSON RESULTS_FILE
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
const ref = read('ref.jsonl')
const live = read('live.jsonl')
const query = read('query.jsonl')
const load = read('load.jsonl')
const feeds = read('feeds.jsonl')
const proofs = read('proofs.jsonl')
meta.loadavg = read('loadavg.jsonl')

const f = (x, d = 1) => (x == null || Number.isNaN(x) ? '-' : Number(x).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }))
const n0 = (x) => f(x, 0)
const table = (head, rows) => {
  const out = ['| ' + head.join(' | ') + ' |', '|' + head.map(() => ' --- |').join('')]
  for (const r of rows) out.push('| ' + r.join(' | ') + ' |')
  return out.join('\n')
}

const goals = {}
const lines = []

if (ingest.length || ref.length) {
  const rows = ingest.map((r) => [
    r.case,
    `${n0(r.entries)} / ${n0(r.expectedEntries)}`,
    f(r.seconds, 2),
    `**${n0(r.entriesPerSec)}**`,
    r.aggCpu ? `${f(r.aggCpu.seconds, 2)} (${n0(r.aggCpu.percent)}%)` : '-',
    f(r.aggEnd && r.aggEnd.vmHwmMB),
    f(r.writerCpuSeconds, 2),
    r.queries && r.queries.search ? `${f(r.queries.search.p50ms, 2)} / ${f(r.queries.search.p99ms, 2)}` : '-'
  ])
  for (const r of ingest.filter((x) => x.bareReplication)) {
    const b = r.bareReplication
    rows.push([
      `(ceiling) replicate-reader full <- ${r.writer} writer: replication only, no decode/index`,
      n0(b.blocks), f(b.seconds, 2), `${n0(b.blocksPerSec)} blocks/s`, `${f(b.phaseCpuSeconds, 2)} (reader)`, f(b.maxRssMB), '-', '-'
    ])
  }
  for (const r of ref) {
    const a = r.aggregator || {}
    rows.push([
      'JS reference index.js (replicate + MiniSearch)',
      `${n0(a.entries)} / ${n0(r.n)}`,
      f(a.seconds, 2),
      `**${n0(a.entriesPerSec)}**`,
      '-',
      f(a.readerMaxRssMB),
      '-',
      `${f(a.queryP50ms, 2)} / ${f(a.queryP99ms, 2)} (in process)`
    ])
  }
  lines.push('ingest, end to end (replicate + verify + decode + index)')
  lines.push(table(['case', 'entries', 'seconds', 'entries/s', 'agg CPU s (%)', 'agg peak RSS MB', 'writer CPU s', `query p50 / p99 ms (${meta.queries})`], rows))
  if (ref.length) lines.push(`query set identical to the reference index.js's: ${ref[0].querySetIdentical}`)
  for (const r of ingest) goals[`ingest >= 30k entries/s (${r.writer} writer)`] = r.done === true && r.entriesPerSec >= 30000
}

if (live.length) {
  const rows = live.map((r) => {
    const s = r.search || {}
    return [
      r.case,
      `${n0(r.received)}/${n0(r.expected)}`,
      f(r.p50ms, 2), f(r.p90ms, 2), f(r.p99ms, 2), f(r.maxMs, 2),
      s.count ? `${n0(s.count)} (${n0(s.missed)} missed): ${f(s.p50ms, 1)} / ${f(s.p90ms, 1)} / ${f(s.p99ms, 1)} / ${f(s.maxMs, 1)}` : '-',
      `${f(r.writerPutP50ms, 2)} / ${f(r.writerPutP99ms, 2)}`,
      f(r.aggCpuSeconds, 2)
    ]
  })
  lines.push('')
  lines.push(`live: a put every ${meta.liveIntervalMs} ms, ${meta.liveCount} puts; publish -> SSE event (ms), publish -> found in /v1/search (ms; poll every ${meta.livePollMs} ms)`)
  lines.push(table(['case', 'received', 'p50', 'p90', 'p99', 'max', 'search samples: p50 / p90 / p99 / max', 'writer put p50 / p99', 'agg CPU s'], rows))
  for (const r of live) {
    goals[`live ${r.case}: stream p50 <= 10 ms and p99 <= 30 ms`] = r.received === r.expected && r.p50ms <= 10 && r.p99ms <= 30
    if (r.search && r.search.count) goals[`live ${r.case}: search p99 <= 100 ms`] = r.search.missed === 0 && r.search.p99ms <= 100
  }
  const fan = live.filter((r) => r.fanout)
  if (fan.length) {
    lines.push('')
    lines.push('live, many subscribers: every post to every subscriber (ms, publish -> read by the subscriber); aggregator RSS MB before the subscribers / subscribed / at the end')
    lines.push(table(['case', 'connected', 'delivered', 'lagged subs', 'p50', 'p90', 'p99', 'max', 'RSS MB', 'agg CPU s'], fan.map((r) => {
      const o = r.fanout
      const m = r.aggVmRssMB || {}
      return [r.case, n0(o.connected), `${n0(o.received)}/${n0(o.expected)}`, n0(o.laggedSubscribers),
        f(o.p50ms, 1), f(o.p90ms, 1), f(o.p99ms, 1), f(o.maxMs, 1),
        `${f(m.beforeSubscribers)} / ${f(m.subscribed)} / ${f(m.end)}`, f(r.aggCpuSeconds, 2)]
    })))
    for (const r of fan) {
      const m = r.aggVmRssMB || {}
      goals[`live ${r.case}: every event delivered, p99 <= 200 ms, RSS growth <= 300 MB`] =
        r.fanout.received === r.fanout.expected && r.fanout.p99ms <= 200 && (m.end - m.beforeSubscribers) <= 300
    }
  }
}

if (query.length || load.length) {
  const ing = query.find((r) => r.case && r.case.startsWith('ingest of'))
  if (ing) {
    lines.push('')
    const e = ing.aggEnd || {}
    lines.push(`${ing.case}: ${n0(ing.entries)} entries in ${f(ing.seconds, 1)} s = ${n0(ing.entriesPerSec)} entries/s; agg CPU ${ing.aggCpu ? f(ing.aggCpu.seconds, 1) : '-'} s (${ing.aggCpu ? n0(ing.aggCpu.percent) : '-'}%), peak RSS ${f(e.vmHwmMB)} MB (at the end: RssAnon ${f(e.rssAnonMB)}, RssFile ${f(e.rssFileMB)}), fds ${e.fds}; farm CPU ${f(ing.farmCpuSeconds, 1)} s; complete feeds ${ing.feedsComplete}/${ing.keys}`)
    if (ing.disk) {
      const d = ing.disk
      lines.push(`disk after the ingest: sled state + blocks ${n0(d.stateMB)} MB, index ${n0(d.indexMB)} MB; bytes per entry: ${n0(d.bytesPerEntry.state)} + ${n0(d.bytesPerEntry.index)} = ${n0(d.bytesPerEntry.total)}`)
    }
  }
  const st = query.find((r) => r.case === 'settle after the ingest')
  if (st) lines.push(`settle: ${f(st.seconds, 1)} s until the aggregator was idle (merges done)${st.idle ? '' : ' -- NOT idle at the timeout: the queries ran beside background work'}`)
  const q = query.find((r) => r.case && r.case.startsWith('sequential'))
  if (q && q.search) {
    const rows = [['search: reference set (1-2 words, AND)', q.search], ['search: page 2 (cursor)', q.searchPage2]]
    if (q.searchTypo && q.searchTypo.count) rows.push(['search: one typo (200)', q.searchTypo])
    if (q.searchPrefix && q.searchPrefix.count) rows.push(['search: prefix of 3 letters (200)', q.searchPrefix])
    rows.push(['feed: all kinds', q.feed])
    for (const [k, v] of Object.entries(q.feedByKind || {})) rows.push([`feed: ${k}`, v])
    lines.push('')
    lines.push(`${q.case}, one request at a time (ms, client side, HTTP included)`)
    lines.push(table(['requests', 'count', 'p50', 'p90', 'p99', 'max', 'mean', 'avg returned', 'errors'], rows.map(([k, v]) => [
      k, n0(v.count), f(v.p50ms, 2), f(v.p90ms, 2), f(v.p99ms, 2), f(v.maxMs, 2), f(v.meanMs, 2), f(v.avgReturned), n0(v.errors)
    ])))
    goals['query: search p99 <= 20 ms (sequential, ' + (q.case.match(/at (\d+)/) || [])[1] + ' entries)'] = q.search.errors === 0 && q.search.p99ms <= 20
    goals['query: feed pages p99 <= 20 ms (sequential)'] = q.feed.errors === 0 && q.feed.p99ms <= 20
    // Issue 13: typo and prefix queries p99 <= 20 ms at 1M entries.
    for (const [k, v] of [['typo', q.searchTypo], ['prefix', q.searchPrefix]]) {
      if (v && v.count) goals[`query: ${k} search p99 <= 20 ms (sequential)`] = v.errors === 0 && v.p99ms <= 20
    }
  }
  if (ref.length && ref[0].aggregator) {
    lines.push(`JS reference (MiniSearch, in process, ${n0(ref[0].n)} docs): p50 ${f(ref[0].aggregator.queryP50ms, 2)} ms, p99 ${f(ref[0].aggregator.queryP99ms, 2)} ms, ${n0(ref[0].aggregator.avgHits)} hits per query on average`)
  }
  if (load.length) {
    lines.push('')
    lines.push(`load: agg-client load (1 tokio thread, on the same 2 cores), ${meta.loadSeconds} s per row`)
    lines.push(table(['URL set', 'connections', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'non-200', 'agg CPU %', 'client CPU s'], load.map((r) => [
      r.set, n0(r.connections), `**${n0(r.reqPerSec)}**`, f(r.p50ms, 2), f(r.p99ms, 2), f(r.maxMs, 1),
      n0(Object.entries(r.status || {}).filter(([k]) => k !== '200').reduce((a, [, v]) => a + v, 0)),
      n0(r.aggCpuPercent), f(r.clientCpuSeconds, 2)
    ])))
    const during = load.filter((x) => x.during)
    if (during.length) {
      lines.push('during an ingest: ' + during.map((r) => `${r.set} x ${r.connections}: ingest ${n0(r.ingestEntriesPerSec)} entries/s, ${r.ingestRunning ? 'still running at the end of the row' : 'OVER BEFORE THE END OF THE ROW'}`).join('; '))
    }
    // Issue 12 ("read path at scale"): at 1M entries, 64 connections.
    for (const r of load.filter((x) => x.connections === 64 && !x.during)) {
      const [rps, p99] = r.set === 'feed' ? [10000, 20] : [3000, 50]
      goals[`load: ${r.set} x 64 >= ${rps} req/s, p99 <= ${p99} ms`] = r.reqPerSec >= rps && r.p99ms <= p99
    }
  }
  // Issue 12: RSS <= 512 MB at 1M entries, <= 1 GiB at 10M; sequential p99 at 10M.
  const entries = ing ? ing.entries : 0
  if (ing && ing.aggEnd && entries >= 1e6) {
    const limit = entries >= 1e7 ? 1024 : 512
    const peaks = [['ingest: peak (VmHWM; anon: its peak while polled)', ing.aggEnd.vmHwmMB, ing.aggMaxRssAnonMBWhilePolling, null],
      ['end of the ingest', ing.aggEnd.vmRssMB, ing.aggEnd.rssAnonMB, ing.aggEnd.rssFileMB]]
    // Rows during an ingest are at more entries than the goal's: shown in the load table only.
    for (const r of load.filter((x) => !x.during)) peaks.push([`load ${r.set} x ${r.connections}`, r.aggVmRssMB, r.aggRssAnonMB, r.aggRssFileMB])
    lines.push('')
    lines.push(`aggregator memory at ${n0(entries)} entries (MB; file = mapped index pages, reclaimable page cache)`)
    lines.push(table(['when', 'RSS', 'anon', 'file'], peaks.map(([k, a, b, c]) => [k, f(a), f(b), f(c)])))
    const max = (i) => Math.max(...peaks.map((p) => p[i] || 0))
    goals[`memory: RSS <= ${limit} MB at ${n0(entries)} entries (ingest peak and under load)`] = max(1) <= limit
    goals[`memory: anonymous RSS <= ${limit} MB at ${n0(entries)} entries (mapped index pages left out)`] = max(2) <= limit
    // MEMORY_LIMIT_MB: the whole run in a memory cgroup (page cache included).
    const after = query.find((r) => r.case === 'aggregator after queries and load')
    const cg = after && after.cgroup
    if (cg) {
      lines.push(`memory cgroup (page cache included): limit ${n0(cg.limitMB)} MB, peak ${f(cg.peakMB)} MB, OOM kills ${cg.oomKills}`)
      goals[`memory: ingest, queries and load within a ${n0(cg.limitMB)} MB memory cgroup, no OOM kill`] =
        cg.limitMB <= limit && cg.oomKills === 0 && ing.done === true && q != null && q.search.errors === 0
    }
  }
  if (q && entries >= 1e7) {
    goals['query: search p99 <= 20 ms and feed p99 <= 10 ms (sequential, 10M)'] = q.search.errors === 0 && q.search.p99ms <= 20 && q.feed.errors === 0 && q.feed.p99ms <= 10
  }
  if (q) {
    goals['query: search and feed p99 <= 10 ms (sequential)'] = q.search.errors === 0 && q.search.p99ms <= 10 && q.feed.errors === 0 && q.feed.p99ms <= 10
  }
}

if (feeds.length) {
  const r = feeds[0]
  lines.push('')
  lines.push(r.case)
  lines.push(table(['figure', 'value'], [
    ['POST /v1/feeds: all keys followed (s)', `${f(r.followSeconds, 2)} (${n0(r.followPerSec)}/s; POST p50 ${f(r.postLatency && r.postLatency.p50ms, 2)} ms, p99 ${f(r.postLatency && r.postLatency.p99ms, 2)} ms)`],
    ['first entry indexed (s after the first POST)', f(r.firstEntrySeconds, 2)],
    ['all entries indexed (s after the first POST)', `${f(r.seconds, 2)} (${n0(r.entries)} / ${n0(r.expectedEntries)} entries; ${r.done ? 'done' : 'NOT done'})`],
    ['feeds complete (indexedVersion == length)', `${n0(r.feedsComplete)} / ${n0(r.keys)}`],
    ['agg CPU over the whole (s)', r.aggCpu ? `${f(r.aggCpu.seconds, 2)} (${n0(r.aggCpu.percent)}%)` : '-'],
    ['agg VmRSS at the end / 5 s later (MB)', `${f(r.aggEnd && r.aggEnd.vmRssMB)} / ${f(r.aggSettled5s && r.aggSettled5s.vmRssMB)}`],
    ['agg VmHWM (MB)', f(r.aggSettled5s && r.aggSettled5s.vmHwmMB)],
    ['agg RssAnon / RssFile 5 s later (MB)', `${f(r.aggSettled5s && r.aggSettled5s.rssAnonMB)} / ${f(r.aggSettled5s && r.aggSettled5s.rssFileMB)}`],
    ['agg open fds: at the end / max while polling / 5 s later', `${r.aggEnd && r.aggEnd.fds} / ${r.aggMaxFdsWhilePolling} / ${r.aggSettled5s && r.aggSettled5s.fds}`],
    ['agg threads', `${r.aggSettled5s && r.aggSettled5s.threads}`],
    ['ingest errors', `${r.ingestErrors} (feed errors ${r.feedErrors})`]
  ].map(([k, v]) => [k, v])))
  const hwm = r.aggSettled5s ? r.aggSettled5s.vmHwmMB : null
  const fds = Math.max(r.aggMaxFdsWhilePolling || 0, (r.aggSettled5s && r.aggSettled5s.fds) || 0)
  goals[`feeds: ${r.keys} feeds indexed`] = r.done === true && r.feedsComplete === r.keys
  goals['feeds: peak RSS <= 1 GiB'] = hwm != null && hwm <= 1024
  goals['feeds: open fds <= 256'] = fds > 0 && fds <= 256
}

if (proofs.length) {
  const ing = proofs.filter((r) => r.disk)
  lines.push('')
  lines.push('retention: ingest and disk once idle')
  lines.push(table(['retention', 'entries/s', 'agg CPU (s)', 'state MB', 'spool MB', 'index MB', 'total MB', 'bytes/entry', 'blocks dropped'],
    ing.map((r) => [r.retention, n0(r.entriesPerSec), f(r.aggCpu && r.aggCpu.seconds, 1), n0(r.disk.stateMB), n0(r.disk.spoolMB), n0(r.disk.indexMB),
      n0(r.disk.totalMB), n0(r.disk.bytesPerEntry), n0(r.disk.blocksDropped)])))
  const pr = proofs.filter((r) => r.latencyMs)
  lines.push('')
  lines.push('proofs: one request at a time, the first hit of each reference query')
  lines.push(table(['case', 'proofs (full / inclusion)', 'errors', 'p50 ms', 'p99 ms', 'bytes p50 / p99', 'blocks mean', 'nodes mean', 'Rust verify p50 / p99 µs', 'JS verify p50 / p99 µs'],
    pr.map((r) => [r.label, `${r.proofs} (${r.fullBundles} / ${r.inclusionProofs})`, `${r.errors} (refused ${r.refusedByVerify})`,
      f(r.latencyMs.p50, 2), f(r.latencyMs.p99, 2), `${n0(r.bytes.p50)} / ${n0(r.bytes.p99)}`, f(r.blocks.mean), f(r.nodes.mean),
      `${f(r.rustVerifyUs.p50)} / ${f(r.rustVerifyUs.p99)}`, r.js && r.js.jsVerifyUs ? `${f(r.js.jsVerifyUs.p50)} / ${f(r.js.jsVerifyUs.p99)}` : '-'])))
  const by = (ret) => ing.find((r) => r.retention === ret)
  const [rep, io] = [by('replica'), by('index-only')]
  if (rep && io) {
    goals['proofs: index-only disk <= 50% of replica'] = io.disk.totalMB <= 0.5 * rep.disk.totalMB
    goals['proofs: index-only ingest within 10% of replica'] = io.entriesPerSec >= 0.9 * rep.entriesPerSec
  }
  const held = pr.find((r) => r.retention === 'replica')
  const fetched = pr.find((r) => r.retention === 'index-only' && r.fullBundles > 0)
  if (held) goals['proofs: p99 <= 5 ms with blocks held'] = held.errors === 0 && held.latencyMs.p99 <= 5
  if (fetched) goals['proofs: p99 <= 50 ms with blocks fetched'] = fetched.errors === 0 && fetched.latencyMs.p99 <= 50
}

lines.push('')
lines.push('goals:')
for (const [k, v] of Object.entries(goals)) lines.push(`  ${v ? 'met    ' : 'NOT met'}  ${k}`)
lines.push(`load average: ${meta.loadavg.map((l) => `${l.at} ${l.loadavg}`).join('; ')}`)
console.log(lines.join('\n'))

fs.writeFileSync(resultsFile, JSON.stringify({ meta, ingest, reference: ref, live, query, load, feeds, proofs, goals }, null, 2) + '\n')
