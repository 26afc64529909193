//! Operations: both binaries stop cleanly on SIGTERM (what systemd sends), and the aggregator
//! resumes after it without ingesting anything again; logs as JSON lines.

use std::process::Stdio;
use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::dht::TestDht;
use apiary_tests::publisher::Publisher;
use apiary_tests::{bin_path, init_tracing, printed, JsPeer, StdoutLines};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

fn indexed(st: &Value) -> u64 {
    st["indexedVersion"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_stops_on_sigterm_and_resumes_without_reingest() {
    init_tracing();
    let (_keep, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "b", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    js.call(json!({"cmd": "fill", "name": "b", "count": 6000, "valueBytes": 64}))
        .await;
    let final_version = 6001;
    let port = js.serve().await;
    let mut agg = AggProc::start(dir.join("agg"), "commit_interval_ms = 20").await;
    let (s, _) = agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(s, 201);
    let path = format!("/v1/feeds/{key}");

    // SIGTERM in the middle of the ingest: a clean exit, and nothing committed is lost.
    let (st, _) = agg
        .wait_for(&path, Duration::from_secs(60), |v| indexed(v) > 0)
        .await;
    let before = indexed(&st);
    let (exit, took) = agg.terminate(Duration::from_secs(10)).await;
    eprintln!("SIGTERM at indexed version {before}: {exit:?} after {took:?}");
    assert_eq!(exit.code(), Some(0), "exits 0 on SIGTERM");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    agg.restart().await;
    let (_, st) = agg.get(&path).await;
    assert!(indexed(&st) >= before, "{st} after {before}");

    // Caught up, SIGTERM, and the peer gone: the restart has every entry from its own disk.
    agg.wait_for(&path, Duration::from_secs(120), |v| {
        indexed(v) == final_version
    })
    .await;
    let entries = agg.all_entries(&key).await.len();
    assert_eq!(entries, 6000);
    let (exit, took) = agg.terminate(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    js.close().await;
    agg.restart().await;
    let (_, st) = agg.get(&path).await;
    assert_eq!(indexed(&st), final_version, "{st}");
    assert_eq!(st["length"], json!(final_version), "blocks flushed: {st}");
    assert_eq!(agg.all_entries(&key).await.len(), entries);
    let (exit, _) = agg.terminate(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0));
}

/// Whether a process runs (a zombie does not count: it has exited, unreaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// With the DHT on, SIGTERM also stops the bridge (it leaves the DHT first), within the
/// same few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_leaves_the_dht_on_sigterm() {
    init_tracing();
    let dht = TestDht::start().await;
    let (_keep, dir) = temp_dir();
    let mut agg = AggProc::start_dht(dir.join("agg"), &dht, "").await;
    let key = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";
    assert_eq!(agg.follow(key, None).await.0, 201);
    agg.wait_for("/healthz", Duration::from_secs(120), |v| {
        v["dht"] == "running"
    })
    .await;
    let bridge = agg.bridge_pid().expect("a bridge child");
    let (exit, took) = agg.terminate(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let t = std::time::Instant::now();
    while alive(bridge) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the bridge {bridge} outlived it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_serve_stops_on_sigterm() {
    init_tracing();
    let p = Publisher::new();
    p.init("notes");
    p.run(&["post", "notes", "before the stop"]);
    let mut srv = p.serve(&["--no-dht"], None);
    srv.wait_line("serving 1 bee(s)", Duration::from_secs(30))
        .await;
    let pid = srv.child.id().unwrap().to_string();
    let t = std::time::Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let st = tokio::time::timeout(Duration::from_secs(10), srv.child.wait())
        .await
        .expect("serve exits after SIGTERM")
        .unwrap();
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    srv.wait_line("shutting down", Duration::from_secs(1)).await;
    // The data directory is free again, and the post is there.
    let out = p.run(&["list", "notes"]);
    assert!(out.contains("before the stop"), "{out}");
}

/// With `--log-format json` every log line on stderr is one JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_logs_json_lines() {
    let (_keep, dir) = temp_dir();
    let mut child =
        tokio::process::Command::new(bin_path("apiary-aggregator", "apiary-aggregator"))
            .args(["--log-format", "json", "--no-dht", "--listen", ""])
            .args(["--http", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // It prints its address once it listens.
    StdoutLines::collect(child.stdout.take().unwrap())
        .wait_for(
            "the HTTP address",
            Duration::from_secs(30),
            printed::aggregator_http,
        )
        .await;
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut got = Vec::new();
    while let Ok(Ok(Some(l))) =
        tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await
    {
        got.push(l);
    }
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    assert!(!got.is_empty());
    for l in &got {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
    }
    assert!(
        got.iter()
            .any(|l| l.contains("\"SIGTERM: shutting down\"") || l.contains("SIGTERM")),
        "{got:?}"
    );
}
