//! The local page and its JSON endpoints (127.0.0.1 by default; no login, so keep it local).
//!
//! ```text
//! GET    /                               the page: add an entry or a post, see the entries
//! GET    /api/bees                       [{name, key, hex, length, version}]
//! GET    /api/bees/{name}/entries        ?prefix=&reverse=&limit=  → [{key, seq, value}]
//! POST   /api/bees/{name}/entries        {key, value}              → {key, seq}
//! DELETE /api/bees/{name}/entries/{key}                            → {deleted, seq}
//! POST   /api/bees/{name}/posts          {text, tags?}             → {key, seq, value}
//! ```
//! Errors are `{"error": message}` with 400, 404 or 500. The handlers call the functions of
//! `commands`, as the CLI does, so both write and fail alike.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::bees::Bees;
use crate::error::{Error, Result};
use crate::{commands, entries};

struct ApiError(Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            Error::BadInput(_) | Error::Config(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"error": self.0.to_string()}))).into_response()
    }
}

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// Starts the page on `addr`; returns the bound address and the server task.
pub async fn serve(
    bees: Arc<Bees>,
    addr: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/bees", get(list_bees))
        .route(
            "/api/bees/{name}/entries",
            get(list_entries).post(put_entry),
        )
        .route("/api/bees/{name}/entries/{key}", delete(del_entry))
        .route("/api/bees/{name}/posts", post(add_post))
        .layer(DefaultBodyLimit::max(entries::MAX_VALUE + 64 * 1024))
        .with_state(bees);
    // A page for one person: a few connections per address, with the same header and
    // stalled-write timeouts as the aggregator's API.
    let gate = apiary_net::gate::Gate::new(
        "page",
        apiary_net::gate::Limits {
            total: 256,
            per_ip: 32,
        },
    );
    let listener = apiary_net::listen::bind(addr)
        .map_err(|e| Error::io(std::path::Path::new(&addr.to_string()), e))?;
    let listener = apiary_net::listen::GatedListener::new(listener, gate);
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io(std::path::Path::new("page"), e))?;
    let task = apiary_net::http::serve(listener, app, apiary_net::http::HttpTimeouts::default());
    Ok((bound, task))
}

async fn list_bees(State(bees): State<Arc<Bees>>) -> ApiResult<Json<Value>> {
    Ok(Json(Value::Array(commands::bee_rows(&bees)?)))
}

#[derive(Deserialize)]
struct ListQuery {
    prefix: Option<String>,
    #[serde(default)]
    reverse: bool,
    limit: Option<usize>,
}

async fn list_entries(
    State(bees): State<Arc<Bees>>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let w = bees.writer(&name)?;
    let limit = Some(q.limit.unwrap_or(100).min(10_000));
    Ok(Json(Value::Array(
        crate::jsonl::list(w.bee(), q.prefix.as_deref(), q.reverse, limit).await?,
    )))
}

#[derive(Deserialize)]
struct PutBody {
    key: String,
    value: Value,
}

async fn put_entry(
    State(bees): State<Arc<Bees>>,
    Path(name): Path<String>,
    body: std::result::Result<Json<PutBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body.map_err(|e| {
        Error::BadInput(format!(
            "body must be {{\"key\": string, \"value\": JSON}}: {e}"
        ))
    })?;
    entries::check_key(&b.key)?;
    let value = entries::encode_value(&b.value)?;
    Ok(Json(commands::put(&bees, &name, &b.key, &value).await?))
}

async fn del_entry(
    State(bees): State<Arc<Bees>>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(commands::del(&bees, &name, &key).await?))
}

#[derive(Deserialize)]
struct PostBody {
    text: String,
    #[serde(default)]
    tags: Vec<String>,
}

