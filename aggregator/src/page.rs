//! The browse page: the merged feed, newest first, with a search box and live updates; and
//! a "Feeds" view of every followed bee (peers, backfill progress, errors), polled while shown.

/// The page (static; it talks to /v1/feed, /v1/search, /v1/stream, /v1/proofs, /v1/feeds and
/// /healthz). Everything that comes from the network (values, keys, addresses, errors) is put
/// in the page with `textContent`, never parsed as HTML. Each hit is marked verified or not
/// once its proof bundle is checked here, in the browser, against the hit's feed key by
/// `page/verify.js` (inlined: the page stays one response).
pub const PAGE: &str = concat!(
    r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Apiary</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:52rem;margin:1.5rem auto;padding:0 1rem;color:#222}
header{display:flex;gap:1rem;align-items:center;flex-wrap:wrap} h1{font-size:1.3rem;margin:0}
form{flex:1;display:flex;gap:.4rem} input{flex:1;font:inherit;padding:.4rem .6rem} button{font:inherit;padding:.4rem .8rem}
nav{display:flex;gap:.2rem} nav a{padding:.3rem .7rem;border-radius:.3rem;color:#336;text-decoration:none}
nav a[aria-selected=true]{background:#eef;font-weight:600}
.entry{border-bottom:1px solid #e3e3e3;padding:.7rem 0} .meta{color:#666;font-size:.82em;word-break:break-all}
.text{white-space:pre-wrap;margin:.25rem 0} .tag{background:#eef;border-radius:.3rem;padding:0 .3rem;margin-right:.3rem;font-size:.85em}
#status,#feeds-status{color:#666;font-size:.9em;min-height:1.2em} #more{margin:1rem 0}
.feed{border-bottom:1px solid #e3e3e3;padding:.7rem 0} .feed-head{display:flex;gap:.5rem;align-items:baseline;flex-wrap:wrap}
.key{cursor:pointer;word-break:break-all} .copy{font-size:.8em;padding:.05rem .45rem}
.state{margin-left:auto;font-size:.85em;padding:0 .4rem;border-radius:.3rem;background:#eee}
.feed[data-state=up-to-date] .state{background:#e4f4e4;color:#174} .feed[data-state=catching-up] .state{background:#fff3d6;color:#750}
.bar{display:flex;gap:.6rem;align-items:center;margin:.3rem 0} .bar progress{flex:1;height:.8rem} .pct{font-size:.85em;color:#555;min-width:9rem}
.stats{color:#555;font-size:.85em} .stats span{margin-right:.9rem} .stats b{font-weight:600;color:#222}
.problems{color:#a21;font-size:.85em;word-break:break-all}
.peers{list-style:none;margin:.3rem 0 0;padding:0;font-size:.85em} .peer{display:flex;gap:.5rem;align-items:baseline}
.via{background:#eef;border-radius:.3rem;padding:0 .35rem} .addr{word-break:break-all}
.peer[data-connected=true] .conn{color:#174} .peer[data-connected=false] .conn{color:#a21}
#dht.bad{color:#a21}
.proof{font-weight:600;margin-right:.4rem;word-break:normal} .proof.verified{color:#174} .proof.unverified{color:#a21} .proof.checking,.proof.unchecked{color:#777;font-weight:400}
</style></head><body>
<header><h1>Apiary</h1>
<nav role="tablist"><a id="tab-entries" role="tab" href="#feed" aria-selected="true">Feed</a><a id="tab-feeds" role="tab" href="#feeds" aria-selected="false">Feeds</a></nav>
<form id="search"><input id="q" name="q" type="search" placeholder="Search all followed feeds" autocomplete="off">
<button type="submit">Search</button></form></header>
<section id="entries-view" role="tabpanel">
<p id="status" role="status"></p>
<main id="results"></main>
<button id="more" hidden>More</button>
</section>
<section id="feeds-view" role="tabpanel" hidden>
<p id="feeds-status" role="status"><span id="feeds-count">Loading…</span> · DHT: <span id="dht">…</span> <span id="feeds-error"></span></p>
<div id="feeds-list"></div>
</section>
<script>
"##,
    include_str!("page/verify.js"),
    r##"</script>
<script>
const $ = (id) => document.getElementById(id);
let cursor = null, mode = 'feed', query = '';
function textOf(v) {
  if (v == null) return '';
  if (typeof v === 'string') return v;
  for (const k of ['text', 'title', 'body', 'name', 'description', 'summary', 'content']) if (typeof v[k] === 'string') return v[k];
  return JSON.stringify(v);
}
// A search hit's snippet is HTML made by the server: the text escaped, matches in <mark>.
// It is still not parsed as HTML here: split at the marks, entities decoded, textContent.
function showSnippet(el, html) {
  const decode = (s) => s.replace(/&(amp|lt|gt|quot|#39);/g, (_, n) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" })[n]);
  html.split(/(<mark>.*?<\/mark>)/s).forEach((part) => {
    const m = part.match(/^<mark>(.*)<\/mark>$/s);
    if (m) { const k = document.createElement('mark'); k.textContent = decode(m[1]); el.appendChild(k) }
    else if (part) el.appendChild(document.createTextNode(decode(part)));
  });
}
function render(e, prepend) {
  const div = document.createElement('div'); div.className = 'entry';
  const t = document.createElement('div'); t.className = 'text';
  if (e.snippet) showSnippet(t, e.snippet); else t.textContent = textOf(e.value);
  const tags = document.createElement('div');
  for (const g of e.tags || []) { const s = document.createElement('span'); s.className = 'tag'; s.textContent = '#' + g; tags.appendChild(s) }
  const m = document.createElement('div'); m.className = 'meta';
  m.textContent = `${e.sortAt || ''} · ${e.type || 'entry'} · ${e.key} · seq ${e.seq} · hyper://${e.feed}`;
  const mark = document.createElement('span'); mark.className = 'proof checking'; mark.textContent = 'checking proof…';
  m.prepend(mark);
  div.dataset.feed = e.feed; div.dataset.key = e.key;
  div.append(t, tags, m);
  if (prepend) $('results').prepend(div); else $('results').appendChild(div);
  queueCheck(e, mark);
}
// Each hit's proof bundle is fetched and checked here (ApiaryVerify, above) against the
// hit's feed key, key, seq, value and snippet; at most 4 at a time, after the hits are shown.
const checks = []; let checking = 0;
function queueCheck(e, mark) { checks.push([e, mark]); pumpChecks() }
function pumpChecks() {
  while (checking < 4 && checks.length) {
    const [e, mark] = checks.shift();
    if (!mark.isConnected) continue; // a hit no longer shown (a new search)
    checking++;
    ApiaryVerify.checkHit(e).catch((err) => ({ state: 'unverified', reason: String(err) }))
      .then((r) => showCheck(mark, r)).finally(() => { checking--; pumpChecks() });
  }
}
function showCheck(mark, r) {
  mark.className = `proof ${r.state}`;
  if (r.state === 'verified') {
    const p = r.proven;
    mark.textContent = '✓ verified';
    mark.title = `Checked in this browser against the feed's key: the author signed a log of ${p.length} blocks (fork ${p.fork}) in which, at bee version ${p.version}, this key holds this value (block ${p.seq}).`;
  } else if (r.state === 'unchecked') {
    mark.textContent = '? not checked'; mark.title = `The proof could not be checked here: ${r.reason}`;
  } else {
    mark.textContent = `✗ not verified: ${r.reason}`; mark.title = 'Do not trust this hit: its proof does not check out against the feed key.';
  }
  mark.dataset.reason = r.reason || '';
}
async function load(reset) {
  if (reset) { cursor = null; $('results').replaceChildren() }
  const p = new URLSearchParams({ limit: '20' });
  if (cursor) p.set('cursor', cursor);
  if (mode === 'search') { p.set('q', query); p.set('highlight', 'true') }
  const r = await fetch(`/v1/${mode}?${p}`);
  const body = await r.json();
  if (!r.ok) { $('status').textContent = body.error ? body.error.message : r.statusText; return }
  for (const e of body.entries) render(e);
  cursor = body.cursor; $('more').hidden = !cursor;
  $('status').textContent = mode === 'search' ? `Results for “${query}”` : 'Newest first, from every followed feed';
  if (!$('results').children.length) $('status').textContent += ' — nothing yet.';
}
$('search').addEventListener('submit', (ev) => {
  ev.preventDefault(); query = $('q').value.trim(); mode = query ? 'search' : 'feed'; load(true);
  if (location.hash === '#feeds') location.hash = '#feed';
});
$('more').addEventListener('click', () => load(false));
try {
  const es = new EventSource('/v1/stream');
  es.addEventListener('entry', (ev) => { if (mode === 'feed') render(JSON.parse(ev.data), true) });
} catch (e) {}
load(true);

// ---- Feeds view: one row per followed bee, updated in place from GET /v1/feeds (and the
// DHT state from /healthz) about every second while the view is shown and the tab visible.
const feedRows = new Map(); // feed key (z-base-32) -> row parts
let feedsOn = false, feedsGen = 0, feedsTimer = null;
function el(tag, cls, parent) {
  const e = document.createElement(tag); if (cls) e.className = cls; if (parent) parent.appendChild(e); return e;
}
function setText(e, t) { t = String(t); if (e.textContent !== t) e.textContent = t }
function setAttr(e, name, v) { v = String(v); if (e.getAttribute(name) !== v) e.setAttribute(name, v) }
function shortKey(k) { return k.length > 20 ? `${k.slice(0, 8)}…${k.slice(-6)}` : k }
function bytes(n) {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']; let i = 0; n = Number(n) || 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++ }
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
}
// Puts `nodes` in `parent` in this order, moving only what is out of place.
function order(parent, nodes) {
  nodes.forEach((n, i) => { if (parent.children[i] !== n) parent.insertBefore(n, parent.children[i] || null) });
  while (parent.children.length > nodes.length) parent.lastElementChild.remove();
}
function stat(parent, label) {
  const s = el('span', null, parent); s.append(label + ' '); return el('b', 'v-' + label.replace(/\s+/g, '-'), s);
}
function newFeedRow(key) {
  const r = { root: el('article', 'feed'), peerRows: new Map() };
  r.root.dataset.key = key;
  const head = el('div', 'feed-head', r.root);
  r.key = el('code', 'key', head); r.key.textContent = shortKey(key); r.key.title = `hyper://${key} (click to show it whole)`;
  r.key.addEventListener('click', () => { r.key.textContent = r.key.textContent === key ? shortKey(key) : key });
  const copy = el('button', 'copy', head); copy.type = 'button'; copy.textContent = 'copy';
  copy.addEventListener('click', async () => {
    try { await navigator.clipboard.writeText(key); copy.textContent = 'copied' } catch (e) {
      r.key.textContent = key; getSelection().selectAllChildren(r.key); copy.textContent = 'selected';
    }
    setTimeout(() => { copy.textContent = 'copy' }, 1500);
  });
  r.state = el('span', 'state', head);
  const bar = el('div', 'bar', r.root);
  r.bar = el('progress', null, bar); r.pct = el('span', 'pct', bar);
  const stats = el('div', 'stats', r.root);
  r.length = stat(stats, 'length'); r.remote = stat(stats, 'remote'); r.indexed = stat(stats, 'indexed');
  r.lag = stat(stats, 'lag'); r.down = stat(stats, 'downloaded');
  r.problems = el('div', 'problems', r.root); r.problems.hidden = true;
  r.peers = el('ul', 'peers', r.root);
  return r;
}
// Known addresses first, then the peers found otherwise; each group by how found and address
// (the server's order within a group is not stable: rows would move about).
function peerOrder(a, b) {
  const ka = [a.publicKey ? 1 : 0, a.via, a.address], kb = [b.publicKey ? 1 : 0, b.via, b.address];
  for (let i = 0; i < 3; i++) if (ka[i] !== kb[i]) return ka[i] < kb[i] ? -1 : 1;
  return 0;
}
function updatePeers(r, peers) {
  const nodes = [], seen = new Set();
  for (const p of [...(peers || [])].sort(peerOrder)) {
    const id = `${p.via} ${p.address}`;
    if (seen.has(id)) continue;
    seen.add(id);
    let q = r.peerRows.get(id);
    if (!q) {
      q = { li: el('li', 'peer') };
      q.via = el('span', 'via', q.li); q.addr = el('code', 'addr', q.li); q.conn = el('span', 'conn', q.li);
      q.via.textContent = p.via; q.addr.textContent = p.address; q.li.dataset.via = p.via;
      r.peerRows.set(id, q);
    }
    setAttr(q.li, 'data-connected', !!p.connected);
    setText(q.conn, p.connected ? 'connected' : 'not connected');
    setAttr(q.addr, 'title', p.publicKey ? `peer key ${p.publicKey}` : 'a known address of this feed');
    nodes.push(q.li);
  }
  for (const id of [...r.peerRows.keys()]) if (!seen.has(id)) r.peerRows.delete(id);
  if (!nodes.length) { const none = r.none || (r.none = el('li', 'peer')); none.textContent = 'no peer yet'; nodes.push(none) }
  order(r.peers, nodes);
}
function updateFeed(r, f) {
  const total = Math.max(f.length || 0, f.remoteLength || 0), indexed = Math.min(f.indexedVersion || 0, total);
  const state = total === 0 ? 'waiting' : f.lag === 0 ? 'up-to-date' : 'catching-up';
  setAttr(r.root, 'data-state', state);
  setText(r.state, state === 'waiting' ? 'waiting for a peer' : state === 'up-to-date' ? 'up to date' : 'catching up');
  const max = Math.max(total, 1), value = state === 'up-to-date' ? max : indexed;
  if (r.bar.max !== max) r.bar.max = max;
  if (r.bar.value !== value) r.bar.value = value;
  setText(r.pct, state === 'catching-up' ? `${Math.floor((100 * indexed) / total)}% (${indexed} of ${total})`
    : state === 'up-to-date' ? '100%' : 'nothing known yet');
  setText(r.length, f.length); setText(r.remote, f.remoteLength); setText(r.indexed, f.indexedVersion);
  setText(r.lag, f.lag); setText(r.down, `${f.blocksDownloaded} blocks, ${bytes(f.bytesDownloaded)}`);
  const sk = f.skipped || {}, problems = [];
  if (f.errors) problems.push(`${f.errors} error${f.errors === 1 ? '' : 's'}${f.lastError ? ` (last: ${f.lastError})` : ''}`);
  if (sk.tooLarge) problems.push(`${sk.tooLarge} value${sk.tooLarge === 1 ? '' : 's'} skipped as too large`);
  if (sk.notJson) problems.push(`${sk.notJson} value${sk.notJson === 1 ? '' : 's'} skipped as not JSON`);
  setText(r.problems, problems.join(' · ')); r.problems.hidden = !problems.length;
  updatePeers(r, f.peers);
}
function renderFeeds(feeds) {
  const nodes = [], seen = new Set();
  for (const f of feeds) {
    let r = feedRows.get(f.key);
    if (!r) { r = newFeedRow(f.key); feedRows.set(f.key, r) }
    updateFeed(r, f); seen.add(f.key); nodes.push(r.root);
  }
  for (const k of [...feedRows.keys()]) if (!seen.has(k)) feedRows.delete(k);
  order($('feeds-list'), nodes);
  setText($('feeds-count'), feeds.length ? `${feeds.length} feed${feeds.length === 1 ? '' : 's'} followed`
    : 'No feed followed yet (POST /v1/feeds, see /v1/openapi.json)');
}
async function pollFeeds(gen) {
  try {
    const [fr, hr] = await Promise.all([fetch('/v1/feeds', { cache: 'no-store' }), fetch('/healthz', { cache: 'no-store' })]);
    const [fb, hb] = await Promise.all([fr.json(), hr.json()]);
    if (gen !== feedsGen) return;
    if (!fr.ok) throw new Error(fb.error ? fb.error.message : fr.statusText);
    renderFeeds(fb.feeds || []);
    const dht = String(hb.dht || 'unknown');
    setText($('dht'), dht); $('dht').classList.toggle('bad', /^(unavailable|stopped)/.test(dht));
    setText($('feeds-error'), '');
  } catch (e) {
    if (gen === feedsGen) setText($('feeds-error'), `— not updated: ${e.message}`);
  }
  if (gen === feedsGen && feedsOn) feedsTimer = setTimeout(() => pollFeeds(gen), 1000);
}
// Polls while the feeds view is shown and the page visible; stops otherwise.
function feedsPolling() {
  const on = location.hash === '#feeds' && !document.hidden;
  if (on === feedsOn) return;
  feedsOn = on; feedsGen++; clearTimeout(feedsTimer);
  if (on) pollFeeds(feedsGen);
}
function showView() {
  const feeds = location.hash === '#feeds';
  $('entries-view').hidden = feeds; $('feeds-view').hidden = !feeds;
  $('tab-entries').setAttribute('aria-selected', String(!feeds)); $('tab-feeds').setAttribute('aria-selected', String(feeds));
  feedsPolling();
}
addEventListener('hashchange', showView);
document.addEventListener('visibilitychange', feedsPolling);
showView();
</script></body></html>
"##
);
