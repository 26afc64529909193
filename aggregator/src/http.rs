//! The HTTP API (JSON, versioned under /v1), the browse page, health and metrics.
//!
//! Every error response is JSON with a code (see [`crate::error::Error::status`]), also those
//! of the layers and of axum's own refusals. Per client IP rate limits (governor), body size
//! limits and request timeouts apply to every route but the ones named in [`routes`] and
//! [`PROBES`]. Each handler carries its part of `/v1/openapi.json` (`crate::openapi`).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use apiary_core::Key;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::api::{
    AddFeed, BackupManifest, BackupRequest, FeedPath, FeedStatus, Health as ApiHealth,
    HealthStatus, Ready,
};
use crate::error::{Error, ErrorBody, Result};
use crate::Aggregator;

pub(crate) mod cache;
pub(crate) mod live;
pub(crate) mod proofs;
pub(crate) mod read;
#[cfg(test)]
pub(crate) mod tests;

use live::stream;
use read::{entry, get_feed, list_feeds, merged_feed, search};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Http {
    agg: Arc<Aggregator>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    registrations: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    metrics: Arc<crate::metrics::Exporter>,
    /// `/v1/openapi.json`, made once for this configuration.
    doc: Bytes,
    /// Feed and search bodies until the next commit.
    cache: Arc<cache::ReadCache>,
    /// Index reads running at once (each a blocking thread): more than the cores only adds
    /// threads, memory and tail latency; the others wait here, in the async world.
    reads: Arc<tokio::sync::Semaphore>,
}

impl Http {
    /// Runs an index read on a blocking thread, at most `reads` at once.
    async fn read_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .reads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("shutting down".into()))?;
        // Held by the thread: a request given up on (timeout, client gone) still counts
        // until its read ends.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// Paths the rate limit does not apply to: monitoring must see an overloaded server too.
pub(crate) const PROBES: [&str; 2] = ["/healthz", "/readyz"];

/// A route of the API.
pub(crate) struct Route {
    /// In axum's syntax (`{*key}`: the rest of the path).
    pub path: &'static str,
    pub handlers: MethodRouter<Http>,
    /// Whether `request_timeout_ms` applies. A backup is not timed: it takes as long as the
    /// data directory takes to copy, and the admin waits for it.
    pub timed: bool,
}

/// Every route. The router is built from this list, and a test holds it against the
/// description's paths and methods (`openapi::tests`), so neither can list one the other
/// does not.
pub(crate) fn routes() -> Vec<Route> {
    let r = |path, handlers, timed| Route {
        path,
        handlers,
        timed,
    };
    vec![
        r("/", get(page), true),
        r("/healthz", get(healthz), true),
        r("/readyz", get(readyz), true),
        r("/metrics", get(metrics), true),
        r("/v1/openapi.json", get(openapi_json), true),
        r("/v1/feeds", get(list_feeds).post(add_feed), true),
        r("/v1/feeds/{key}", get(get_feed).delete(remove_feed), true),
        r("/v1/feed", get(merged_feed), true),
        r("/v1/search", get(search), true),
        r("/v1/entries/{feed}/{*key}", get(entry), true),
        r("/v1/proofs/{feed}/{*key}", get(proofs::proof), true),
        r("/v1/stream", get(stream), true),
        r("/v1/admin/backup", post(backup), false),
    ]
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
    let timeout_ms = cfg.request_timeout_ms;
    let doc = Bytes::from(serde_json::to_vec(&crate::openapi::document(cfg)).unwrap_or_default());
    let cache = Arc::new(cache::ReadCache::new(
        cfg.read_cache_mb.saturating_mul(1 << 20),
    ));
    let metrics = crate::metrics::Exporter::new(agg.index.commit_seconds.clone());
    let state = Http {
        agg,
        limiter: limiter.clone(),
        registrations: registrations.clone(),
        metrics: Arc::new(metrics),
        doc,
        cache,
        reads: Arc::new(tokio::sync::Semaphore::new(
            2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
    };
    // Forget idle clients now and then, so the limiters' memory stays bounded.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            limiter.retain_recent();
            registrations.retain_recent();
        }
    });
    let (mut timed, mut untimed) = (Router::new(), Router::new());
    for r in routes() {
        if r.timed {
            timed = timed.route(r.path, r.handlers);
        } else {
            untimed = untimed.route(r.path, r.handlers);
        }
    }
    timed
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            request_timeout(timeout_ms, req, next)
        }))
        .merge(untimed)
        .fallback(|| async { Error::NotFound("no such endpoint; see /v1/openapi.json".into()) })
        // After every route: it applies to the routes there are. axum still adds `Allow`.
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
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
    let probe = PROBES.contains(&req.uri().path());
    if !probe && s.limiter.check_key(&peer.ip()).is_err() {
        return Error::RateLimited.into_response();
    }
    next.run(req).await
}

