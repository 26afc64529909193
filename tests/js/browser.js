'use strict'
// Headless Chromium checks of Apiary's pages, driven by playwright-core with the system
// Chromium (Debian package `chromium`; set CHROMIUM to another binary if needed).
//   node browser.js publisher URL          add a movie through the form, expect it listed
//   node browser.js aggregator URL WORD    search for WORD with the search box, expect hits
//   node browser.js verified URL WORD [tamper]  wait until every hit of the merged feed, then
//       of a search for WORD, is marked by the page's in-browser proof check; report each
//       mark. With `tamper` (playwright intercepts the search and the proofs): hit 0's proof
//       gets one bit of a block flipped, hit 1 is given another hit's feed, the last hit's
//       value is changed; each of these must end up marked unverified.
//   node browser.js feeds URL KEY ADDRESS  open the Feeds view; once the row of feed KEY
//       (z-base-32) is up to date with its peer ADDRESS connected, print one JSON line
//       {stage: "indexed", ...what the row shows} and wait for a line on stdin (the caller
//       appends to the bee meanwhile); then wait, without reloading, for a longer length
//       shown, leave the view and count the /v1/feeds polls in both states.
// Prints one JSON line {ok, ...} and exits 0 on success, 1 on failure.
const readline = require('readline')
const { once } = require('events')
const { chromium } = require('playwright-core')

const [scenario, url, word, address] = process.argv.slice(2)

async function publisher (page) {
  await page.goto(url)
  await page.waitForSelector('#bee option', { state: 'attached' })
  const title = 'Alien ' + Date.now()
  await page.fill('#entry-key', 'movie-' + Date.now())
  await page.fill('#entry-value', JSON.stringify({ title }))
  await page.click('#entry-add')
  await page.waitForSelector(`#entries td:has-text("${title}")`, { timeout: 10000 })
  const rows = await page.locator('#entries tr').count()
  return { title, rows }
}

async function aggregator (page) {
  await page.goto(url)
  await page.waitForSelector('#q')
  await page.fill('#q', word)
  await page.press('#q', 'Enter')
  await page.waitForSelector('#results .entry', { timeout: 10000 })
  const hits = await page.locator('#results .entry').count()
  const text = await page.locator('#results').innerText()
  const marks = await page.locator('#results mark').allInnerTexts()
  const injected = await page.locator('#results img, #results script').count()
  return { hits, matched: text.toLowerCase().includes(word.toLowerCase()), marks, injected }
}

// Every hit's proof mark, once none is still being checked.
async function proofMarks (page, what) {
  try {
    await page.waitForFunction(() => document.querySelectorAll('#results .entry').length > 0 &&
      document.querySelectorAll('#results .entry .proof.checking').length === 0, null, { timeout: 30000, polling: 100 })
  } catch (e) {
    throw new Error(`${what}: the proof checks never ended: ${e.message.split('\n')[0]}`)
  }
  const marks = await page.$$eval('#results .entry', (es) => es.map((e) => {
    const p = e.querySelector('.proof')
    return { key: e.dataset.key, feed: e.dataset.feed, state: p.className.replace('proof ', ''), text: p.textContent, reason: p.dataset.reason, title: p.title }
  }))
  const count = (state) => marks.filter((m) => m.state === state).length
  return { hits: marks.length, verified: count('verified'), unverified: count('unverified'), unchecked: count('unchecked'), marks }
}

async function verified (page) {
  const tamper = address === 'tamper'
  const tampered = {}
  if (tamper) {
    await page.route((u) => u.pathname === '/v1/search', async (route) => {
      const response = await route.fetch()
      const body = await response.json()
      const es = body.entries || []
      if (es.length >= 3) {
        tampered.flipped = { key: es[0].key, feed: es[0].feed, proof: es[0].proof }
        const other = es.find((e) => e.feed !== es[1].feed)
        if (other) {
          tampered.otherFeed = { key: es[1].key, feed: es[1].feed, shownAs: other.feed }
          es[1].feed = other.feed
        }
        const last = es[es.length - 1]
        tampered.forged = { key: last.key, feed: last.feed, was: last.value }
        last.value = { ...last.value, title: 'Forged by the aggregator' }
      }
      await route.fulfill({ response, json: body })
    })
    await page.route((u) => u.pathname.startsWith('/v1/proofs/'), async (route) => {
      const u = new URL(route.request().url())
      const response = await route.fetch()
      if (!tampered.flipped || u.pathname + u.search !== tampered.flipped.proof) return route.fulfill({ response })
      const bundle = await response.json()
      const data = Buffer.from(bundle.blocks[0].data, 'base64')
      data[data.length - 1] ^= 0x20
      bundle.blocks[0].data = data.toString('base64')
      tampered.flipped.block = bundle.blocks[0].seq
      await route.fulfill({ response, json: bundle })
    })
  }
  await page.goto(url)
  const feed = await proofMarks(page, 'the merged feed')
  await page.fill('#q', word)
  await page.press('#q', 'Enter')
  await page.waitForFunction((word) => document.getElementById('status').textContent.includes(word), word, { timeout: 10000 })
  const search = await proofMarks(page, 'the search')
  return { feed, search, tampered }
}

