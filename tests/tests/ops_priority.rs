//! Operations: reads before ingest. The HTTP API's threads run at the process's priority,
//! every other thread (ingest's runtime, the index writer and merges, the store, the main
//! thread) `ingest_nice` lower (aggregator/src/priority.rs). Linux only: /proc per thread.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{init_tracing, JsPeer};
use serde_json::json;

/// Every thread of `pid`: (name, nice value).
fn threads(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in dir.flatten() {
        let p = t.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        // tid (comm) state ppid ... : after the comm, field 19 (nice) is the 17th.
        let nice = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(16))
            .and_then(|n| n.parse().ok());
        if let Some(nice) = nice {
            out.push((name.trim().to_owned(), nice));
        }
    }
    out
}

/// The nice value of this (test) process, which the aggregator starts with.
fn own_nice() -> i64 {
    threads(std::process::id())
        .first()
        .map(|t| t.1)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_runs_above_ingest() {
    init_tracing();
    let (_keep, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "p", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    for i in 0..20 {
        js.call(json!({"cmd": "put", "name": "p", "key": format!("k{i}"), "value": {"text": format!("post {i}")}}))
            .await;
    }
    let port = js.serve().await;
    let agg = AggProc::start(dir.join("agg"), "ingest_nice = 7").await;
    // Followed through the HTTP API: its feed task must still start on ingest's runtime.
    let (s, _) = agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(s, 201);
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(30), |v| {
        v["indexedVersion"] == json!(21)
    })
    .await;
    for q in ["/v1/feed", "/v1/search?q=post"] {
        let r = agg
            .http
            .get(format!("{}{q}", agg.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{q}");
    }
    let pid = agg.pid().unwrap();
    let base = own_nice();
    let low = (base + 7).min(19);
    // Threads start (and lower themselves) as they are needed: wait for a settled view.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = threads(pid);
        let mut by_nice: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (name, nice) in &all {
            by_nice.entry(*nice).or_default().push(name.clone());
        }
        let http_ok = all
            .iter()
            .filter(|(n, _)| n == "apiary-http")
            .all(|(_, nice)| *nice == base);
        let rest_ok = all
            .iter()
            .filter(|(n, _)| n != "apiary-http")
            .all(|(_, nice)| *nice == low);
        let has = |prefix: &str| all.iter().any(|(n, _)| n.starts_with(prefix));
        let present = has("apiary-http") && has("tokio-rt") && has("thrd-tantivy");
        if http_ok && rest_ok && present {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "want the HTTP threads at {base} and every other at {low}: {by_nice:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
