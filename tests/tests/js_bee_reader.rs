//! Our reader follows bees written by plain JS (hypercore 11 + hyperbee 2 + corestore 7) over
//! real TCP on loopback, and must give the same answers as JS hyperbee reading them.

use std::sync::Arc;
use std::time::Duration;

use apiary_core::bee::{Bee, HistoryOptions, RangeOptions};
use apiary_core::replicate::{Replica, Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_tests::bee_compare::{compare_everything, entries, fill_js, history_json};
use apiary_tests::{entry_json, init_tracing, key_of, JsPeer};
use serde_json::{json, Value};

async fn follow(js_port: u16, key: apiary_core::Key) -> (Replicator, Arc<Replica>) {
    let rep = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default());
    let core = rep.replica(key).unwrap();
    let conn = rep.connect(&format!("127.0.0.1:{js_port}")).await.unwrap();
    conn.open(&core).await.unwrap();
    core.update(Duration::from_secs(10)).await.unwrap();
    (rep, core)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_js_bees_like_js_does() {
    init_tracing();
    let mut js = JsPeer::start().await;
    let corestore = js
        .call(json!({"cmd": "create", "name": "movies", "compat": false}))
        .await;
    fill_js(&mut js, "movies").await;
    let compat = js
        .call(json!({"cmd": "create", "name": "old", "compat": true}))
        .await;
    fill_js(&mut js, "old").await;
    let port = js.serve().await;

    for (name, created) in [("movies", &corestore), ("old", &compat)] {
        let (_rep, core) = follow(port, key_of(created)).await;
        let bee = Bee::new(core.clone());
        compare_everything(&mut js, name, &bee).await;

        // Live: a new put reaches us without polling.
        let mut head = core.subscribe();
        let before = core.length();
        js.call(json!({"cmd": "put", "name": name, "key": "live", "value": {"title": "Live!"}}))
            .await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while head.borrow_and_update().length <= before {
                head.changed().await.unwrap();
            }
        })
        .await
        .expect("live append seen");
        let e = bee.snapshot().get(b"live").await.unwrap().unwrap();
        assert_eq!(entry_json(&e)["value"], json!({"title": "Live!"}));
    }
    js.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_get_on_a_10k_bee_fetches_few_blocks() {
    init_tracing();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "big", "compat": false}))
        .await;
    js.call(json!({"cmd": "fill", "name": "big", "count": 10_000, "valueBytes": 200}))
        .await;
    let port = js.serve().await;
    let (_rep, core) = follow(port, key_of(&created)).await;
    assert_eq!(core.length(), 10_001);
    let bee = Bee::new(core.clone());
    let e = bee
        .snapshot()
        .get(b"k00004321")
        .await
        .unwrap()
        .expect("found");
    let want = js
        .call(json!({"cmd": "get", "name": "big", "key": "k00004321"}))
        .await["entry"]
        .clone();
    assert_eq!(entry_json(&e), want);
    let fetched = core.store().block_count().unwrap();
    eprintln!("sparse get fetched {fetched} of 10001 blocks");
    assert!(fetched <= 40, "a single get fetched {fetched} blocks");
    assert_eq!(
        core.stats.blocks.load(std::sync::atomic::Ordering::Relaxed),
        fetched
    );
    js.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_js_truncation_and_several_cores_on_one_connection() {
    init_tracing();
    let mut js = JsPeer::start().await;
    let a = js
        .call(json!({"cmd": "create", "name": "a", "compat": false}))
        .await;
    let b = js
        .call(json!({"cmd": "create", "name": "b", "compat": true}))
        .await;
    for i in 0..20 {
        js.call(json!({"cmd": "put", "name": "a", "key": format!("a{i:02}"), "value": {"i": i}}))
            .await;
        js.call(json!({"cmd": "put", "name": "b", "key": format!("b{i:02}"), "value": {"i": i}}))
            .await;
    }
    let port = js.serve().await;

    let rep = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default());
    let ca = rep.replica(key_of(&a)).unwrap();
    let cb = rep.replica(key_of(&b)).unwrap();
    let conn = rep.connect(&format!("127.0.0.1:{port}")).await.unwrap();
    conn.open(&ca).await.unwrap();
    conn.open(&cb).await.unwrap();
    assert_eq!(ca.update(Duration::from_secs(10)).await.unwrap(), 21);
    assert_eq!(cb.update(Duration::from_secs(10)).await.unwrap(), 21);
    assert_eq!(rep.connections().len(), 1, "both cores over one connection");
    ca.download_range(0, 21, 8).await.unwrap();
    let bee = Bee::new(ca.clone());
    assert_eq!(
        bee.snapshot()
            .range(RangeOptions::default())
            .await
            .unwrap()
            .len(),
        20
    );

    // The author cuts the log back to 12 blocks and writes on: a new, signed fork.
    let mut head = ca.subscribe();
    let t = js
        .call(json!({"cmd": "truncate", "name": "a", "length": 12}))
        .await;
    assert_eq!(t["fork"], json!(1));
    for i in 0..3 {
        js.call(json!({"cmd": "put", "name": "a", "key": format!("new{i}"), "value": {"n": i}}))
            .await;
    }
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ev = *head.borrow_and_update();
            if ev.fork == 1 && ev.length == 15 {
                return ev;
            }
            head.changed().await.unwrap();
        }
    })
    .await
    .expect("new fork followed");
    assert_eq!(ev.truncated_at, Some(12), "the cut is reported: {ev:?}");
    assert_eq!(ca.truncated_since(0), Some(12));
    assert_eq!(ca.truncated_since(1), None);
    assert!(
        ca.store().block(20).unwrap().is_none(),
        "cut blocks are gone"
    );
    assert!(
        ca.store().block(11).unwrap().is_some(),
        "blocks before the cut are kept"
    );
    let want = entries(
        &js.call(json!({"cmd": "range", "name": "a", "opts": {}}))
            .await,
    );
    let got: Vec<Value> = bee
        .snapshot()
        .range(RangeOptions::default())
        .await
        .unwrap()
        .iter()
        .map(entry_json)
        .collect();
    assert_eq!(got, want);
    let want = entries(
        &js.call(json!({"cmd": "history", "name": "a", "opts": {}}))
            .await,
    );
    let got = history_json(&bee, &HistoryOptions::default()).await;
    // Entry by entry (key, value, seq, put/del), then the counts.
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "history entry {i} after the truncation");
    }
    assert_eq!(got.len(), want.len(), "history length: {got:?} vs {want:?}");
    // The new fork's puts end it, after the 11 entries before the cut.
    assert_eq!(got.len(), 14, "{got:?}");
    for (i, e) in got[11..].iter().enumerate() {
        assert_eq!(
            (&e["type"], &e["key"], &e["seq"]),
            (&json!("put"), &json!(format!("new{i}")), &json!(12 + i)),
            "{e}"
        );
    }
    // The other core on the same connection was not disturbed.
    assert!(!cb.get(20).await.unwrap().is_empty());
    js.close().await;
}