async fn add_post(
    State(bees): State<Arc<Bees>>,
    Path(name): Path<String>,
    body: std::result::Result<Json<PostBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body.map_err(|e| {
        Error::BadInput(format!(
            "body must be {{\"text\": string, \"tags\": [..]}}: {e}"
        ))
    })?;
    Ok(Json(commands::post(&bees, &name, &b.text, &b.tags).await?))
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Apiary publisher</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.4 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem} form{display:flex;gap:.5rem;flex-wrap:wrap;margin:.5rem 0 1rem}
input,textarea,select,button{font:inherit;padding:.35rem .5rem} textarea{flex:1 1 20rem;min-height:2.2rem}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left;vertical-align:top}
code{font-size:.85em;word-break:break-all} #msg{min-height:1.3rem;color:#a00} .key{color:#555}
</style></head><body>
<h1>Apiary publisher</h1>
<p>Bee: <select id="bee"></select> <span class="key" id="beekey"></span></p>
<h2>Add an entry</h2>
<form id="entry-form">
 <input id="entry-key" name="key" placeholder="key" required>
 <textarea id="entry-value" name="value" placeholder='{"title": "Alien"}' required></textarea>
 <button id="entry-add" type="submit">Add entry</button>
</form>
<h2>Write a post</h2>
<form id="post-form">
 <textarea id="post-text" name="text" placeholder="What's new?" required></textarea>
 <input id="post-tags" name="tags" placeholder="tags, comma separated">
 <button id="post-add" type="submit">Post</button>
</form>
<div id="msg" role="status"></div>
<h2>Entries <small>(newest keys first)</small></h2>
<table><thead><tr><th>key</th><th>seq</th><th>value</th></tr></thead><tbody id="entries"></tbody></table>
<script>
const $ = (id) => document.getElementById(id);
const api = async (path, opts) => {
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
};
const bee = () => encodeURIComponent($('bee').value);
async function loadBees() {
  const bees = await api('/api/bees');
  $('bee').innerHTML = '';
  for (const b of bees) {
    const o = document.createElement('option'); o.value = b.name; o.textContent = b.name; o.dataset.key = b.key;
    $('bee').appendChild(o);
  }
  if (!bees.length) { $('msg').textContent = 'No bees yet: run `apiary-publisher init NAME`.'; return; }
  await refresh();
}
async function refresh() {
  const sel = $('bee').selectedOptions[0];
  $('beekey').textContent = sel ? sel.dataset.key : '';
  const rows = await api(`/api/bees/${bee()}/entries?reverse=true&limit=200`);
  const tb = $('entries'); tb.innerHTML = '';
  for (const e of rows) {
    const tr = document.createElement('tr');
    for (const t of [e.key, String(e.seq), JSON.stringify(e.value)]) {
      const td = document.createElement('td'); const c = document.createElement('code'); c.textContent = t; td.appendChild(c); tr.appendChild(td);
    }
    tb.appendChild(tr);
  }
}
$('bee').addEventListener('change', () => refresh().catch((e) => { $('msg').textContent = e.message }));
$('entry-form').addEventListener('submit', async (ev) => {
  ev.preventDefault(); $('msg').textContent = '';
  try {
    let value;
    try { value = JSON.parse($('entry-value').value) } catch { throw new Error('The value must be JSON, e.g. {"title": "Alien"}') }
    await api(`/api/bees/${bee()}/entries`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: $('entry-key').value, value }) });
    $('entry-key').value = ''; $('entry-value').value = '';
    await refresh();
  } catch (e) { $('msg').textContent = e.message }
});
$('post-form').addEventListener('submit', async (ev) => {
  ev.preventDefault(); $('msg').textContent = '';
  try {
    const tags = $('post-tags').value.split(',').map((t) => t.trim()).filter(Boolean);
    await api(`/api/bees/${bee()}/posts`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: $('post-text').value, tags }) });
    $('post-text').value = ''; $('post-tags').value = '';
    await refresh();
  } catch (e) { $('msg').textContent = e.message }
});
loadBees().catch((e) => { $('msg').textContent = e.message });
</script></body></html>
"#;