/// 408 in the API's error shape when the response does not start within `ms` (the body of
/// a response that has started, e.g. an event stream, is not timed).
async fn request_timeout(ms: u64, req: Request, next: Next) -> Response {
    match tokio::time::timeout(Duration::from_millis(ms), next.run(req)).await {
        Ok(r) => r,
        Err(_) => Error::Timeout(ms).into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Compares in constant time (`subtle`), so the time taken does not reveal a prefix of the
/// token; only a difference in length returns early.
fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
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

/// A feed's status as the API types it. `Aggregator::status` builds it as JSON, so a field
/// it gains or loses fails here (and in `tests::status_fits_its_type`), not in a client.
fn feed_status(v: Value) -> Result<FeedStatus> {
    serde_json::from_value(v)
        .map_err(|e| Error::Internal(format!("a feed status does not fit FeedStatus: {e}")))
}

/// The browse page.
#[utoipa::path(get, path = "/", tag = "page",
    responses((status = 200, description = "The browse page: the merged feed, search, live \
        entries and the followed feeds, from this API.", content_type = "text/html", body = String)))]
async fn page() -> Html<&'static str> {
    Html(crate::page::PAGE)
}

/// Liveness, and what is wrong with the write path (reads are served either way).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = ApiHealth)))]
async fn healthz(State(s): State<Http>) -> Json<ApiHealth> {
    let degraded = s.agg.health.degraded();
    Json(ApiHealth {
        ok: true,
        status: if degraded.is_empty() {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        },
        degraded,
        feeds: s.agg.followed().map(|f| f.len()).unwrap_or(0),
        dht: s.agg.discovery.state(),
    })
}

/// Ready: healthy, and every feed indexed up to what is known of it; else 503 with why.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready: degraded, or feeds catching up", body = Ready)))]
async fn readyz(State(s): State<Http>) -> (StatusCode, Json<Ready>) {
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
    (
        code,
        Json(Ready {
            ready: why.is_empty(),
            why,
        }),
    )
}

/// Prometheus metrics: process-wide, per feed (label `feed`) and `apiary_degraded{source}`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The Prometheus text format 0.0.4",
        content_type = crate::metrics::CONTENT_TYPE, body = String)))]
async fn metrics(State(s): State<Http>) -> impl IntoResponse {
    let body = s.metrics.render(&s.agg).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body)
}

/// This description (OpenAPI 3.1), for this server's configuration.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi_json(State(s): State<Http>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], s.doc.clone())
}

