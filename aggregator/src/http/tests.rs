//! The router end to end, in process: errors of every origin in the API's JSON shape, the
//! loopback rule, and the typed responses fitting what the aggregator builds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{feed_status, request_timeout, router};
use crate::config::Config;
use crate::Aggregator;

pub(crate) const KEY: &str = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";
pub(crate) const LOOPBACK: &str = "127.0.0.1:40000";
const ELSEWHERE: &str = "192.0.2.7:40000";

/// An aggregator on a scratch data directory, without the DHT, and its router.
pub(crate) async fn app(
    edit: impl FnOnce(&mut Config),
) -> (tempfile::TempDir, Arc<Aggregator>, Router) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        data_dir: dir.path().join("data"),
        dht: false,
        rate_limit_per_second: 10_000,
        rate_limit_burst: 10_000,
        ..Config::default()
    };
    edit(&mut cfg);
    let agg = Aggregator::open(cfg).await.unwrap();
    let r = router(agg.clone());
    (dir, agg, r)
}

/// One request from `from`; the status, the headers and the body (JSON when it is).
pub(crate) async fn call(
    r: &Router,
    from: &str,
    method: Method,
    uri: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some((content_type, bytes)) => {
            req = req.header(header::CONTENT_TYPE, content_type);
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let mut req = req.body(body).unwrap();
    let peer: SocketAddr = from.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let res = r.clone().oneshot(req).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    // An event stream does not end: its head is the answer.
    let endless = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"));
    let bytes = if endless {
        Default::default()
    } else {
        axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap_or_default()
    };
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

fn json_body(v: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", v.to_string().into_bytes()))
}

/// `{"error": {"code": CODE, "message": non-empty}}`, as JSON.
fn assert_error(got: &(StatusCode, axum::http::HeaderMap, Value), status: u16, code: &str) {
    let (s, h, v) = got;
    assert_eq!(s.as_u16(), status, "{v}");
    assert_eq!(
        h.get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()),
        Some("application/json"),
        "{v}"
    );
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_every_origin_are_json() {
    let (_d, _agg, r) = app(|c| c.max_body_bytes = 1024).await;
    // axum's routing: no such path, no such method (with the methods there are).
    assert_error(
        &call(&r, LOOPBACK, Method::GET, "/v2/nothing", None).await,
        404,
        "not_found",
    );
    let got = call(&r, LOOPBACK, Method::PUT, "/v1/feeds", None).await;
    assert_error(&got, 405, "method_not_allowed");
    assert_eq!(got.1.get(header::ALLOW).unwrap(), "GET,HEAD,POST");
    let got = call(&r, LOOPBACK, Method::POST, "/v1/feed", None).await;
    assert_error(&got, 405, "method_not_allowed");
    // axum's extractors: query, path, body.
    for uri in [
        "/v1/feed?bogus=1",
        "/v1/feed?limit=x",
        "/v1/stream?since=0",
        "/v1/search",
    ] {
        assert_error(
            &call(&r, LOOPBACK, Method::GET, uri, None).await,
            400,
            "bad_request",
        );
    }
    let bad_utf8 = format!("/v1/entries/{KEY}/%FF");
    assert_error(
        &call(&r, LOOPBACK, Method::GET, &bad_utf8, None).await,
        400,
        "bad_request",
    );
    assert_error(
        &call(&r, LOOPBACK, Method::GET, "/v1/feeds/nope", None).await,
        400,
        "bad_key",
    );
    let post = |body| call(&r, LOOPBACK, Method::POST, "/v1/feeds", body);
    assert_error(&post(None).await, 415, "unsupported_media_type");
    assert_error(
        &post(Some(("application/json", b"{".to_vec()))).await,
        400,
        "bad_request",
    );
    assert_error(
        &post(json_body(json!({"nokey": 1}))).await,
        400,
        "bad_request",
    );
    let big = json_body(json!({"key": KEY, "pad": "x".repeat(2048)}));
    let got = post(big).await;
    assert_error(&got, 413, "too_large");
    assert_eq!(got.1.get(header::CONNECTION).unwrap(), "close");
    let backup = |body| call(&r, LOOPBACK, Method::POST, "/v1/admin/backup", body);
    assert_error(
        &backup(json_body(json!({"dir": "x".repeat(2048)}))).await,
        413,
        "too_large",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_json_and_spares_the_probes() {
    let (_d, _agg, r) = app(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 1;
    })
    .await;
    assert_eq!(
        call(&r, LOOPBACK, Method::GET, "/v1/feeds", None).await.0,
        200
    );
    let got = call(&r, LOOPBACK, Method::GET, "/v1/feeds", None).await;
    assert_error(&got, 429, "rate_limited");
    for probe in super::PROBES {
        assert_eq!(
            call(&r, LOOPBACK, Method::GET, probe, None).await.0,
            200,
            "{probe}"
        );
    }
}

#[tokio::test]
async fn a_slow_response_is_a_json_408() {
    let r = Router::new()
        .route(
            "/slow",
            get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }),
        )
        .layer(axum::middleware::from_fn(|req, next| {
            request_timeout(20, req, next)
        }));
    let got = call(&r, LOOPBACK, Method::GET, "/slow", None).await;
    assert_error(&got, 408, "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_is_admin() {
    let (_d, _agg, r) = app(|_| {}).await;
    let follow = || json_body(json!({"key": KEY}));
    let got = call(&r, ELSEWHERE, Method::POST, "/v1/feeds", follow()).await;
    assert_error(&got, 401, "unauthorized");
    let got = call(
        &r,
        ELSEWHERE,
        Method::DELETE,
        &format!("/v1/feeds/{KEY}"),
        None,
    )
    .await;
    assert_error(&got, 401, "unauthorized");
    let got = call(&r, ELSEWHERE, Method::POST, "/v1/admin/backup", None).await;
    assert_error(&got, 401, "unauthorized");
    // From loopback: admin, with no credentials at all.
    assert_eq!(
        call(&r, LOOPBACK, Method::POST, "/v1/feeds", follow())
            .await
            .0,
        201
    );
    assert_eq!(
        call(&r, LOOPBACK, Method::POST, "/v1/feeds", follow())
            .await
            .0,
        200
    );
    let got = call(
        &r,
        LOOPBACK,
        Method::DELETE,
        &format!("/v1/feeds/{KEY}"),
        None,
    )
    .await;
    assert_eq!(got.0, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_loopback_needs_it_too() {
    let (_d, _agg, r) = app(|c| c.admin_token = Some("a-long-enough-admin-token".into())).await;
    let got = call(
        &r,
        LOOPBACK,
        Method::POST,
        "/v1/feeds",
        json_body(json!({"key": KEY})),
    )
    .await;
    assert_error(&got, 401, "unauthorized");
}

/// `Aggregator::status` builds JSON; the API's `FeedStatus` must hold all of it, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fits_its_type() {
    let (_d, agg, r) = app(|_| {}).await;
    let key = apiary_core::Key::parse(KEY).unwrap();
    agg.follow(key, vec!["127.0.0.1:9".into()]).await.unwrap();
    let v = agg.status(&key).unwrap().unwrap();
    let typed = feed_status(v.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), v);
    let (s, _, listed) = call(&r, LOOPBACK, Method::GET, "/v1/feeds", None).await;
    assert_eq!(s, 200);
    assert_eq!(listed["feeds"][0], v);
}

/// The backup's manifest as the API types it is the one written to `backup.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_manifest_fits_its_type() {
    let (d, _agg, r) = app(|_| {}).await;
    let dir = d.path().join("backup");
    let got = call(
        &r,
        LOOPBACK,
        Method::POST,
        "/v1/admin/backup",
        json_body(json!({"dir": dir})),
    )
    .await;
    assert_eq!(got.0, 201, "{}", got.2);
    // Here, not beside the other errors: one backup at a time per process, and tests run
    // side by side.
    let backup = |body| call(&r, LOOPBACK, Method::POST, "/v1/admin/backup", body);
    assert_error(
        &backup(json_body(json!({"dir": "rel"}))).await,
        400,
        "bad_request",
    );
    assert_error(
        &backup(json_body(json!({"dir": "/"}))).await,
        409,
        "conflict",
    );

    let written: Value =
        serde_json::from_slice(&std::fs::read(dir.join(crate::backup::MANIFEST)).unwrap()).unwrap();
    assert_eq!(got.2, written);
}

/// Time bounds as the description has them: any run of digits is epoch milliseconds (past
/// what an i64 of microseconds holds: its end), else RFC 3339.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_bounds_take_any_number_of_digits() {
    let (_d, _agg, r) = app(|_| {}).await;
    for q in [
        "since=99999999999999999999999999",
        "until=-99999999999999999999999999",
        "since=-0&until=0",
        "since=2026-11-30T10:00:00.5%2B01:00",
    ] {
        let (s, _, v) = call(&r, LOOPBACK, Method::GET, &format!("/v1/feed?{q}"), None).await;
        assert_eq!(s, 200, "{q}: {v}");
    }
    for q in ["since=", "since=%2B5", "since=1.5", "until=yesterday"] {
        let got = call(&r, LOOPBACK, Method::GET, &format!("/v1/feed?{q}"), None).await;
        assert_error(&got, 400, "bad_request");
    }
}
