//! Discovery by key alone on a private hyperswarm DHT (tests/js/dht.js on 127.0.0.1): the
//! aggregator follows bees that a plain JS app or our publisher announces, JS reads a bee our
//! publisher announces, and the bridge child survives kill -9.

use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::dht::TestDht;
use apiary_tests::publisher::{Publisher, Serving};
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

/// `serve` announcing on the test DHT; waits until every named bee's announce is flushed.
async fn serve_on(p: &Publisher, dht: &TestDht, names: &[&str]) -> Serving {
    let mut args = vec![];
    for b in &dht.bootstrap {
        args.push("--bootstrap");
        args.push(b.as_str());
    }
    let srv = p.serve(&args, None);
    for n in names {
        srv.wait_line(
            &format!("announced on the DHT: {n} "),
            Duration::from_secs(180),
        )
        .await;
    }
    srv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_reads_a_publisher_announced_bee_by_key_alone() {
    init_tracing();
    let dht = TestDht::start().await;
    let p = Publisher::new();
    let key = p.init("films");
    for (k, title) in [("m1", "Alien"), ("m2", "Aliens"), ("m3", "Alien 3")] {
        p.run(&["put", "films", k, &json!({ "title": title }).to_string()]);
    }
    p.run(&["del", "films", "m3"]);
    let hex = apiary_core::Key::parse(&key).unwrap().to_hex();
    let _srv = serve_on(&p, &dht, &["films"]).await;

    // Plain JS: Hyperswarm + Corestore + Hyperbee, given only the key.
    let mut js = JsPeer::start().await;
    js.call(json!({"cmd": "swarm", "bootstrap": dht.bootstrap}))
        .await;
    js.call(json!({"cmd": "open", "name": "films", "key": hex}))
        .await;
    let r = js.call(json!({"cmd": "discover", "name": "films"})).await;
    assert_eq!(r["length"], 5, "{r}");
    let got = js
        .call(json!({"cmd": "range", "name": "films", "opts": {}}))
        .await;
    let entries = got["entries"].as_array().unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["m1", "m2"], "{got}");
    assert_eq!(entries[1]["value"]["title"], "Aliens");

    // A post made through the running serve reaches the JS reader live.
    p.run(&["put", "films", "m4", r#"{"title": "Prometheus"}"#]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        js.call(json!({"cmd": "update", "name": "films"})).await;
        let g = js
            .call(json!({"cmd": "get", "name": "films", "key": "m4"}))
            .await;
        if g["entry"]["value"]["title"] == "Prometheus" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "m4 never arrived: {g}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    js.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_follows_a_publisher_by_key_alone_and_its_new_bees() {
    init_tracing();
    let dht = TestDht::start().await;
    let p = Publisher::new();
    let key = p.init("posts");
    p.run(&["post", "posts", "hello from the dht", "--tag", "p2p"]);
    let srv = serve_on(&p, &dht, &["posts"]).await;

    let (_keep, dir) = temp_dir();
    let agg = AggProc::start_dht(dir.join("agg"), &dht, "").await;
    let t = std::time::Instant::now();
    assert_eq!(agg.follow(&key, None).await.0, 201);
    wait_hits(&agg, &key, "hello", 1, 180).await;
    eprintln!("follow → first entry searchable: {:?}", t.elapsed());

    // A post through the running serve shows up live.
    p.run(&["post", "posts", "second post over the dht"]);
    wait_hits(&agg, &key, "second", 1, 30).await;

    // A bee created while serving is announced too, and found by key alone.
    let key2 = p.init("later");
    p.run(&["put", "later", "x", r#"{"text": "made while serving"}"#]);
    srv.wait_line("announced on the DHT: later ", Duration::from_secs(60))
        .await;
    assert_eq!(agg.follow(&key2, None).await.0, 201);
    wait_hits(&agg, &key2, "serving", 1, 60).await;
    let (_, st) = agg.get(&format!("/v1/feeds/{key2}")).await;
    assert!(
        st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["via"] == "dht"),
        "{st}"
    );
}

/// The aggregator's bridge child (node running bridge.js), by /proc.
fn bridge_pid(agg_pid: u32) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(agg_pid) && String::from_utf8_lossy(&cmd).contains("bridge.js") {
            return Some(pid);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_bridge_loses_nothing_and_leaves_direct_peers_alone() {
    init_tracing();
    let dht = TestDht::start().await;
    let p = Publisher::new();
    let key = p.init("posts");
    p.run(&["post", "posts", "before the crash"]);
    let _srv = serve_on(&p, &dht, &["posts"]).await;
    // Another feed, followed through a known address only.
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "direct", "compat": false}))
        .await;
    let direct = created["key"].as_str().unwrap().to_owned();
    js.call(json!({"cmd": "put", "name": "direct", "key": "d1", "value": {"text": "direct one"}}))
        .await;
    let port = js.serve().await;

    let (_keep, dir) = temp_dir();
    let agg = AggProc::start_dht(dir.join("agg"), &dht, "").await;
    assert_eq!(agg.follow(&key, None).await.0, 201);
    assert_eq!(
        agg.follow(&direct, Some(&format!("127.0.0.1:{port}")))
            .await
            .0,
        201
    );
    wait_hits(&agg, &key, "before", 1, 180).await;
    wait_hits(&agg, &direct, "direct", 1, 30).await;

    let pid = bridge_pid(agg.pid().unwrap()).expect("the aggregator runs a bridge child");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    // Written while the bridge is down (or coming back).
    p.run(&["post", "posts", "while the bridge was down"]);
    js.call(json!({"cmd": "put", "name": "direct", "key": "d2", "value": {"text": "direct two"}}))
        .await;
    // The direct feed does not wait for the bridge.
    wait_hits(&agg, &direct, "two", 1, 10).await;
    // The bridge comes back, joins again and the post arrives.
    wait_hits(&agg, &key, "bridge", 1, 60).await;
    let new_pid = bridge_pid(agg.pid().unwrap()).expect("a new bridge child");
    assert_ne!(new_pid, pid);

    // Nothing lost, nothing twice.
    let (st, _) = agg
        .wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(10), |v| {
            v["indexedVersion"] == v["length"]
        })
        .await;
    let all = agg.all_entries(&key).await;
    assert_eq!(all.len(), 2, "{all:?} {st}");
    let metrics = agg
        .http
        .get(format!("{}/metrics", agg.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("apiary_dht_bridge_restarts_total 1\n"),
        "{metrics}"
    );
    js.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announce_that_reached_no_node_is_not_reported_and_is_retried() {
    init_tracing();
    // A port where nothing answers yet.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let boot = format!("127.0.0.1:{port}");
    let p = Publisher::new();
    p.init("late");
    let srv = p.serve(&["--bootstrap", &boot], None);
    srv.wait_line("announcing every bee on the DHT", Duration::from_secs(180))
        .await;
    // Its first announce gives up (hyperswarm's query ends with no node, ~12 s): from then on
    // only the publisher's own retries can reach a DHT that comes up later.
    srv.wait_line("reached no DHT node", Duration::from_secs(120))
        .await;
    assert!(
        !srv.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("announced on the DHT")),
        "nothing was reached, so nothing is said to be announced"
    );
    // The DHT comes up on that address: the announce is retried and reaches it.
    let _dht = TestDht::start_on(None, "127.0.0.1", port).await;
    srv.wait_line("announced on the DHT: late ", Duration::from_secs(60))
        .await;
}
