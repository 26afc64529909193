//! Discovery by key alone on a private hyperswarm DHT (tests/js/dht.js on 127.0.0.1): the
//! aggregator follows bees that a plain JS app or our publisher announces, JS reads a bee our
//! publisher announces, and the bridge child survives kill -9.

use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::dht::TestDht;
use apiary_tests::{init_tracing, JsPeer};
use serde_json::{json, Value};

/// Waits until `/v1/search?q=…` of one feed returns `n` hits; returns them.
async fn wait_hits(agg: &AggProc, feed: &str, q: &str, n: usize, secs: u64) -> Vec<Value> {
    let (v, took) = agg
        .wait_for(
            &format!("/v1/search?q={q}&feed={feed}&limit=100"),
            Duration::from_secs(secs),
            |v| v["entries"].as_array().is_some_and(|h| h.len() == n),
        )
        .await;
    eprintln!("{n} hit(s) for {q:?} after {took:?}");
    v["entries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_follows_a_js_announced_bee_by_key_alone() {
    init_tracing();
    let dht = TestDht::start().await;
    // The seed's remote app, the way every hyper app shares data.
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "movies", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    for (id, title) in [("a1", "Stalker"), ("b2", "Solaris"), ("c3", "Mirror")] {
        js.call(json!({"cmd": "put", "name": "movies", "key": id, "value": {"title": title}}))
            .await;
    }
    js.call(json!({"cmd": "swarm", "bootstrap": dht.bootstrap}))
        .await;
    js.call(json!({"cmd": "announce", "name": "movies"})).await;

    let (_keep, dir) = temp_dir();
    let agg = AggProc::start_dht(dir.join("agg"), &dht, "").await;
    let (s, body) = agg.follow(&key, None).await;
    assert_eq!(s, 201, "{body}");
    // The first start may install the bridge (npm ci): allow for it.
    let hits = wait_hits(&agg, &key, "stalker", 1, 180).await;
    assert_eq!(hits[0]["key"], "a1");
    let (st, _) = agg
        .wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(30), |v| {
            v["indexedVersion"] == json!(4)
        })
        .await;
    let peers = st["peers"].as_array().unwrap();
    assert!(
        peers
            .iter()
            .any(|p| p["via"] == "dht" && p["connected"] == true),
        "a peer found on the DHT: {st}"
    );

    // A later put shows up live.
    js.call(json!({"cmd": "put", "name": "movies", "key": "d4", "value": {"title": "Nostalghia"}}))
        .await;
    let hits = wait_hits(&agg, &key, "nostalghia", 1, 30).await;
    assert_eq!(hits[0]["key"], "d4");

    let (_, m) = agg.get("/healthz").await;
    assert_eq!(m["dht"], "running", "{m}");
    let metrics = agg
        .http
        .get(format!("{}/metrics", agg.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(value("apiary_dht_connections_total") >= 1.0, "{metrics}");
    assert!(value("apiary_dht_lookups_total") >= 1.0, "{metrics}");
    assert_eq!(value("apiary_dht_topics"), 1.0, "{metrics}");
    assert_eq!(value("apiary_dht_bridge_restarts_total"), 0.0, "{metrics}");
    js.close().await;
}
