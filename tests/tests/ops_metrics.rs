//! Operations: `/metrics` in the Prometheus text format, with every number of the feed
//! status API per feed and the degraded state per source.

use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{init_tracing, JsPeer};
use serde_json::json;

async fn scrape(agg: &AggProc) -> (String, String) {
    let r = agg
        .http
        .get(format!("{}/metrics", agg.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    (ct, r.text().await.unwrap())
}

/// The value of the sample whose line starts with `series ` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_per_feed_and_degraded_state() {
    init_tracing();
    let (_keep, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "m", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    for i in 0..5 {
        js.call(json!({"cmd": "put", "name": "m", "key": format!("k{i}"), "value": {"text": format!("post {i}")}}))
            .await;
    }
    let big = "x".repeat(2000);
    js.call(json!({"cmd": "put", "name": "m", "key": "big", "value": {"text": big}}))
        .await;
    let port = js.serve().await;
    let mut agg = AggProc::start(dir.join("agg"), "max_value_bytes = 1000").await;
    let (s, _) = agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(s, 201);
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(30), |v| {
        v["indexedVersion"] == json!(7)
    })
    .await;

    let (ct, m) = scrape(&agg).await;
    // Series are labelled with the z-base-32 form of the key, as the feed API shows it.
    let key = apiary_core::Key::parse(&key).unwrap().to_z32();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let feed = |name: &str| value(&m, &format!("{name}{{feed=\"{key}\"}}"));
    assert_eq!(feed("apiary_feed_indexed_version"), Some(7.0), "{m}");
    assert_eq!(feed("apiary_feed_length"), Some(7.0), "{m}");
    assert_eq!(feed("apiary_feed_lag"), Some(0.0), "{m}");
    assert_eq!(feed("apiary_feed_peers"), Some(1.0), "{m}");
    assert_eq!(feed("apiary_feed_errors_total"), Some(0.0), "{m}");
    assert!(
        feed("apiary_feed_blocks_downloaded_total").unwrap() >= 7.0,
        "{m}"
    );
    assert!(
        feed("apiary_feed_bytes_downloaded_total").unwrap() > 2000.0,
        "{m}"
    );
    let skipped = |reason: &str| {
        value(
            &m,
            &format!("apiary_feed_skipped_values_total{{feed=\"{key}\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(skipped("too_large"), Some(1.0), "{m}");
    assert_eq!(skipped("not_json"), Some(0.0), "{m}");
    // The process-wide ones, under the names they always had.
    assert_eq!(value(&m, "apiary_feeds_followed"), Some(1.0), "{m}");
    assert_eq!(value(&m, "apiary_entries_indexed"), Some(5.0), "{m}");
    assert!(
        value(&m, "apiary_entries_ingested_total").unwrap() >= 6.0,
        "{m}"
    );
    assert!(
        value(&m, "apiary_blocks_downloaded_total").unwrap() >= 7.0,
        "{m}"
    );
    assert_eq!(value(&m, "apiary_connections"), Some(1.0), "{m}");
    // The entries are searchable, so at least one commit was timed: a count, a sum, and
    // cumulative buckets ending in +Inf equal to the count.
    let commits = value(&m, "apiary_index_commit_seconds_count").unwrap_or(0.0);
    assert!(commits >= 1.0, "{m}");
    assert!(
        value(&m, "apiary_index_commit_seconds_sum").unwrap() > 0.0,
        "{m}"
    );
    assert_eq!(
        value(&m, "apiary_index_commit_seconds_bucket{le=\"+Inf\"}"),
        Some(commits),
        "{m}"
    );
    assert!(value(&m, "apiary_open_files_limit{kind=\"soft\"}").unwrap() > 0.0);
    assert!(value(&m, "apiary_listener_connections{listener=\"http\"}").unwrap() >= 1.0);
    assert_eq!(
        value(
            &m,
            "apiary_connections_refused_total{listener=\"replication\",reason=\"total\"}"
        ),
        Some(0.0),
        "{m}"
    );
    assert_eq!(value(&m, "apiary_dht_up"), Some(0.0), "{m}");
    for source in ["disk", "index", "store"] {
        let s = format!("apiary_degraded{{source=\"{source}\"}}");
        assert_eq!(value(&m, &s), Some(0.0), "{m}");
    }
    assert!(m.contains("# TYPE apiary_feed_errors_total counter"), "{m}");

    // Unfollowed: its series are gone.
    assert_eq!(agg.delete(&format!("/v1/feeds/{key}"), None).await, 204);
    let (_, m) = scrape(&agg).await;
    assert!(!m.contains(&key), "{m}");
    assert_eq!(value(&m, "apiary_feeds_followed"), Some(0.0), "{m}");
    let (exit, _) = agg.terminate(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0));

    // A disk under the watermark: degraded{source="disk"} is 1 (checked every 2 s).
    let mut low = AggProc::start(dir.join("low"), "min_free_disk_mb = 1000000000").await;
    let t = std::time::Instant::now();
    loop {
        let (_, m) = scrape(&low).await;
        if value(&m, "apiary_degraded{source=\"disk\"}") == Some(1.0) {
            assert_eq!(value(&m, "apiary_degraded{source=\"index\"}"), Some(0.0));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    low.kill9().await;
    js.close().await;
}
