//! Across NAT: the publisher behind one home router, the aggregator behind another, the DHT on
//! the "internet" between them (network namespaces, nftables masquerade, unsolicited inbound
//! dropped). The aggregator follows the publisher by key alone, through hyperswarm's
//! holepunching. Needs root, `ip netns` and `nft` (`.ci/run` installs nftables); where they
//! are missing the test says so and is skipped.

use std::process::Stdio;
use std::time::Duration;

use apiary_tests::dht::TestDht;
use apiary_tests::netns::{NatRig, ROUTER_A, WAN_HOST};
use apiary_tests::publisher::Publisher;
use apiary_tests::{bin_path, free_port, init_tracing};
use serde_json::{json, Value};

/// An HTTP request made from inside a namespace (Node's fetch): (status, JSON body).
async fn ns_http(ns: &str, method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let script = "const [m, u, b] = process.argv.slice(1);\
        fetch(u, {method: m, headers: {'content-type': 'application/json'}, body: b || undefined})\
        .then(async r => console.log(JSON.stringify({s: r.status, b: await r.text()})))\
        .catch(e => console.log(JSON.stringify({s: 0, b: String(e)})))";
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, "node", "-e", script, method, url])
        .arg(body.map(|b| b.to_string()).unwrap_or_default())
        .output()
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.trim()).unwrap_or(json!({"s": 0, "b": ""}));
    let status = v["s"].as_u64().unwrap_or(0) as u16;
    let body = serde_json::from_str(v["b"].as_str().unwrap_or("")).unwrap_or(Value::Null);
    (status, body)
}

/// Starts the aggregator inside `ns`; returns the process and its HTTP base URL.
async fn aggregator_in(
    ns: &str,
    dir: &std::path::Path,
    bootstrap: &str,
) -> (tokio::process::Child, String) {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port();
    let config = dir.join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nhttp = \"127.0.0.1:{port}\"\nlisten = \"\"\nlog = \"warn\"\ndht = true\nbootstrap = [\"{bootstrap}\"]\n",
            dir.join("data")
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin_path("apiary-aggregator", "apiary-aggregator"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ns_http(ns, "GET", &format!("{base}/healthz"), None).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "aggregator never came up in {ns}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (child, base)
}

/// Polls the feed's status until its entry is indexed, for at most `secs`.
async fn indexed(ns: &str, base: &str, key: &str, secs: u64) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        let (s, st) = ns_http(ns, "GET", &format!("{base}/v1/feeds/{key}"), None).await;
        if s == 200 && st["indexedVersion"].as_u64().unwrap_or(0) >= 2 {
            return Some(st);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_follows_a_publisher_across_two_nats_by_key_alone() {
    init_tracing();
    if let Some(why) = NatRig::unavailable() {
        eprintln!("SKIPPED aggregator_follows_a_publisher_across_two_nats_by_key_alone: {why}");
        return;
    }
    // Inside the rig nothing reaches the npm registry: install the bridge first.
    let cache = apiary_swarm::install::default_cache_dir(&std::env::temp_dir());
    apiary_swarm::install::ensure_installed(&cache, "npm")
        .await
        .expect("the DHT bridge installs");
    apiary_tests::ensure_js();
    let rig = NatRig::setup().expect("the NAT rig is built");
    let dht = TestDht::start_in(Some(&rig.ns("wan")), WAN_HOST).await;
    let boot = dht.bootstrap[0].clone();

    let p = Publisher::new();
    let key = p.init("home");
    p.run(&["post", "home", "posted from behind a home router"]);
    let srv = p.serve(&["--bootstrap", &boot], Some(&rig.ns("lan-a")));
    srv.wait_line("announced on the DHT: home ", Duration::from_secs(60))
        .await;

    let lan_b = rig.ns("lan-b");
    let dir = tempfile::tempdir().unwrap();
    // 30 s budget and one retry (a fresh aggregator process), as the rig's measurements advise.
    let mut found = None;
    for attempt in 1..=2 {
        let (mut agg, base) =
            aggregator_in(&lan_b, &dir.path().join(format!("agg{attempt}")), &boot).await;
        let t = std::time::Instant::now();
        let (s, body) = ns_http(
            &lan_b,
            "POST",
            &format!("{base}/v1/feeds"),
            Some(&json!({"key": key})),
        )
        .await;
        assert_eq!(s, 201, "{body}");
        if let Some(st) = indexed(&lan_b, &base, &key, 30).await {
            eprintln!(
                "attempt {attempt}: indexed across NAT after {:?}: {st}",
                t.elapsed()
            );
            let (_, hits) =
                ns_http(&lan_b, "GET", &format!("{base}/v1/search?q=router"), None).await;
            found = Some((st, hits));
            let _ = agg.kill().await;
            break;
        }
        eprintln!("attempt {attempt}: not connected within 30 s");
        let _ = agg.kill().await;
    }
    let (st, hits) = found.expect("the aggregator reached the publisher across NAT");
    assert_eq!(hits["entries"].as_array().map(Vec::len), Some(1), "{hits}");
    // A direct holepunch: the publisher is seen at its router's public address.
    let peer = st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["via"] == "dht")
        .cloned()
        .expect("a DHT peer");
    assert!(
        peer["address"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{ROUTER_A}:")),
        "punched straight to router A: {peer}"
    );
    drop(srv);
    drop(dht);
    drop(rig);
}
