//! An author's truncation is reflected (the feed is purged and re-read from the new fork),
//! and an author who truncates again and again cannot make the aggregator reindex without
//! pause (issue 10, item 4: "rate-limit reindexing per feed").

use std::time::{Duration, Instant};

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{init_tracing, JsPeer};
use serde_json::{json, Value};

async fn keys(agg: &AggProc, feed: &str) -> Vec<String> {
    let mut k: Vec<String> = agg
        .all_entries(feed)
        .await
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncations_are_reflected_and_repeated_ones_rate_limited() {
    init_tracing();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "t", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    for i in 0..10 {
        js.call(json!({"cmd": "put", "name": "t", "key": format!("k{i}"), "value": {"text": "v"}}))
            .await;
    }
    let port = js.serve().await;
    let (_keep, dir) = temp_dir();
    let agg = AggProc::start(dir.join("agg"), "commit_interval_ms = 20").await;
    assert_eq!(
        agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await.0,
        201
    );
    let status = |v: &Value, fork: u64, version: u64| {
        v["fork"] == json!(fork) && v["indexedVersion"] == json!(version)
    };
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(30), |v| {
        status(v, 0, 11)
    })
    .await;

    // First truncation: reflected at once. Blocks 0..6 stay: the header and k0..k4.
    js.call(json!({"cmd": "truncate", "name": "t", "length": 6}))
        .await;
    js.call(json!({"cmd": "put", "name": "t", "key": "after1", "value": {"text": "v"}}))
        .await;
    let (_, first) = agg
        .wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(30), |v| {
            status(v, 1, 7)
        })
        .await;
    eprintln!("first truncation reflected after {first:?}");
    assert_eq!(
        keys(&agg, &key).await,
        ["after1", "k0", "k1", "k2", "k3", "k4"]
    );

    // At once again: reflected too, but only after a pause.
    let t = Instant::now();
    js.call(json!({"cmd": "truncate", "name": "t", "length": 4}))
        .await;
    js.call(json!({"cmd": "put", "name": "t", "key": "after2", "value": {"text": "v"}}))
        .await;
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(60), |v| {
        status(v, 2, 5)
    })
    .await;
    let took = t.elapsed();
    eprintln!("second truncation reflected after {took:?}");
    assert!(
        took >= Duration::from_secs(5),
        "the second reindex in a row waited (took {took:?})"
    );
    assert_eq!(keys(&agg, &key).await, ["after2", "k0", "k1", "k2"]);
    js.close().await;
}
