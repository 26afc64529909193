//! Aggregator features through the real binaries: live SSE, oversized values, the backfill
//! window, registration by the publisher, metrics.

use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{bin_path, printed, run_bin, StdoutLines};
use serde_json::{json, Value};

/// Listen on a port of the process's choosing.
const ANY: &str = "127.0.0.1:0";

struct Publisher {
    bin: std::path::PathBuf,
    dir: String,
}

impl Publisher {
    fn new(dir: &std::path::Path) -> Publisher {
        Publisher {
            bin: bin_path("apiary-publisher", "apiary-publisher"),
            dir: dir.to_string_lossy().into(),
        }
    }
    fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["--data-dir", &self.dir];
        all.extend_from_slice(args);
        let (code, out, err) = run_bin(&self.bin, &all);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    }
    fn init(&self, name: &str) -> String {
        // The z-base-32 key (the hyper:// URL without its scheme), usable in URL paths.
        let url = self.run(&["init", name]).lines().next().unwrap().to_owned();
        url.trim_start_matches("hyper://").to_owned()
    }
    /// `serve` on `listen` (`127.0.0.1:0`: a port of its choosing), with the local page on a
    /// port of its choosing or without: the process, its replication address and its page's
    /// (as printed).
    async fn serve(
        &self,
        listen: &str,
        page: bool,
    ) -> (tokio::process::Child, String, Option<String>) {
        let page_args = if page {
            ["--page", "127.0.0.1:0"].as_slice()
        } else {
            ["--no-page"].as_slice()
        };
        let mut c = tokio::process::Command::new(&self.bin)
            .args(["--data-dir", &self.dir, "serve", "--no-dht"])
            .args(["--listen", listen])
            .args(page_args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = StdoutLines::collect(c.stdout.take().unwrap());
        let start = Duration::from_secs(20);
        let addr = out
            .wait_for("the address", start, printed::publisher_replication)
            .await;
        let page_addr = match page {
            true => Some(
                out.wait_for("the page", start, printed::publisher_page)
                    .await,
            ),
            false => None,
        };
        (c, addr, page_addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_sends_new_entries() {
    let (_keep, dir) = temp_dir();
    let p = Publisher::new(&dir.join("pub"));
    let key = p.init("social");
    let (mut child, addr, page) = p.serve(ANY, true).await;
    let page = page.unwrap();
    let agg = AggProc::start(
        dir.join("agg"),
        &format!("[[follow]]\nkey = \"{key}\"\npeers = [\"{addr}\"]"),
    )
    .await;
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(10), |v| {
        v["length"] == json!(1)
    })
    .await;

    let mut sse = reqwest::get(format!("{}/v1/stream?type=post&tag=live", agg.base))
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let client = reqwest::Client::new();
    let t0 = std::time::Instant::now();
    // One that the filter drops, then one it passes.
    for (text, tag) in [("not this one", "other"), ("hello live world", "live")] {
        let r = client
            .post(format!("http://{page}/api/bees/social/posts"))
            .json(&json!({"text": text, "tags": [tag]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut buf = String::new();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = sse.chunk().await.unwrap() {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(line) = buf.lines().find(|l| l.starts_with("data: {")) {
                return serde_json::from_str::<Value>(line.trim_start_matches("data: ")).unwrap();
            }
        }
        panic!("stream ended");
    })
    .await
    .expect("an SSE event");
    eprintln!("post → SSE event in {:?}", t0.elapsed());
    assert_eq!(got["value"]["text"], "hello live world");
    assert!(buf.contains("event: entry"));
    assert!(!buf.contains("not this one"));
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_are_skipped_and_counted_and_backfill_window_reads_sparsely() {
    let (_keep, dir) = temp_dir();
    let p = Publisher::new(&dir.join("pub"));
    let big = p.init("big");
    let many = p.init("many");
    p.run(&["put", "big", "small", r#"{"title":"small one"}"#]);
    p.run(&[
        "put",
        "big",
        "huge",
        &json!({"title": "x".repeat(5000)}).to_string(),
    ]);
    for i in 0..50 {
        p.run(&[
            "put",
            "many",
            &format!("k{i:02}"),
            &json!({"title": format!("item {i}")}).to_string(),
        ]);
    }
    let (mut child, addr, _) = p.serve(ANY, false).await;
    let agg = AggProc::start(
        dir.join("agg"),
        &format!(
            "max_value_bytes = 1000\nbackfill = 10\n[[follow]]\nkey = \"{big}\"\npeers = [\"{addr}\"]\n[[follow]]\nkey = \"{many}\"\npeers = [\"{addr}\"]"
        ),
    )
    .await;
    let (st, _) = agg
        .wait_for(&format!("/v1/feeds/{big}"), Duration::from_secs(10), |v| {
            v["indexedVersion"] == json!(3)
        })
        .await;
    assert_eq!(st["skipped"]["tooLarge"], 1, "{st}");
    let (_, feed) = agg.get(&format!("/v1/feed?feed={big}")).await;
    let keys: Vec<&str> = feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["small"]);

    // backfill = 10: only the newest 10 log entries of a 50-entry bee, fetched sparsely.
    let (st, _) = agg
        .wait_for(&format!("/v1/feeds/{many}"), Duration::from_secs(10), |v| {
            v["indexedVersion"] == json!(51)
        })
        .await;
    let (_, feed) = agg.get(&format!("/v1/feed?feed={many}&limit=100")).await;
    let mut keys: Vec<String> = feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, (40..50).map(|i| format!("k{i}")).collect::<Vec<_>>());
    assert!(st["blocksDownloaded"].as_u64().unwrap() <= 12, "{st}");

    let metrics = agg
        .http
        .get(format!("{}/metrics", agg.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("apiary_feeds_followed 2"), "{metrics}");
    assert!(metrics.contains("apiary_entries_indexed 11"), "{metrics}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_registers_its_bee_with_a_token() {
    let (_keep, dir) = temp_dir();
    let token = "registration-token-0123456789";
    let agg = AggProc::start(dir.join("agg"), &format!("admin_token = \"{token}\"")).await;
    let p = Publisher::new(&dir.join("pub"));
    let key = p.init("notes");
    p.run(&["put", "notes", "n1", r#"{"title":"registered"}"#]);
    let (mut child, addr, _) = p.serve(ANY, false).await;
    // serve holds the data dir: register reads it, so stop serve, register, serve again.
    child.kill().await.unwrap();
    let _ = child.wait().await;
    let (code, _, err) = run_bin(
        &p.bin,
        &[
            "--data-dir",
            &p.dir,
            "register",
            "notes",
            "--aggregator",
            &agg.base,
        ],
    );
    assert_eq!(code, 1, "no token: refused");
    assert!(err.contains("401"), "{err}");
    let out = p.run(&[
        "register",
        "notes",
        "--aggregator",
        &agg.base,
        "--token",
        token,
        "--address",
        &addr,
    ]);
    assert!(out.contains("registered notes"), "{out}");
    // Again on the address it had (and registered).
    let (mut child, again, _) = p.serve(&addr, false).await;
    assert_eq!(again, addr);
    agg.wait_for("/v1/search?q=registered", Duration::from_secs(15), |v| {
        v["entries"].as_array().unwrap().len() == 1
    })
    .await;
    let (_, st) = agg.get(&format!("/v1/feeds/{key}")).await;
    assert_eq!(st["peers"][0]["address"], json!(addr));
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_pages_walk_entries_spread_over_years_newest_first() {
    let (_keep, dir) = temp_dir();
    let p = Publisher::new(&dir.join("pub"));
    let key = p.init("years");
    let dates = [
        "2019-03-01T00:00:00Z",
        "2023-07-01T10:00:00Z",
        "2023-07-01T10:00:00Z",
        "2025-01-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
        "2026-11-25T00:00:00Z",
        "2099-01-01T00:00:00Z",
    ];
    for (i, d) in dates.iter().enumerate() {
        p.run(&[
            "put",
            "years",
            &format!("e{i}"),
            &json!({"text": format!("entry {i}"), "createdAt": d}).to_string(),
        ]);
    }
    let (mut child, addr, _) = p.serve(ANY, false).await;
    let agg = AggProc::start(
        dir.join("agg"),
        &format!("[[follow]]\nkey = \"{key}\"\npeers = [\"{addr}\"]"),
    )
    .await;
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(10), |v| {
        v["indexedVersion"] == json!(8)
    })
    .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/feed?limit=2&cursor={c}"),
            None => "/v1/feed?limit=2".to_owned(),
        };
        let (s, v) = agg.get(&path).await;
        assert_eq!(s, 200, "{v}");
        for e in v["entries"].as_array().unwrap() {
            seen.push((
                e["sortAt"].as_str().unwrap().to_owned(),
                e["key"].as_str().unwrap().to_owned(),
            ));
        }
        match v["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let keys: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    // e6's forged 2099 date sorts at its seenAt (now), so it leads; then by date, ties by id.
    assert_eq!(
        keys,
        vec!["e6", "e5", "e4", "e3", "e1", "e2", "e0"],
        "{seen:?}"
    );
    let (_, since) = agg
        .get("/v1/feed?since=2023-01-01T00:00:00Z&until=2025-06-01T00:00:00Z")
        .await;
    assert_eq!(since["entries"].as_array().unwrap().len(), 3);
    child.kill().await.unwrap();
}
