//! The HTTP API (JSON, versioned under /v1), the browse page, health and metrics.
//!
//! Every response error is JSON with a code (see [`crate::error::Error::status`]). Per client
//! IP rate limits (governor), body size limits and request timeouts apply to every route.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use apiary_core::Key;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use crate::error::{Error, Result};
use crate::follow::Aggregator;
use crate::index::Filters;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Http {
    agg: Arc<Aggregator>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    registrations: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    metrics: Arc<crate::metrics::Exporter>,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// Builds the router.
pub fn router(agg: Arc<Aggregator>) -> Router {
    let cfg = &agg.cfg;
    let limiter = Arc::new(RateLimiter::keyed(
        Quota::per_second(nz(cfg.rate_limit_per_second)).allow_burst(nz(cfg.rate_limit_burst)),
    ));
    let registrations = Arc::new(RateLimiter::keyed(
        Quota::per_hour(nz(cfg.registrations_per_hour)).allow_burst(nz(cfg.registrations_per_hour)),
    ));
    let body_limit = cfg.max_body_bytes;
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    let state = Http {
        agg,
        limiter: limiter.clone(),
        registrations: registrations.clone(),
        metrics: Arc::new(crate::metrics::Exporter::new()),
    };
    // Forget idle clients now and then, so the limiters' memory stays bounded.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            limiter.retain_recent();
            registrations.retain_recent();
        }
    });
    Router::new()
        .route("/", get(|| async { Html(crate::page::PAGE) }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route("/v1/feeds", get(list_feeds).post(add_feed))
        .route("/v1/feeds/{key}", get(get_feed).delete(remove_feed))
        .route("/v1/feed", get(merged_feed))
        .route("/v1/search", get(search))
        .route("/v1/entries/{feed}/{*key}", get(entry))
        .route("/v1/stream", get(stream))
        .fallback(|| async { Error::NotFound("no such endpoint; see /v1/openapi.json".into()) })
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        // Added after the timeout layer, so outside it: a backup takes as long as the data
        // directory takes to copy, and the admin waits for it.
        .route("/v1/admin/backup", post(backup))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves the router on `listener` (caps and timeouts: apiary-net) until the task is aborted.
pub fn serve(
    agg: Arc<Aggregator>,
    listener: apiary_net::listen::GatedListener,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let bound = listener.local_addr()?;
    let timeouts = apiary_net::http::HttpTimeouts {
        header: Duration::from_millis(agg.cfg.http_header_timeout_ms),
        write: Duration::from_millis(agg.cfg.http_write_timeout_ms),
    };
    let task = apiary_net::http::serve(listener, router(agg), timeouts);
    Ok((bound, task))
}

/// Rate limit per client IP (before anything else runs).
async fn guard(
    State(s): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    if !probe && s.limiter.check_key(&peer.ip()).is_err() {
        return Error::RateLimited.into_response();
    }
    next.run(req).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Compares without an early exit, so the time taken does not reveal a prefix of the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Admin: the configured token, or (with none configured) a client on loopback.
fn is_admin(s: &Http, headers: &HeaderMap, peer: &SocketAddr) -> Result<bool> {
    match (&s.agg.cfg.admin_token, bearer(headers)) {
        (Some(t), Some(given)) if same(t, given) => Ok(true),
        (Some(_), Some(_)) => Err(Error::Unauthorized("wrong admin token".into())),
        (Some(_), None) => Ok(false),
        (None, _) => Ok(peer.ip().is_loopback()),
    }
}

fn require_admin(s: &Http, headers: &HeaderMap, peer: &SocketAddr) -> Result<()> {
    if is_admin(s, headers, peer)? {
        return Ok(());
    }
    Err(Error::Unauthorized(if s.agg.cfg.admin_token.is_some() {
        "this needs the admin token: Authorization: Bearer TOKEN".into()
    } else {
        "no admin token is configured, so only clients on loopback may do this".into()
    }))
}

fn parse_key(s: &str) -> Result<Key> {
    Ok(Key::parse(s)?)
}

/// Liveness, and what is wrong with the write path (reads are served either way).
async fn healthz(State(s): State<Http>) -> Json<Value> {
    let degraded = s.agg.health.degraded();
    Json(json!({
        "ok": true,
        "status": if degraded.is_empty() { "ok" } else { "degraded" },
        "degraded": degraded,
        "feeds": s.agg.followed().map(|f| f.len()).unwrap_or(0),
        "dht": s.agg.discovery.state(),
    }))
}

/// Ready: healthy, and every feed indexed up to what is known of it; else 503 with why.
async fn readyz(State(s): State<Http>) -> Response {
    let mut why = s.agg.health.degraded();
    let mut behind = 0;
    for k in s.agg.followed().unwrap_or_default() {
        if let Ok(Some(st)) = s.agg.status(&k) {
            if st["lag"].as_u64().unwrap_or(0) > 0 {
                behind += 1;
            }
        }
    }
    if behind > 0 {
        why.push(format!("{behind} feed(s) catching up"));
    }
    let code = if why.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({"ready": why.is_empty(), "why": why}))).into_response()
}

async fn metrics(State(s): State<Http>) -> impl IntoResponse {
    let body = s.metrics.render(&s.agg).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    dir: String,
}

/// A snapshot of the data directory into `dir` (admin; see `backup.rs`).
async fn backup(
    State(s): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: std::result::Result<Json<BackupBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response> {
    require_admin(&s, &headers, &peer)?;
    let Json(b) = body.map_err(|e| {
        Error::BadRequest(format!(
            "body must be {{\"dir\": \"/absolute/path\"}}: {}",
            e.body_text()
        ))
    })?;
    let manifest = crate::backup::take(s.agg.clone(), std::path::PathBuf::from(b.dir)).await?;
    Ok((StatusCode::CREATED, Json(manifest)).into_response())
}

#[derive(Deserialize)]
struct AddFeed {
    key: String,
    #[serde(default)]
    peers: Vec<String>,
}

async fn add_feed(
    State(s): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: std::result::Result<Json<AddFeed>, axum::extract::rejection::JsonRejection>,
) -> Result<Response> {
    let admin = is_admin(&s, &headers, &peer)?;
    if !admin {
        if !s.agg.cfg.open_registration {
            require_admin(&s, &headers, &peer)?;
        } else if s.registrations.check_key(&peer.ip()).is_err() {
            return Err(Error::RateLimited);
        }
    }
    let Json(b) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::TooLarge(format!("body over {} bytes", s.agg.cfg.max_body_bytes))
        } else {
            Error::BadRequest(format!(
                "body must be {{\"key\": string, \"peers\"?: [\"host:port\"]}}: {}",
                e.body_text()
            ))
        }
    })?;
    if b.peers.len() > 16 {
        return Err(Error::BadRequest("at most 16 peers".into()));
    }
    let key = parse_key(&b.key)?;
    let new = s.agg.follow(key, b.peers).await?;
    let status = s.agg.status(&key)?.unwrap_or(Value::Null);
    let code = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(status)).into_response())
}

