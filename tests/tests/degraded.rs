//! Transient I/O errors are not fatal (issue 10, item 2): a data directory that fills up, and
//! index commits that fail for lack of file descriptors. Reads go on, /healthz says
//! "degraded" and why, /readyz is 503, and ingest resumes when the cause is gone, with
//! nothing lost or indexed twice.

use std::process::Command;
use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{init_tracing, JsPeer};
use serde_json::{json, Value};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

async fn js_bee(n: usize) -> (JsPeer, String, u16) {
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "b", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    js.call(json!({"cmd": "fill", "name": "b", "count": n, "valueBytes": 200}))
        .await;
    let port = js.serve().await;
    (js, key, port)
}

/// Every key of the feed, checked for duplicates.
async fn keys(agg: &AggProc, key: &str) -> Vec<String> {
    let all = agg.all_entries(key).await;
    let mut k: Vec<String> = all
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    let n = k.len();
    k.sort();
    k.dedup();
    assert_eq!(k.len(), n, "no entry twice");
    k
}

async fn wait_indexed(agg: &AggProc, key: &str, version: u64, secs: u64) -> Value {
    agg.wait_for(
        &format!("/v1/feeds/{key}"),
        Duration::from_secs(secs),
        |v| v["indexedVersion"] == json!(version),
    )
    .await
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_ingest_and_it_resumes_with_nothing_lost() {
    init_tracing();
    if !is_root() {
        eprintln!("SKIPPED a_full_disk_pauses_ingest…: mounting a small tmpfs needs root");
        return;
    }
    let (_keep, dir) = temp_dir();
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED a_full_disk_pauses_ingest…: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());

    let (mut js, key, port) = js_bee(500).await;
    let agg = AggProc::start(
        mnt.join("agg"),
        "min_free_disk_mb = 24\ncommit_interval_ms = 20\nindex_memory_mb = 15",
    )
    .await;
    assert_eq!(
        agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await.0,
        201
    );
    wait_indexed(&agg, &key, 501, 60).await;

    // Leave 12 MB: under the watermark.
    let free = fs_free_mb(&mnt);
    let filler = mnt.join("filler");
    let fill = free.saturating_sub(12);
    let st = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", &format!("count={fill}")])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let (h, _) = agg
        .wait_for("/healthz", Duration::from_secs(15), |v| {
            v["status"] == "degraded"
        })
        .await;
    let why = h["degraded"].to_string();
    assert!(why.contains("MB free"), "{h}");
    assert_eq!(agg.get("/readyz").await.0, 503);
    // Reads go on.
    let (s, page) = agg.get(&format!("/v1/feed?feed={key}&limit=5")).await;
    assert_eq!(s, 200, "{page}");
    // Writes made meanwhile wait: the aggregator hears of them (the peer announces the new
    // length) and, degraded, indexes none of them in a window of 150 commit intervals.
    js.call(json!({"cmd": "fill", "name": "b", "start": 500, "count": 40, "valueBytes": 200}))
        .await;
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(15), |v| {
        v["remoteLength"] == json!(541)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, st) = agg.get(&format!("/v1/feeds/{key}")).await;
    assert_eq!(st["indexedVersion"], json!(501), "paused: {st}");

    // Room again: ingest resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    agg.wait_for("/healthz", Duration::from_secs(15), |v| v["status"] == "ok")
        .await;
    wait_indexed(&agg, &key, 541, 60).await;
    assert_eq!(keys(&agg, &key).await.len(), 540);
    assert_eq!(agg.get("/readyz").await.0, 200);
    js.close().await;
}

fn fs_free_mb(p: &std::path::Path) -> u64 {
    let out = Command::new("df").args(["-Pm"]).arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// With descriptors back: the index is `ok` again, indexed up to `version`, with `count`
/// keys (none twice) and without the `deleted` one.
async fn recovers(agg: &AggProc, key: &str, version: u64, count: usize, deleted: &str) {
    agg.wait_for("/healthz", Duration::from_secs(40), |v| v["status"] == "ok")
        .await;
    wait_indexed(agg, key, version, 60).await;
    let k = keys(agg, key).await;
    assert_eq!(k.len(), count, "keys after the recovery");
    assert!(!k.iter().any(|x| x == deleted), "{deleted} is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commits_roll_back_and_retry_with_nothing_lost_or_doubled() {
    init_tracing();
    let (mut js, key, port) = js_bee(300).await;
    let (_keep, dir) = temp_dir();
    let agg = AggProc::start(dir.join("agg"), "commit_interval_ms = 20").await;
    let pid = agg.pid().unwrap();
    assert_eq!(
        agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await.0,
        201
    );
    wait_indexed(&agg, &key, 301, 60).await;
    // Keep the probe connection open, then leave the process almost no descriptors:
    // tantivy cannot create the files of a new segment, so the next commit fails.
    let (s, _) = agg.get("/healthz").await;
    assert_eq!(s, 200);
    let n = open_fds(pid);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft_was = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap()
        .to_owned();
    let limit = |soft: String| {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "prlimit works here");
    };
    limit((n + 1).to_string());
    // A mix of new keys, overwrites and deletes, made while commits fail.
    js.call(json!({"cmd": "fill", "name": "b", "start": 300, "count": 30, "valueBytes": 200}))
        .await;
    js.call(json!({"cmd": "batch", "name": "b", "ops": [
        {"type": "put", "key": "k00000001", "value": {"text": "rewritten"}},
        {"type": "del", "key": "k00000002"}
    ]}))
    .await;
    let (h, _) = agg
        .wait_for("/healthz", Duration::from_secs(20), |v| {
            v["status"] == "degraded"
        })
        .await;
    assert!(h["degraded"].to_string().contains("commit failed"), "{h}");
    // Reads still work on the open connection.
    let (s, _) = agg.get(&format!("/v1/entries/{key}/k00000003")).await;
    assert_eq!(s, 200);

    limit(soft_was.clone());
    recovers(&agg, &key, 333, 329, "k00000002").await; // 300 + 30 - 1 deleted
    let (_, one) = agg.get(&format!("/v1/entries/{key}/k00000001")).await;
    assert_eq!(one["value"]["text"], "rewritten");

    // No descriptor at all: the rollback cannot read the last commit either. tantivy has
    // then dropped the writer's lock and panics if asked to roll back again, so the writer
    // is dropped and opened afresh on the last commit once descriptors are back.
    let (s, _) = agg.get("/healthz").await;
    assert_eq!(s, 200);
    limit("3".into());
    js.call(json!({"cmd": "fill", "name": "b", "start": 330, "count": 20, "valueBytes": 200}))
        .await;
    js.call(json!({"cmd": "batch", "name": "b", "ops": [{"type": "del", "key": "k00000003"}]}))
        .await;
    let (h, _) = agg
        .wait_for("/healthz", Duration::from_secs(30), |v| {
            v["degraded"]
                .to_string()
                .contains("reopening the index writer")
        })
        .await;
    assert_eq!(h["status"], "degraded", "{h}");
    limit(soft_was);
    recovers(&agg, &key, 354, 348, "k00000003").await; // 329 + 20 - 1 deleted
    js.close().await;
}