/// A snapshot of the data directory into `dir` (what `apiary-aggregator backup DIR` calls).
///
/// Answers when the backup is complete; index commits wait meanwhile, reads go on. Restore:
/// start an aggregator on `dir`. Not subject to the request timeout.
#[utoipa::path(post, path = "/v1/admin/backup", tag = "admin",
    request_body = BackupRequest,
    security(("adminToken" = [])),
    responses(
        (status = 201, description = "Done; the same manifest is in DIR/backup.json", body = BackupManifest),
        (status = 400, description = "`dir` is relative, has `..`, is inside the data directory, \
            cannot be made or is not a directory; or the body is not `{\"dir\": \"/path\"}`", body = ErrorBody),
        (status = 401, description = "Not admin", body = ErrorBody),
        (status = 409, description = "`dir` is not empty, or another backup runs", body = ErrorBody),
        (status = 413, description = "Body over `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "Body not declared as application/json", body = ErrorBody),
        (status = 500, description = "The copy failed (see the log); nothing is left in `dir`", body = ErrorBody),
        (status = 503, description = "Shutting down, or the block store stopped", body = ErrorBody),
    ))]
async fn backup(
    State(s): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: std::result::Result<Json<BackupRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<BackupManifest>)> {
    require_admin(&s, &headers, &peer)?;
    let Json(b) = body?;
    let manifest = crate::backup::take(s.agg.clone(), std::path::PathBuf::from(b.dir)).await?;
    let manifest = serde_json::from_value(manifest)
        .map_err(|e| Error::Internal(format!("the manifest does not fit BackupManifest: {e}")))?;
    Ok((StatusCode::CREATED, Json(manifest)))
}

/// Follow a feed (peers given are added to a followed one).
#[utoipa::path(post, path = "/v1/feeds", tag = "admin",
    request_body = AddFeed,
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Already followed (peers added)", body = FeedStatus),
        (status = 201, description = "Now followed", body = FeedStatus),
        (status = 400, description = "Not a key, a peer not `host:port`, over 16 peers, \
            or the body is not JSON of this shape", body = ErrorBody),
        (status = 401, description = "Not admin", body = ErrorBody),
        (status = 413, description = "Body over `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "Body not declared as application/json", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody),
        (status = 503, description = "Shutting down, or the block store stopped", body = ErrorBody),
    ))]
async fn add_feed(
    State(s): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: std::result::Result<Json<AddFeed>, JsonRejection>,
) -> Result<(StatusCode, Json<FeedStatus>)> {
    let admin = is_admin(&s, &headers, &peer)?;
    if !admin {
        if !s.agg.cfg.open_registration {
            require_admin(&s, &headers, &peer)?;
        } else if s.registrations.check_key(&peer.ip()).is_err() {
            return Err(Error::RateLimited);
        }
    }
    let Json(b) = body?;
    if b.peers.len() > 16 {
        return Err(Error::BadRequest("at most 16 peers".into()));
    }
    let key = parse_key(&b.key)?;
    let new = s.agg.follow(key, b.peers).await?;
    let status = s
        .agg
        .status(&key)?
        .ok_or_else(|| Error::Unavailable(format!("feed {key} was unfollowed meanwhile")))?;
    let code = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(feed_status(status)?)))
}

/// Unfollow a feed and purge it: entries, checkpoint, blocks, state.
#[utoipa::path(delete, path = "/v1/feeds/{key}", tag = "admin",
    params(FeedPath),
    security(("adminToken" = [])),
    responses(
        (status = 204, description = "Unfollowed and purged"),
        (status = 400, description = "Not a key", body = ErrorBody),
        (status = 401, description = "Not admin", body = ErrorBody),
        (status = 404, description = "Not followed", body = ErrorBody),
        (status = 500, description = "The index or the store failed", body = ErrorBody),
        (status = 503, description = "Shutting down, or the block store stopped", body = ErrorBody),
    ))]
async fn remove_feed(
    State(s): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: std::result::Result<Path<FeedPath>, PathRejection>,
) -> Result<StatusCode> {
    require_admin(&s, &headers, &peer)?;
    let Path(p) = path?;
    let key = parse_key(&p.key)?;
    if !s.agg.unfollow(&key).await? {
        return Err(Error::NotFound(format!("feed {key} is not followed")));
    }
    Ok(StatusCode::NO_CONTENT)
}
