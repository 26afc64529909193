//! Hostile input on the DHT path: a bridge child that breaks the pipe protocol
//! (tests/js/evil-bridge.js), and a peer on the DHT that sends garbage through a real bridge.
//! Each ends its own session with a clear error; the process and other sessions go on.

use std::time::Duration;

use apiary_core::replicate::{Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_swarm::{Swarm, SwarmOptions};
use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::dht::TestDht;
use apiary_tests::publisher::Publisher;
use apiary_tests::{ensure_js, init_tracing, js_dir, JsPeer};
use serde_json::json;

async fn next<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("in time")
        .expect("still running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_breaking_the_protocol_ends_only_the_sessions_it_broke() {
    init_tracing();
    ensure_js();
    let (_keep, dir) = temp_dir();
    let opts = SwarmOptions::new([3u8; 32], dir.join("cache"))
        .with_script(js_dir().join("evil-bridge.js"));
    std::env::set_var("EVIL_STATE", dir.join("evil-state"));
    let (swarm, mut sessions) = Swarm::start(opts);
    let rep = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default());

    let mut s1 = next(&mut sessions).await;
    let s2 = next(&mut sessions).await;
    let mut s3 = next(&mut sessions).await;
    assert_eq!(s1.session.info.remote_label, "10.9.9.9:1001");
    assert_eq!(
        s1.session.info.origin,
        apiary_core::wire::Origin::Dht,
        "a DHT session says so"
    );
    // 1: the oversized frame ends it with a clear error (and nothing of it is buffered).
    let r = tokio::time::timeout(Duration::from_secs(30), s1.session.incoming.recv())
        .await
        .unwrap();
    let err = r.expect("an item").expect_err("an error").to_string();
    assert!(err.contains("oversized"), "{err}");
    // 2: garbage where protomux frames belong ends its replication with an error.
    let conn2 = rep.attach(s2.session);
    let why = tokio::time::timeout(Duration::from_secs(10), conn2.closed())
        .await
        .unwrap()
        .expect_err("garbage is an error");
    eprintln!("conn 2 ended: {why}");
    // 3 still works after both.
    s3.session.outgoing.send(b"ping".to_vec()).await.unwrap();
    let back = s3.session.incoming.recv().await.unwrap().unwrap();
    assert_eq!(back, b"ping");
    // The connection with a malformed handshake hash never became a session.
    assert_eq!(swarm.stats().await.sessions, 3);

    // Half a frame, then the child exits: it is restarted, and a new session works.
    s3.session
        .outgoing
        .send(b"truncate".to_vec())
        .await
        .unwrap();
    let r = s3.session.incoming.recv().await;
    assert!(
        matches!(r, Some(Err(_)) | None),
        "session 3 ends with its bridge"
    );
    let mut s9 = next(&mut sessions).await;
    assert_eq!(s9.session.info.remote_label, "10.9.9.9:1009");
    s9.session.outgoing.send(b"again".to_vec()).await.unwrap();
    assert_eq!(s9.session.incoming.recv().await.unwrap().unwrap(), b"again");
    assert_eq!(swarm.stats().await.restarts, 1);
    // hyperswarm closing a duplicate connection ends the matching session, with the reason.
    s9.session
        .outgoing
        .send(b"close-me".to_vec())
        .await
        .unwrap();
    let r = s9.session.incoming.recv().await.expect("an item");
    let err = r.expect_err("closed").to_string();
    assert!(err.contains("Duplicate connection"), "{err}");
    swarm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_peer_on_the_dht_holds_up_no_honest_one() {
    init_tracing();
    let dht = TestDht::start().await;
    let p = Publisher::new();
    let key = p.init("posts");
    p.run(&["post", "posts", "honest words"]);
    let mut args = vec![];
    for b in &dht.bootstrap {
        args.push("--bootstrap");
        args.push(b.as_str());
    }
    let srv = p.serve(&args, None);
    srv.wait_line("announced on the DHT: posts ", Duration::from_secs(180))
        .await;
    // A peer announcing the same bee that answers with junk.
    let mut evil = JsPeer::start().await;
    evil.call(json!({"cmd": "swarm", "bootstrap": dht.bootstrap, "garbage": true}))
        .await;
    let dk = apiary_core::Key::parse(&key).unwrap().discovery_key();
    evil.call(json!({"cmd": "joinTopic", "topic": hex::encode(dk.as_bytes())}))
        .await;

    let (_keep, dir) = temp_dir();
    let agg = AggProc::start_dht(dir.join("agg"), &dht, "").await;
    assert_eq!(agg.follow(&key, None).await.0, 201);
    agg.wait_for(
        &format!("/v1/search?q=honest&feed={key}"),
        Duration::from_secs(180),
        |v| v["entries"].as_array().is_some_and(|e| e.len() == 1),
    )
    .await;
    // The junk peer did reach us, and its sessions ended (the honest one stays).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = evil.call(json!({"cmd": "stats"})).await["swarmConnections"]
            .as_u64()
            .unwrap();
        if n >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the junk peer was never connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.run(&["post", "posts", "still honest"]);
    agg.wait_for(
        &format!("/v1/search?q=still&feed={key}"),
        Duration::from_secs(30),
        |v| v["entries"].as_array().is_some_and(|e| e.len() == 1),
    )
    .await;
    let (_, st) = agg.get(&format!("/v1/feeds/{key}")).await;
    let dht_peers: Vec<_> = st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["via"] == "dht")
        .collect();
    assert_eq!(dht_peers.len(), 1, "only the honest peer serves it: {st}");
    let (_, h) = agg.get("/healthz").await;
    assert_eq!(h["ok"], true);
    evil.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_node_the_aggregator_says_so_and_runs_without_the_dht() {
    init_tracing();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "b", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    js.call(json!({"cmd": "put", "name": "b", "key": "k", "value": {"text": "no node needed"}}))
        .await;
    let port = js.serve().await;
    let (_keep, dir) = temp_dir();
    // No node and no npm on PATH: the bridge cannot be installed or run.
    let agg = AggProc::start_env(
        dir.join("agg"),
        "dht = true\nbootstrap = [\"127.0.0.1:9\"]",
        vec![("PATH".into(), "/nonexistent".into())],
    )
    .await;
    let (h, _) = agg
        .wait_for("/healthz", Duration::from_secs(30), |v| {
            v["dht"]
                .as_str()
                .is_some_and(|s| s.starts_with("unavailable"))
        })
        .await;
    assert!(
        h["dht"].as_str().unwrap().contains("Node.js"),
        "the reason names what is missing: {h}"
    );
    // Direct peers still work.
    assert_eq!(
        agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await.0,
        201
    );
    agg.wait_for(
        &format!("/v1/search?q=needed&feed={key}"),
        Duration::from_secs(30),
        |v| v["entries"].as_array().is_some_and(|e| e.len() == 1),
    )
    .await;
    js.close().await;
}
