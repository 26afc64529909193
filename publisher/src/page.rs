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
//! Errors are `{"error": {"code", "message"}}`, as on the control socket, with the status
//! [`Error::http_status`] gives the code: 400 (input, also a body, query or path the
//! endpoint cannot read), 404 (no such bee, entry or endpoint), 503/504 (the network did not
//! give what was needed), 500. The handlers call the functions of `commands`, as the CLI
//! does, so both write and fail alike.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::bees::Bees;
use crate::error::{Error, Result};
use crate::{commands, entries};

struct ApiError(Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0.http_status(), Json(self.0.to_json())).into_response()
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
        .fallback(|| async { ApiError(Error::NotFound("no such page or endpoint".into())) })
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

/// A path whose parameters cannot be decoded (e.g. not UTF-8 once percent-decoded).
fn bad_path(e: PathRejection) -> Error {
    Error::BadInput(e.body_text())
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
    name: std::result::Result<Path<String>, PathRejection>,
    q: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name.map_err(bad_path)?;
    let Query(q) = q.map_err(|e| Error::BadInput(e.body_text()))?;
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
    name: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Json<PutBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name.map_err(bad_path)?;
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
    path: std::result::Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path((name, key)) = path.map_err(bad_path)?;
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
    name: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Json<PostBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name.map_err(bad_path)?;
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
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    /// The page on a scratch data directory with one bee, "movies"; its base URL.
    async fn page() -> (tempfile::TempDir, String, tokio::task::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let bees = Arc::new(Bees::open(dir.path()).unwrap());
        bees.create("movies", false).await.unwrap();
        let (addr, task) = serve(bees, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        (dir, format!("http://{addr}"), task)
    }

    async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_are_json_with_a_code_and_a_message() {
        let (_dir, base, task) = page().await;
        let c = reqwest::Client::new();
        let entries = format!("{base}/api/bees/movies/entries");
        let (s, v) = call(
            c.post(&entries)
                .json(&json!({"key": "m1", "value": {"title": "Alien"}})),
        )
        .await;
        assert_eq!((s, &v), (200, &json!({"key": "m1", "seq": 1})));
        let cases = [
            (
                c.get(format!("{base}/api/bees/nope/entries")),
                404,
                "not_found",
            ),
            (c.get(format!("{entries}?limit=many")), 400, "bad_input"),
            (
                c.get(format!("{base}/api/bees/%FF/entries")),
                400,
                "bad_input",
            ),
            (
                c.post(&entries).json(&json!({"key": "", "value": 1})),
                400,
                "bad_input",
            ),
            (
                c.post(&entries)
                    .header("content-type", "application/json")
                    .body("{not json"),
                400,
                "bad_input",
            ),
            (c.delete(format!("{entries}/missing")), 404, "not_found"),
            (
                c.post(format!("{base}/api/bees/movies/posts"))
                    .json(&json!({"tags": []})),
                400,
                "bad_input",
            ),
            (c.get(format!("{base}/api/nothing")), 404, "not_found"),
        ];
        for (req, status, code) in cases {
            let (s, v) = call(req).await;
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (status, Some(code)),
                "{v}"
            );
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{v}"
            );
        }
        task.abort();
    }

    #[test]
    fn the_page_reads_the_message_of_an_error() {
        assert!(PAGE.contains("body.error && body.error.message"));
    }
}
