//! Operations: `apiary-aggregator backup DIR` while the aggregator runs and ingests, then
//! a restore (an aggregator on the backup) that has exactly what the backup covered and
//! catches up from the peer without doubling anything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{bin_path, init_tracing, run_bin, wait_until, JsPeer};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP relay to the JS peer that the test can shut, so that the restored aggregator can be
/// looked at before it reaches the peer.
struct Relay {
    port: u16,
    open: Arc<AtomicBool>,
    /// Connections accepted and dropped while shut.
    refused: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl Relay {
    async fn to(port: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (o, r, c) = (open.clone(), refused.clone(), conns.clone());
        let relay_port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                if !o.load(Ordering::SeqCst) {
                    r.fetch_add(1, Ordering::SeqCst);
                    continue; // dropped: the dialer sees the connection end
                }
                c.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
                    }
                }));
            }
        });
        Relay {
            port: relay_port,
            open,
            refused,
            conns,
            task,
        }
    }

    fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        if !open {
            for h in self.conns.lock().unwrap().drain(..) {
                h.abort();
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.set_open(false);
        self.task.abort();
    }
}

fn keys_of(entries: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = entries
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

/// The keys of the bee at `version`: a fill of 2000 (version 2001), then one post per block.
fn keys_at(version: u64) -> Vec<String> {
    let mut k: Vec<String> = (0..2000).map(|i| format!("k{i:08}")).collect();
    k.extend((0..version.saturating_sub(2001)).map(|i| format!("p{i:03}")));
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_running_then_restore_catches_up_without_duplicates() {
    init_tracing();
    let (_keep, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "b", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    js.call(json!({"cmd": "fill", "name": "b", "count": 2000, "valueBytes": 64}))
        .await;
    let relay = Relay::to(js.serve().await).await;
    let mut agg = AggProc::start(dir.join("a"), "").await;
    let (s, _) = agg
        .follow(&key, Some(&format!("127.0.0.1:{}", relay.port)))
        .await;
    assert_eq!(s, 201);
    let path = format!("/v1/feeds/{key}");
    agg.wait_for(&path, Duration::from_secs(60), |v| {
        v["indexedVersion"] == json!(2001)
    })
    .await;

    // The backup runs while posts arrive and are ingested.
    let target = dir.join("b").join("data");
    let bin = bin_path("apiary-aggregator", "apiary-aggregator");
    let (b, c, t) = (bin.clone(), agg.config.clone(), target.clone());
    let backup = tokio::task::spawn_blocking(move || {
        run_bin(
            &b,
            &[
                "--config",
                c.to_str().unwrap(),
                "backup",
                t.to_str().unwrap(),
            ],
        )
    });
    let mut post = 0;
    while !backup.is_finished() || post < 10 {
        js.call(json!({"cmd": "put", "name": "b", "key": format!("p{post:03}"), "value": {"text": format!("post {post}")}}))
            .await;
        post += 1;
    }
    let (code, out, err) = backup.await.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    eprintln!("{out}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(target.join("backup.json")).unwrap()).unwrap();
    let feeds = manifest["feeds"].as_array().unwrap();
    assert_eq!(feeds.len(), 1, "{manifest}");
    // The index as committed when the backup began, and the blocks copied after it (as many
    // or more: ingest goes on meanwhile, only commits wait).
    let at = feeds[0]["indexedVersion"].as_u64().unwrap();
    let copied = feeds[0]["length"].as_u64().unwrap();
    // The head copied may be ahead of the blocks fetched when the copy ran (a post's upgrade
    // comes before its block): `contiguous` is what the copy holds without a gap.
    let held = feeds[0]["contiguous"].as_u64().unwrap();
    assert!(at >= 2001 && held >= at && copied >= held, "{manifest}");
    assert_eq!(manifest["entries"].as_u64(), Some(keys_at(at).len() as u64));

    // More posts after the backup; the running aggregator gets them all, then dies.
    for _ in 0..10 {
        js.call(json!({"cmd": "put", "name": "b", "key": format!("p{post:03}"), "value": {"text": format!("post {post}")}}))
            .await;
        post += 1;
    }
    let last = 2001 + post;
    agg.wait_for(&path, Duration::from_secs(60), |v| {
        v["indexedVersion"] == json!(last)
    })
    .await;
    agg.kill9().await;

    // Refusals are clear: a non-empty target, a target inside the data directory.
    let (code, _, err) = run_bin(
        &bin,
        &[
            "--config",
            agg.config.to_str().unwrap(),
            "backup",
            target.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no aggregator answers"), "{err}");

    // Restore: an aggregator on the backup, its peer out of reach at first.
    relay.set_open(false);
    let restored = AggProc::start(dir.join("b"), "").await;
    let (_, st) = restored.get(&path).await;
    let v = st["indexedVersion"].as_u64().unwrap();
    assert!(v >= at && v <= copied, "{st}");
    assert_eq!(st["length"], json!(copied), "{st}");
    // Without a peer it indexes the copied blocks, and no further: it dialed its peer (the
    // old one is dead, so every refusal is the restored one's) and got nothing. With a gap
    // before the copied head, the chunk across it waits for the peer.
    if held == copied {
        restored
            .wait_for(&path, Duration::from_secs(30), |v| {
                v["indexedVersion"] == json!(copied)
            })
            .await;
    }
    wait_until(
        "the restored aggregator dialed its peer",
        Duration::from_secs(30),
        || relay.refused() > 0,
    )
    .await;
    let (_, st) = restored.get(&path).await;
    let now = st["indexedVersion"].as_u64().unwrap();
    if held == copied {
        assert_eq!(now, copied, "{st}");
    } else {
        assert!(now >= v && now <= held, "{st} (held {held})");
    }
    assert_eq!(keys_of(&restored.all_entries(&key).await), keys_at(now));
    let again = AggProc::start(dir.join("c"), "").await;
    for (bad, why) in [
        (target.clone(), "not empty"),
        (
            dir.join("c").join("data").join("x"),
            "outside the data directory",
        ),
    ] {
        let (code, _, err) = run_bin(
            &bin,
            &[
                "--config",
                again.config.to_str().unwrap(),
                "backup",
                bad.to_str().unwrap(),
            ],
        );
        assert_ne!(code, 0, "{bad:?}");
        assert!(err.contains(why), "{bad:?}: {err}");
    }
    drop(again);

    // The peer back: it catches up with the posts after the backup, nothing doubled.
    relay.set_open(true);
    let (st, took) = restored
        .wait_for(&path, Duration::from_secs(60), |v| {
            v["indexedVersion"] == json!(last)
        })
        .await;
    eprintln!("caught up {took:?} after the peer came back: {st}");
    let got = restored.all_entries(&key).await;
    assert_eq!(got.len(), 2000 + post as usize, "no duplicates");
    assert_eq!(keys_of(&got), keys_at(last));
    js.close().await;
}

/// A backup in the middle of a bulk ingest (commits and segment merges going on, the core
/// downloaded in parallel chunks, so its stored blocks have gaps): the restore is consistent
/// at every moment and ends equal to the bee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_during_a_bulk_ingest_restores_consistently() {
    init_tracing();
    let (_keep, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "big", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let n = 12_000u64;
    js.call(json!({"cmd": "fill", "name": "big", "count": n, "valueBytes": 100}))
        .await;
    let relay = Relay::to(js.serve().await).await;
    let mut agg = AggProc::start(dir.join("a"), "commit_interval_ms = 20").await;
    let (s, _) = agg
        .follow(&key, Some(&format!("127.0.0.1:{}", relay.port)))
        .await;
    assert_eq!(s, 201);
    let path = format!("/v1/feeds/{key}");
    let (st, _) = agg
        .wait_for(&path, Duration::from_secs(120), |v| {
            v["indexedVersion"].as_u64().unwrap_or(0) > 1
        })
        .await;
    let target = dir.join("b").join("data");
    let (code, out, err) = run_bin(
        &bin_path("apiary-aggregator", "apiary-aggregator"),
        &[
            "--config",
            agg.config.to_str().unwrap(),
            "backup",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(target.join("backup.json")).unwrap()).unwrap();
    let at = manifest["feeds"][0]["indexedVersion"].as_u64().unwrap();
    eprintln!("backup at indexed version {at} (ingest was at {st}): {out}");
    assert!(at < n + 1, "the backup landed mid-ingest: {manifest}");
    agg.kill9().await;

    // Whatever it has indexed from its own blocks so far, it is a prefix of the bee.
    relay.set_open(false);
    let restored = AggProc::start(dir.join("b"), "").await;
    let prefix = |v: u64| -> Vec<String> {
        (0..v.saturating_sub(1))
            .map(|i| format!("k{i:08}"))
            .collect()
    };
    let mut checked = 0;
    while checked < 3 {
        let (_, a) = restored.get(&path).await;
        let got = keys_of(&restored.all_entries(&key).await);
        let (_, b) = restored.get(&path).await;
        if a["indexedVersion"] != b["indexedVersion"] {
            continue; // moved while paging: look again
        }
        let v = a["indexedVersion"].as_u64().unwrap();
        assert!(v >= at, "{a}");
        assert_eq!(got, prefix(v), "at indexed version {v}");
        checked += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    relay.set_open(true);
    restored
        .wait_for(&path, Duration::from_secs(180), |v| {
            v["indexedVersion"] == json!(n + 1)
        })
        .await;
    let got = restored.all_entries(&key).await;
    assert_eq!(got.len() as u64, n, "no duplicates");
    assert_eq!(keys_of(&got), prefix(n + 1));
    js.close().await;
}

/// With an admin token set, a backup needs it: the API refuses one without, the CLI sends
/// the token of the config it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_needs_the_admin_token_when_one_is_set() {
    let (_keep, dir) = temp_dir();
    let token = "a-long-enough-admin-token";
    let agg = AggProc::start(dir.join("a"), &format!("admin_token = \"{token}\"")).await;
    let target = dir.join("snap");
    let body = json!({"dir": target.to_str().unwrap()});
    let (s, v) = agg.post("/v1/admin/backup", &body, None).await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = agg
        .post("/v1/admin/backup", &body, Some("wrong-token-wrong-token"))
        .await;
    assert_eq!(s, 401, "{v}");
    assert!(!target.exists());
    let (s, v) = agg
        .post(
            "/v1/admin/backup",
            &json!({"dir": "relative/path"}),
            Some(token),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (code, out, err) = run_bin(
        &bin_path("apiary-aggregator", "apiary-aggregator"),
        &[
            "--config",
            agg.config.to_str().unwrap(),
            "backup",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(target.join("backup.json").exists());
    let (s, v) = agg.post("/v1/admin/backup", &body, Some(token)).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict", "{v}");
}