// What the Feeds view shows of feed `key` (null without its row).
function feedRow (key) {
  const row = [...document.querySelectorAll('#feeds-list .feed')].find((r) => r.dataset.key === key)
  if (!row) return null
  const text = (sel) => { const e = row.querySelector(sel); return e ? e.textContent : null }
  const bar = row.querySelector('progress')
  return {
    state: row.dataset.state,
    stateText: text('.state'),
    keyText: text('.key'),
    keyTitle: row.querySelector('.key').title,
    length: Number(text('.v-length')),
    remote: Number(text('.v-remote')),
    indexed: Number(text('.v-indexed')),
    lag: Number(text('.v-lag')),
    pct: text('.pct'),
    bar: bar ? { value: bar.value, max: bar.max } : null,
    problemsShown: !row.querySelector('.problems').hidden,
    peers: [...row.querySelectorAll('.peer[data-via]')].map((p) => ({
      via: p.querySelector('.via').textContent,
      address: p.querySelector('.addr').textContent,
      connected: p.dataset.connected === 'true',
      connText: p.querySelector('.conn').textContent
    })),
    dht: document.getElementById('dht').textContent,
    count: document.getElementById('feeds-count').textContent,
    // Network text parsed as HTML would show up as elements or run a handler.
    injected: document.querySelectorAll('#feeds-view img, #feeds-view script').length > 0 || window.__xss !== undefined
  }
}

// Waits until the row of `key` is up to date, shows a length over `above` and its peer
// `address` as direct and connected; on a timeout the error carries the last row.
async function waitUpToDate (page, key, above, what, timeout) {
  try {
    await page.waitForFunction(([key, address, above]) => {
      const row = [...document.querySelectorAll('#feeds-list .feed')].find((r) => r.dataset.key === key)
      return row && row.dataset.state === 'up-to-date' &&
        Number(row.querySelector('.v-length').textContent) > above &&
        [...row.querySelectorAll('.peer[data-via]')].some((p) => p.querySelector('.addr').textContent === address &&
          p.dataset.via === 'direct' && p.dataset.connected === 'true')
    }, [key, address, above], { timeout, polling: 100 })
  } catch (e) {
    throw new Error(`${what}: ${e.message.split('\n')[0]}; row: ${JSON.stringify(await page.evaluate(feedRow, key))}`)
  }
  return page.evaluate(feedRow, key)
}

async function feeds (page) {
  const key = word
  const polls = []
  page.on('request', (r) => { if (new URL(r.url()).pathname === '/v1/feeds') polls.push(Date.now()) })
  const stdin = readline.createInterface({ input: process.stdin, terminal: false })
  const go = once(stdin, 'line')
  await page.goto(url)
  await page.click('#tab-feeds')
  const first = await waitUpToDate(page, key, -1, 'never up to date with its peer connected', 30000)
  // Marks on the page and on the row: a reload or a rebuilt row would lose them.
  await page.evaluate((key) => {
    window.__probe = 'same page'
    ;[...document.querySelectorAll('#feeds-list .feed')].find((r) => r.dataset.key === key).__probe = true
  }, key)
  console.log(JSON.stringify({ stage: 'indexed', ...first }))
  await go
  stdin.close()
  const grown = await waitUpToDate(page, key, first.length, 'the length shown never grew', 20000)
  const same = await page.evaluate((key) => ({
    samePage: window.__probe === 'same page',
    sameRow: [...document.querySelectorAll('#feeds-list .feed')].find((r) => r.dataset.key === key).__probe === true
  }), key)
  const shownAt = Date.now()
  await page.waitForTimeout(3000)
  const pollsWhileShown = polls.filter((p) => p > shownAt).length
  await page.click('#tab-entries')
  await page.waitForTimeout(300) // a poll already under way may still land
  const hiddenAt = Date.now()
  await page.waitForTimeout(2500)
  const pollsWhileHidden = polls.filter((p) => p > hiddenAt).length
  const feedsHidden = await page.locator('#feeds-view').isHidden()
  return { first, grown, ...same, pollsWhileShown, pollsWhileHidden, feedsHidden }
}

async function main () {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  try {
    const page = await browser.newPage()
    const scenarios = { publisher, aggregator, feeds, verified }
    if (!scenarios[scenario]) throw new Error('unknown scenario: ' + scenario)
    const res = await scenarios[scenario](page)
    console.log(JSON.stringify({ ok: true, ...res }))
  } finally {
    await browser.close()
  }
}

main().catch((e) => { console.log(JSON.stringify({ ok: false, error: String(e && e.message || e) })); process.exit(1) })