async fn remove_feed(
    State(s): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Response> {
    require_admin(&s, &headers, &peer)?;
    let key = parse_key(&key)?;
    if !s.agg.unfollow(&key).await? {
        return Err(Error::NotFound(format!("feed {key} is not followed")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_feeds(State(s): State<Http>) -> Result<Json<Value>> {
    let mut out = Vec::new();
    for k in s.agg.followed()? {
        if let Some(v) = s.agg.status(&k)? {
            out.push(v);
        }
    }
    Ok(Json(json!({"feeds": out})))
}

async fn get_feed(State(s): State<Http>, Path(key): Path<String>) -> Result<Json<Value>> {
    let key = parse_key(&key)?;
    s.agg
        .status(&key)?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("feed {key} is not followed")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    q: Option<String>,
    feed: Option<String>,
    #[serde(rename = "type")]
    typ: Option<String>,
    tag: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

fn time_param(name: &str, v: &str) -> Result<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return ms
            .checked_mul(1000)
            .ok_or_else(|| Error::BadRequest(format!("{name} is out of range")));
    }
    crate::ingest::parse_time(&Value::String(v.to_owned())).ok_or_else(|| {
        Error::BadRequest(format!(
            "{name} must be RFC 3339 or epoch milliseconds, got {v:?}"
        ))
    })
}

impl FeedQuery {
    fn filters(&self) -> Result<Filters> {
        let limit = self.limit.unwrap_or(20);
        if limit == 0 || limit > crate::index::MAX_LIMIT {
            return Err(Error::BadRequest(format!(
                "limit must be 1 to {}",
                crate::index::MAX_LIMIT
            )));
        }
        Ok(Filters {
            feed: self
                .feed
                .as_deref()
                .map(|f| parse_key(f).map(|k| k.to_z32()))
                .transpose()?,
            typ: self.typ.clone(),
            tag: self
                .tag
                .as_ref()
                .map(|t| t.trim_start_matches('#').to_lowercase()),
            since: self
                .since
                .as_deref()
                .map(|v| time_param("since", v))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|v| time_param("until", v))
                .transpose()?,
        })
    }
}

fn query_of(
    q: std::result::Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<FeedQuery> {
    q.map(|Query(q)| q)
        .map_err(|e| Error::BadRequest(e.body_text()))
}

async fn merged_feed(
    State(s): State<Http>,
    q: std::result::Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let q = query_of(q)?;
    let fl = q.filters()?;
    let index = s.agg.index.clone();
    let page = tokio::task::spawn_blocking(move || {
        index.feed(&fl, q.cursor.as_deref(), q.limit.unwrap_or(20))
    })
    .await
    .map_err(|e| Error::Unavailable(e.to_string()))??;
    Ok(Json(
        json!({"entries": page.entries, "cursor": page.cursor}),
    ))
}

async fn search(
    State(s): State<Http>,
    q: std::result::Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let q = query_of(q)?;
    let fl = q.filters()?;
    let text =
        q.q.clone()
            .ok_or_else(|| Error::BadRequest("missing q".into()))?;
    let index = s.agg.index.clone();
    let page = tokio::task::spawn_blocking(move || {
        index.search(&text, &fl, q.cursor.as_deref(), q.limit.unwrap_or(20))
    })
    .await
    .map_err(|e| Error::Unavailable(e.to_string()))??;
    Ok(Json(
        json!({"entries": page.entries, "cursor": page.cursor}),
    ))
}

async fn entry(
    State(s): State<Http>,
    Path((feed, key)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let feed = parse_key(&feed)?;
    s.agg
        .index
        .entry(&feed.to_z32(), key.as_bytes())?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("no entry {key:?} in feed {feed}")))
}

async fn stream(
    State(s): State<Http>,
    q: std::result::Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl tokio_stream::Stream<Item = std::result::Result<Event, Infallible>>>> {
    let fl = query_of(q)?.filters()?;
    let rx = s.agg.index.subscribe();
    let events = BroadcastStream::new(rx).filter_map(move |item| match item {
        Ok(e) if fl.matches(&e) => Some(Ok(Event::default().event("entry").data(e.to_string()))),
        Ok(_) => None,
        Err(_) => Some(Err(())),
    });
    // A subscriber that fell behind the buffer is told so (it can re-read /v1/feed) and
    // dropped: nothing is buffered for it.
    let events = UntilLagged {
        inner: Box::pin(events),
        done: false,
    };
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Ends a stream of events after its first "lagged" one.
struct UntilLagged<S> {
    inner: std::pin::Pin<Box<S>>,
    done: bool,
}

impl<S> tokio_stream::Stream for UntilLagged<S>
where
    S: tokio_stream::Stream<Item = std::result::Result<Event, ()>>,
{
    type Item = std::result::Result<Event, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(e))) => Poll::Ready(Some(Ok(e))),
            Poll::Ready(Some(Err(()))) => {
                self.done = true;
                Poll::Ready(Some(Ok(Event::default().event("lagged").data("{}"))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
