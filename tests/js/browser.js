'use strict'
// Headless Chromium checks of Apiary's pages, driven by playwright-core with the system
// Chromium (Debian package `chromium`; set CHROMIUM to another binary if needed).
//   node browser.js publisher URL          add a movie through the form, expect it listed
//   node browser.js aggregator URL WORD    search for WORD with the search box, expect hits
// Prints one JSON line {ok, ...} and exits 0 on success, 1 on failure.
const { chromium } = require('playwright-core')

const [scenario, url, word] = process.argv.slice(2)

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
  return { hits, matched: text.toLowerCase().includes(word.toLowerCase()) }
}

async function main () {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  try {
    const page = await browser.newPage()
    const res = scenario === 'publisher' ? await publisher(page) : await aggregator(page)
    console.log(JSON.stringify({ ok: true, ...res }))
  } finally {
    await browser.close()
  }
}

main().catch((e) => { console.log(JSON.stringify({ ok: false, error: String(e && e.message || e) })); process.exit(1) })
