//! The browse page: the merged feed, newest first, with a search box and live updates.

/// The page (static; it talks to /v1/feed, /v1/search and /v1/stream).
pub const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Apiary</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:52rem;margin:1.5rem auto;padding:0 1rem;color:#222}
header{display:flex;gap:1rem;align-items:center;flex-wrap:wrap} h1{font-size:1.3rem;margin:0}
form{flex:1;display:flex;gap:.4rem} input{flex:1;font:inherit;padding:.4rem .6rem} button{font:inherit;padding:.4rem .8rem}
.entry{border-bottom:1px solid #e3e3e3;padding:.7rem 0} .meta{color:#666;font-size:.82em;word-break:break-all}
.text{white-space:pre-wrap;margin:.25rem 0} .tag{background:#eef;border-radius:.3rem;padding:0 .3rem;margin-right:.3rem;font-size:.85em}
#status{color:#666;font-size:.9em;min-height:1.2em} #more{margin:1rem 0}
</style></head><body>
<header><h1>Apiary</h1>
<form id="search"><input id="q" name="q" type="search" placeholder="Search all followed feeds" autocomplete="off">
<button type="submit">Search</button></form></header>
<p id="status" role="status"></p>
<main id="results"></main>
<button id="more" hidden>More</button>
<script>
const $ = (id) => document.getElementById(id);
let cursor = null, mode = 'feed', query = '';
function textOf(v) {
  if (v == null) return '';
  if (typeof v === 'string') return v;
  for (const k of ['text', 'title', 'body', 'name', 'description', 'summary', 'content']) if (typeof v[k] === 'string') return v[k];
  return JSON.stringify(v);
}
function render(e, prepend) {
  const div = document.createElement('div'); div.className = 'entry';
  const t = document.createElement('div'); t.className = 'text'; t.textContent = textOf(e.value);
  const tags = document.createElement('div');
  for (const g of e.tags || []) { const s = document.createElement('span'); s.className = 'tag'; s.textContent = '#' + g; tags.appendChild(s) }
  const m = document.createElement('div'); m.className = 'meta';
  m.textContent = `${e.sortAt || ''} · ${e.type || 'entry'} · ${e.key} · seq ${e.seq} · hyper://${e.feed}`;
  div.append(t, tags, m);
  if (prepend) $('results').prepend(div); else $('results').appendChild(div);
}
async function load(reset) {
  if (reset) { cursor = null; $('results').innerHTML = '' }
  const p = new URLSearchParams({ limit: '20' });
  if (cursor) p.set('cursor', cursor);
  if (mode === 'search') p.set('q', query);
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
});
$('more').addEventListener('click', () => load(false));
try {
  const es = new EventSource('/v1/stream');
  es.addEventListener('entry', (ev) => { if (mode === 'feed') render(JSON.parse(ev.data), true) });
} catch (e) {}
load(true);
</script></body></html>
"#;
