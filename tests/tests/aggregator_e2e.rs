//! The real aggregator with real publishers: ours (binary) and a JS one (Corestore + Hyperbee
//! movies under random keys, as in the classic workshop).

use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{bin_path, init_tracing, run_bin, serve_publisher, JsPeer};
use serde_json::{json, Value};

/// A random-looking key, different on every call: a counter (seeded from the clock once)
/// through splitmix64, a bijection, so two calls never give the same id.
fn random_id() -> String {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hex::encode((z ^ (z >> 31)).to_le_bytes())
}

fn keys_of(entries: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = entries
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_our_publisher_and_a_js_one() {
    init_tracing();
    let (_keep, dir) = temp_dir();

    // Our publisher, serving a bee with three posts.
    let p = bin_path("apiary-publisher", "apiary-publisher");
    let pdir = dir.join("pub");
    let pd = pdir.to_string_lossy().to_string();
    let (_, out, _) = run_bin(&p, &["--data-dir", &pd, "init", "social"]);
    let social = out.lines().next().unwrap().to_owned();
    for t in ["rust hypercore aggregator", "bees and hives", "third post"] {
        let (c, _, e) = run_bin(
            &p,
            &["--data-dir", &pd, "post", "social", t, "--tag", "p2p"],
        );
        assert_eq!(c, 0, "{e}");
    }
    let (mut publisher, paddr) = serve_publisher(&p, &pd).await;

    // A JS publisher: movies {title} under random keys.
    let mut js = JsPeer::start().await;
    let movies = js
        .call(json!({"cmd": "create", "name": "movies", "compat": false}))
        .await;
    let mkey = movies["key"].as_str().unwrap().to_owned();
    let mut movie_keys = Vec::new();
    for t in ["Alien", "Blade Runner", "Solaris", "Stalker"] {
        let k = random_id();
        js.call(json!({"cmd": "put", "name": "movies", "key": k, "value": {"title": t}}))
            .await;
        movie_keys.push(k);
    }
    let distinct: std::collections::HashSet<_> = movie_keys.iter().collect();
    assert_eq!(distinct.len(), 4, "four keys: {movie_keys:?}");
    let jport = js.serve().await;

    let mut agg = AggProc::start(dir.join("agg"), "").await;
    // Follow both through the API (no token configured: loopback is admin).
    let (s, v) = agg.follow(&social, Some(&paddr)).await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = agg.follow(&mkey, Some(&format!("127.0.0.1:{jport}"))).await;
    assert_eq!(s, 201);
    let (s, _) = agg.follow(&mkey, None).await;
    assert_eq!(s, 200, "following twice is fine");

    let (feed, took) = agg
        .wait_for("/v1/feed?limit=100", Duration::from_secs(10), |v| {
            v["entries"].as_array().unwrap().len() == 7
        })
        .await;
    eprintln!("both feeds indexed after {took:?}");
    let e = &feed["entries"][0];
    for f in [
        "feed", "key", "seq", "version", "seenAt", "sortAt", "value", "source",
    ] {
        assert!(!e[f].is_null(), "provenance field {f}: {e}");
    }
    let (_, hits) = agg.get("/v1/search?q=hypercore").await;
    assert_eq!(
        hits["entries"][0]["value"]["text"],
        "rust hypercore aggregator"
    );
    let (_, hits) = agg.get("/v1/search?q=solaris").await;
    assert_eq!(hits["entries"].as_array().unwrap().len(), 1);
    let (_, tagged) = agg.get("/v1/feed?tag=p2p&type=post").await;
    assert_eq!(tagged["entries"].as_array().unwrap().len(), 3);
    let (s, one) = agg
        .get(&format!("/v1/entries/{mkey}/{}", movie_keys[0]))
        .await;
    assert_eq!(s, 200);
    assert_eq!(one["value"]["title"], "Alien");

    // Live: a new JS put is searchable soon; a JS del makes it vanish.
    let k = random_id();
    let t0 = std::time::Instant::now();
    js.call(json!({"cmd": "put", "name": "movies", "key": k, "value": {"title": "Zardoz"}}))
        .await;
    let (_, took) = agg
        .wait_for("/v1/search?q=zardoz", Duration::from_secs(5), |v| {
            v["entries"].as_array().unwrap().len() == 1
        })
        .await;
    eprintln!(
        "publish → searchable: {:?} (put itself {:?})",
        took,
        t0.elapsed() - took
    );
    js.call(json!({"cmd": "del", "name": "movies", "key": k}))
        .await;
    agg.wait_for("/v1/search?q=zardoz", Duration::from_secs(5), |v| {
        v["entries"].as_array().unwrap().is_empty()
    })
    .await;
    let (s, _) = agg.get(&format!("/v1/entries/{mkey}/{k}")).await;
    assert_eq!(s, 404);

    // Restart keeps follows and index.
    agg.kill9().await;
    agg.restart().await;
    let (_, feeds) = agg.get("/v1/feeds").await;
    assert_eq!(feeds["feeds"].as_array().unwrap().len(), 2);
    let (_, feed) = agg.get("/v1/feed?limit=100").await;
    assert_eq!(feed["entries"].as_array().unwrap().len(), 7);

    // Unfollow removes every entry of that feed.
    assert_eq!(agg.delete(&format!("/v1/feeds/{mkey}"), None).await, 204);
    let (_, feed) = agg.get("/v1/feed?limit=100").await;
    assert_eq!(feed["entries"].as_array().unwrap().len(), 3);
    assert!(feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["value"]["type"] == "post"));
    let (s, _) = agg.get(&format!("/v1/feeds/{mkey}")).await;
    assert_eq!(s, 404);
    assert_eq!(agg.delete(&format!("/v1/feeds/{mkey}"), None).await, 404);
    let (_, m) = agg.get("/healthz").await;
    assert_eq!(m["feeds"], 1);

    js.close().await;
    publisher.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_dials_in_and_is_indexed() {
    let (_keep, dir) = temp_dir();
    let p = bin_path("apiary-publisher", "apiary-publisher");
    let pd = dir.join("pub").to_string_lossy().to_string();
    let (_, out, _) = run_bin(&p, &["--data-dir", &pd, "init", "notes"]);
    let key = out.lines().next().unwrap().to_owned();
    run_bin(
        &p,
        &[
            "--data-dir",
            &pd,
            "put",
            "notes",
            "n1",
            r#"{"title":"behind a NAT"}"#,
        ],
    );
    let (_, out, _) = run_bin(&p, &["--data-dir", &pd, "init", "journal"]);
    let journal = out.lines().next().unwrap().to_owned();
    run_bin(
        &p,
        &[
            "--data-dir",
            &pd,
            "put",
            "journal",
            "j1",
            r#"{"text":"dear diary"}"#,
        ],
    );
    let agg = AggProc::start(dir.join("agg"), "").await;
    let (s, _) = agg.follow(&key, None).await;
    assert_eq!(s, 201);
    let mut publisher = tokio::process::Command::new(&p)
        .args([
            "--data-dir",
            &pd,
            "serve",
            "--no-dht",
            "--listen",
            "127.0.0.1:0",
            "--no-page",
            "--aggregator",
            &agg.listen,
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    agg.wait_for("/v1/search?q=nat", Duration::from_secs(15), |v| {
        v["entries"].as_array().unwrap().len() == 1
    })
    .await;
    let (st, _) = agg
        .wait_for(
            &format!("/v1/feeds/{}", key.trim_start_matches("hyper://")),
            Duration::from_secs(5),
            |v| v["peers"].as_array().is_some_and(|p| !p.is_empty()),
        )
        .await;
    assert_eq!(st["peers"][0]["via"], "dial-in", "{st}");

    // A bee of the same publisher followed only now, while its connection is already up
    // (as a new user does: serve --aggregator first, then POST /v1/feeds): read at once.
    let (s, _) = agg.follow(&journal, None).await;
    assert_eq!(s, 201);
    agg.wait_for("/v1/search?q=diary", Duration::from_secs(15), |v| {
        v["entries"].as_array().unwrap().len() == 1
    })
    .await;
    publisher.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_large_ingest_loses_and_duplicates_nothing() {
    kill_9_during_a_large_ingest("commit_interval_ms = 20").await;
}

/// The same under `retention = "index-only"`: blocks are dropped as commits land, and a
/// crash between a commit and the drop, or between an ingest and its commit, loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_index_only_ingest_loses_and_duplicates_nothing() {
    let (agg, _keep) =
        kill_9_during_a_large_ingest("commit_interval_ms = 20\nretention = \"index-only\"").await;
    // Payloads were dropped as the commits landed.
    let text = agg.text("/metrics").await;
    let n: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("apiary_blocks_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    // Counted since the last restart: at least the blocks fetched after it, less a page.
    assert!(n > 0.0, "no block dropped since the last restart:\n{text}");
}

/// Kills the aggregator (with `extra` config) during a 20k-entry ingest; returns it caught
/// up, and its directory.
async fn kill_9_during_a_large_ingest(extra: &str) -> (AggProc, tempfile::TempDir) {
    init_tracing();
    let (keep, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "big", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    js.call(json!({"cmd": "fill", "name": "big", "count": 20_000, "valueBytes": 100}))
        .await;
    // Overwrites and deletes, so the index must hold the final state, not the log.
    js.call(json!({"cmd": "batch", "name": "big", "ops": [
        {"type": "put", "key": "k00000001", "value": {"i": -1, "text": "rewritten"}},
        {"type": "del", "key": "k00000002"},
        {"type": "del", "key": "k00019999"}
    ]}))
    .await;
    let port = js.serve().await;

    let mut agg = AggProc::start(dir.join("agg"), extra).await;
    let (s, _) = agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(s, 201);
    // Kills at events, not at times: each of the first kills lands as soon as this
    // process's download has moved (the bee is far from fetched then, whatever the speed);
    // the later ones once a commit has moved the indexed version past the last kill's.
    let final_version = 20_004;
    let mut kills = 0;
    let mut last = 0;
    for round in 0..5 {
        let by_download = round < 3;
        let (st, _) = agg
            .wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(60), |v| {
                let indexed = v["indexedVersion"].as_u64().unwrap_or(0);
                indexed >= final_version
                    || if by_download {
                        v["blocksDownloaded"].as_u64().unwrap_or(0) > 0
                    } else {
                        indexed > last
                    }
            })
            .await;
        let v = st["indexedVersion"].as_u64().unwrap();
        if v >= final_version {
            break;
        }
        eprintln!(
            "kill -9 at indexed version {v}, {} blocks downloaded by this process",
            st["blocksDownloaded"]
        );
        agg.kill9().await;
        kills += 1;
        last = v;
        agg.restart().await;
    }
    assert!(kills >= 2, "only {kills} kills landed during the ingest");
    let (st, took) = agg
        .wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(120), |v| {
            v["indexedVersion"] == json!(final_version)
        })
        .await;
    eprintln!("caught up {took:?} after the last restart: {st}");
    let got = agg.all_entries(&key).await;
    let keys = keys_of(&got);
    let mut dedup = keys.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), keys.len(), "no duplicates");
    let want = js
        .call(json!({"cmd": "range", "name": "big", "opts": {}}))
        .await;
    let want_keys: Vec<String> = keys_of(want["entries"].as_array().unwrap());
    assert_eq!(keys, want_keys, "index = what the bee holds");
    assert_eq!(keys.len(), 19_998);
    let (_, one) = agg.get(&format!("/v1/entries/{key}/k00000001")).await;
    assert_eq!(one["value"]["text"], "rewritten");
    js.close().await;
    (agg, keep)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_4xx() {
    let (_keep, dir) = temp_dir();
    let token = "a-long-enough-admin-token";
    let agg = AggProc::start(dir.join("agg"), &format!("admin_token = \"{token}\"")).await;
    let k = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";
    for (path, code) in [
        ("/v1/feeds/not-a-key", 400),
        (&format!("/v1/feeds/{k}") as &str, 404),
        ("/v1/feed?cursor=zz", 400),
        ("/v1/feed?cursor=6f3132", 400),
        ("/v1/feed?limit=0", 400),
        ("/v1/feed?limit=1000", 400),
        ("/v1/feed?feed=nope", 400),
        ("/v1/feed?since=yesterday", 400),
        ("/v1/feed?bogus=1", 400),
        ("/v1/search", 400),
        ("/v1/search?q=", 400),
        (&format!("/v1/search?q={}", "a".repeat(1025)) as &str, 400),
        ("/v1/search?q=x&cursor=66307c", 400),
        ("/v1/stream?since=0", 400),
        ("/v1/entries/nope/x", 400),
        (&format!("/v1/entries/{k}/x") as &str, 404),
        ("/v2/nothing", 404),
    ] {
        let (s, v) = agg.get(path).await;
        assert_eq!(s, code, "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}: {v}"
        );
        assert!(v["error"]["code"].is_string());
    }
    // What a search box gets typed into it is searched as far as it parses, not refused.
    assert_eq!(agg.get("/v1/search?q=title:(").await.0, 200);
    // Admin endpoints: without or with a wrong token → 401, even from loopback.
    let body = json!({"key": k});
    assert_eq!(agg.post("/v1/feeds", &body, None).await.0, 401);
    assert_eq!(
        agg.post("/v1/feeds", &body, Some("wrong-token-wrong-token"))
            .await
            .0,
        401
    );
    assert_eq!(agg.delete(&format!("/v1/feeds/{k}"), None).await, 401);
    assert_eq!(
        agg.post("/v1/feeds", &json!({"key": "bad"}), Some(token))
            .await
            .0,
        400
    );
    assert_eq!(
        agg.post("/v1/feeds", &json!({"nokey": 1}), Some(token))
            .await
            .0,
        400
    );
    assert_eq!(
        agg.post(
            "/v1/feeds",
            &json!({"key": k, "peers": ["nohost"]}),
            Some(token)
        )
        .await
        .0,
        400
    );
    let big = json!({"key": k, "pad": "x".repeat(200_000)});
    let (s, v) = agg.post("/v1/feeds", &big, Some(token)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (413, Some("too_large")));
    assert_eq!(agg.post("/v1/feeds", &body, Some(token)).await.0, 201);
    assert_eq!(
        agg.delete(&format!("/v1/feeds/{k}"), Some(token)).await,
        204
    );
    let (s, doc) = agg.get("/v1/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/v1/search"].is_object());

    // Over the rate limit → 429.
    let limited = AggProc::start(dir.join("limited"), "").await;
    std::fs::write(
        &limited.config,
        std::fs::read_to_string(&limited.config).unwrap().replace(
            "rate_limit_per_second = 10000\nrate_limit_burst = 10000",
            "rate_limit_per_second = 1\nrate_limit_burst = 3",
        ),
    )
    .unwrap();
    let mut limited = limited;
    limited.kill9().await;
    limited.restart().await;
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(limited.get("/v1/feed").await.0);
    }
    assert!(codes.contains(&429), "{codes:?}");
    let (_, v) = limited.get("/v1/feed").await;
    assert_eq!(v["error"]["code"], "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_page_search_in_headless_chromium() {
    let (_keep, dir) = temp_dir();
    let p = bin_path("apiary-publisher", "apiary-publisher");
    let pd = dir.join("pub").to_string_lossy().to_string();
    let (_, out, _) = run_bin(&p, &["--data-dir", &pd, "init", "m"]);
    let key = out.lines().next().unwrap().to_owned();
    run_bin(
        &p,
        &[
            "--data-dir",
            &pd,
            "put",
            "m",
            "a",
            r#"{"title":"Nostromo crew"}"#,
        ],
    );
    run_bin(
        &p,
        &[
            "--data-dir",
            &pd,
            "put",
            "m",
            "b",
            r#"{"title":"Other film"}"#,
        ],
    );
    let (mut publisher, paddr) = serve_publisher(&p, &pd).await;
    let agg = AggProc::start(
        dir.join("agg"),
        &format!("[[follow]]\nkey = \"{key}\"\npeers = [\"{paddr}\"]"),
    )
    .await;
    agg.wait_for("/v1/search?q=nostromo", Duration::from_secs(15), |v| {
        v["entries"].as_array().unwrap().len() == 1
    })
    .await;
    let page = reqwest::get(format!("{}/", agg.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"q\""));
    if apiary_tests::browser_tests_enabled() {
        let res = apiary_tests::run_browser(&["aggregator", &format!("{}/", agg.base), "nostromo"]);
        assert_eq!(res["ok"], json!(true), "{res}");
        assert_eq!(res["hits"], json!(1));
        assert_eq!(res["matched"], json!(true));
        // The hit's snippet, the matched word marked (issue 13's highlights).
        assert_eq!(res["marks"], json!(["Nostromo"]), "{res}");
        assert_eq!(res["injected"], json!(0));
    } else {
        eprintln!("browser part skipped: set APIARY_BROWSER_TESTS=1 (as .ci/run does) with Debian chromium installed");
    }
    publisher.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_pass_applies_overwrites_and_deletes_in_log_order() {
    init_tracing();
    let (_keep, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let created = js
        .call(json!({"cmd": "create", "name": "log", "compat": false}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    // In one first pass: a key put twice, a key deleted and put again, a key put and
    // deleted (hyperbee writes nothing for the del of a missing key "zz": 8 blocks).
    for ops in [
        json!([{"type": "put", "key": "a", "value": {"text": "a1"}},
               {"type": "put", "key": "b", "value": {"text": "b1"}},
               {"type": "put", "key": "c", "value": {"text": "c1"}}]),
        json!([{"type": "put", "key": "a", "value": {"text": "a2"}},
               {"type": "del", "key": "b"},
               {"type": "del", "key": "zz"}]),
        json!([{"type": "put", "key": "b", "value": {"text": "b2"}},
               {"type": "del", "key": "c"}]),
    ] {
        js.call(json!({"cmd": "batch", "name": "log", "ops": ops}))
            .await;
    }
    let port = js.serve().await;
    let agg = AggProc::start(dir.join("agg"), "").await;
    let (s, _) = agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(s, 201);
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(30), |v| {
        v["indexedVersion"] == json!(8)
    })
    .await;
    let got = agg.all_entries(&key).await;
    let texts: Vec<(String, String)> = got
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_owned(),
                e["value"]["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut texts = texts;
    texts.sort();
    assert_eq!(
        texts,
        vec![("a".into(), "a2".into()), ("b".into(), "b2".into())]
    );
    js.close().await;
}
