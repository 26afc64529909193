//! One client must not take the aggregator down (issue 10, item 1): under a low open file
//! limit, one address opens hundreds of half-open HTTP connections and idle replication
//! connections; probes from elsewhere are answered, a publisher's posts are indexed, the
//! attacker's connections are refused over the per-address cap or closed by the header
//! timeout, and /metrics counts it.

use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{init_tracing, JsPeer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(src: &str, addr: &str) -> Option<TcpStream> {
    let s = TcpSocket::new_v4().ok()?;
    s.bind(format!("{src}:0").parse().ok()?).ok()?;
    s.connect(addr.parse().ok()?).await.ok()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_from_one_address_take_nothing_down() {
    init_tracing();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "b", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    js.call(json!({"cmd": "put", "name": "b", "key": "k0", "value": {"text": "before"}}))
        .await;
    let port = js.serve().await;

    let (_keep, dir) = temp_dir();
    let agg = AggProc::start_under(
        dir.join("agg"),
        "http_header_timeout_ms = 1000\nfd_reserve = 128\ncommit_interval_ms = 20",
        &["prlimit", "--nofile=512:512"],
    )
    .await;
    let pid = agg.pid().unwrap();
    assert_eq!(
        agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await.0,
        201
    );
    let http = agg.base.trim_start_matches("http://").to_owned();

    // The attack, all from 127.0.0.2: heads that never end, and silent replication sockets.
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Some(mut c) = connect_from("127.0.0.2", &http).await {
            let _ = c.write_all(b"GET /v1/feed HTTP/1.1\r\nhost: x\r\n").await;
            held.push(c);
        }
    }
    for _ in 0..100 {
        if let Some(c) = connect_from("127.0.0.2", &agg.listen).await {
            held.push(c);
        }
    }
    // Meanwhile: probes from another address, and posts.
    let mut answered = 0;
    for i in 0..40 {
        let (s, _) = agg.get("/healthz").await;
        if s == 200 {
            answered += 1;
        }
        if i % 4 == 0 {
            js.call(json!({"cmd": "put", "name": "b", "key": format!("k{}", i / 4 + 1), "value": {"text": "during the attack"}}))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(answered, 40, "every probe answered");
    assert!(open_fds(pid) < 512, "within the file limit");
    agg.wait_for(
        &format!("/v1/search?q=attack&feed={key}&limit=100"),
        Duration::from_secs(30),
        |v| v["entries"].as_array().is_some_and(|e| e.len() == 10),
    )
    .await;

    let text = agg
        .http
        .get(format!("{}/metrics", agg.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused_http = metric(
        &text,
        "apiary_connections_refused_total{listener=\"http\",reason=\"per_ip\"} ",
    );
    let refused_repl = metric(
        &text,
        "apiary_connections_refused_total{listener=\"replication\",reason=\"per_ip\"} ",
    );
    assert!(refused_http >= 200.0, "{text}");
    assert!(refused_repl >= 50.0, "{text}");
    assert_eq!(
        metric(&text, "apiary_open_files_limit{kind=\"soft\"} "),
        512.0,
        "{text}"
    );

    // The admitted half-open HTTP connections are closed by the header timeout, the silent
    // replication ones by the handshake timeout: every held socket ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut closed = 0;
    for c in held.iter_mut() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut b = [0u8; 512];
        loop {
            match tokio::time::timeout(left, c.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    assert_eq!(closed, held.len(), "every attacking connection was closed");
    let (s, _) = agg.get("/healthz").await;
    assert_eq!(s, 200);
    js.close().await;
}
