//! Cluster mode: three aggregator processes over a three-node NATS JetStream cluster on
//! loopback, fed by our publisher and JS bees (200, and one large one).
//!
//! One test, in phases, on one cluster (starting it is the slow part):
//! 1. follows sent to any node; every entry on every indexer, identical search answers;
//! 2. kill -9 the follower of the large bee during its backfill: its shards move, the feeds
//!    finish, every live indexer equals the oracle; restarted, it catches up from its stream
//!    checkpoint (it applies fewer links than the stream holds);
//! 3. kill -9 the stream's leader while authors write: no loss, no duplicates;
//! 4. a new indexer joining late builds its replica from the stream, and serves proofs of
//!    feeds it does not follow itself (blocks fetched from their peers);
//! 5. an unfollow on one node purges the feed on every indexer; followed again, it is back.
//!
//! One of the three (a2) runs `retention = "index-only"`: it drops the blocks of its feeds
//! below what it published, and every phase holds for it too.
//!
//! Switched on by `APIARY_CLUSTER_TESTS=1` (`.ci/run` sets it after installing Debian's
//! `nats-server`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::nats::{cluster_tests_enabled, NatsCluster};
use apiary_tests::publisher::Publisher;
use apiary_tests::{bin_path, init_tracing, key_of, run_bin, JsPeer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

/// Apiary bees (our publisher) and JS bees, small.
const OURS: usize = 100;
const THEIRS: usize = 100;
/// Entries of each small bee.
const ENTRIES: usize = 30;
/// The large JS bee, killed during.
const LARGE: u64 = 20_000;

/// The nodes' HTTP bases, for what a failure prints.
static NODES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// What every indexer must hold: feed (z32) → key → value.
type Oracle = HashMap<String, BTreeMap<String, Value>>;

fn cluster_toml(nats: &NatsCluster, node: &str, roles: &str) -> String {
    let urls: Vec<String> = nats.urls().iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[cluster]\nenabled = true\nnats = [{}]\nnode = {node:?}\nroles = {roles}\n\
         shards = 16\nlease_ttl_ms = 3000\n",
        urls.join(", ")
    )
}

/// Every feed of the oracle (but those over `max_entries`), on `agg`, equals it (no entry
/// missing, extra or doubled).
async fn equals_oracle(agg: &AggProc, oracle: &Oracle, max_entries: usize) -> Result<(), String> {
    for (feed, want) in oracle.iter().filter(|(_, w)| w.len() <= max_entries) {
        let got = agg.all_entries(feed).await;
        let mut map = BTreeMap::new();
        for e in &got {
            let k = e["key"].as_str().unwrap_or_default().to_owned();
            if map.insert(k.clone(), e["value"].clone()).is_some() {
                return Err(format!("{}: {feed} has {k} twice", agg.base));
            }
        }
        if &map != want {
            let missing = want.keys().filter(|k| !map.contains_key(*k)).count();
            let extra = map.keys().filter(|k| !want.contains_key(*k)).count();
            return Err(format!(
                "{}: {feed}: {} entries, want {} ({missing} missing, {extra} extra, others differ)",
                agg.base,
                map.len(),
                want.len()
            ));
        }
    }
    Ok(())
}

/// Waits until every feed is indexed to its expected version on `agg`, then checks it
/// against the oracle (the large bee too if `all`: paging through it takes a while).
async fn converge(
    agg: &AggProc,
    oracle: &Oracle,
    lengths: &HashMap<String, u64>,
    within: Duration,
    all: bool,
) {
    let t = Instant::now();
    let deadline = t + within;
    loop {
        let (s, v) = agg.get("/v1/feeds").await;
        let behind: Vec<String> = if s == 200 {
            let feeds = v["feeds"].as_array().cloned().unwrap_or_default();
            let at: HashMap<String, u64> = feeds
                .iter()
                .map(|f| {
                    (
                        f["key"].as_str().unwrap_or_default().to_owned(),
                        f["indexedVersion"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            lengths
                .iter()
                .filter(|(k, l)| at.get(*k).copied().unwrap_or(0) < **l)
                .map(|(k, l)| format!("{k} at {:?} of {l}", at.get(k)))
                .collect()
        } else {
            vec![format!("GET /v1/feeds: {s}")]
        };
        if behind.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let key = behind[0].split(' ').next().unwrap_or_default();
            let mut seen = String::new();
            let nodes = NODES.lock().unwrap().clone();
            for base in &nodes {
                let st = match reqwest::get(format!("{base}/v1/feeds/{key}")).await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                seen.push_str(&format!("\n{base}: {st}"));
            }
            panic!(
                "{}: {} feeds behind after {within:?}, e.g. {:?}; the first, on each node:{seen}",
                agg.base,
                behind.len(),
                &behind[..behind.len().min(3)]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let caught_up = t.elapsed();
    let max = if all { usize::MAX } else { 1000 };
    if let Err(e) = equals_oracle(agg, oracle, max).await {
        panic!("{e}");
    }
    eprintln!(
        "{}: caught up in {caught_up:?}, checked in {:?}",
        agg.base,
        t.elapsed() - caught_up
    );
}

async fn metric(agg: &AggProc, name: &str) -> u64 {
    let text = agg.text("/metrics").await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// The hits of a search, as (feed, key): every one (paged) and in order when newest first
/// (`recent`, the same on every replica); by relevance the first page only (under 100 hits
/// wanted: BM25's statistics count the deleted documents of each replica's own segments,
/// so scores differ slightly, and pages of tied scores may overlap), as a set.
async fn hits(agg: &AggProc, q: &str, sort: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, v) = agg
            .get(&format!("/v1/search?q={q}&limit=100&sort={sort}{cursor}"))
            .await;
        assert_eq!(s, 200, "{v}");
        for e in v["entries"].as_array().cloned().unwrap_or_default() {
            out.push((
                e["feed"].as_str().unwrap_or_default().to_owned(),
                e["key"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        match v["cursor"].as_str() {
            Some(c) if sort == "recent" => cursor = format!("&cursor={c}"),
            _ => break,
        }
    }
    if sort == "relevance" {
        out.sort();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_aggregators_share_the_feeds_and_every_indexer_holds_them_all() {
    if !cluster_tests_enabled() {
        eprintln!("skipped: set APIARY_CLUSTER_TESTS=1 with Debian's nats-server installed");
        return;
    }
    init_tracing();
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1} s] {what}", t0.elapsed().as_secs_f64());
    let mut nats = NatsCluster::start(3).await;
    let (_keep, dir) = temp_dir();
    let mut oracle: Oracle = HashMap::new();
    let mut lengths: HashMap<String, u64> = HashMap::new();

    // Our publisher: OURS bees, each imported, one key overwritten, one deleted in ten.
    let p = Publisher::new();
    let mut ours = Vec::new();
    for b in 0..OURS {
        let name = format!("b{b:03}");
        let feed = p.init(&name);
        let file = p.dir.path().join(format!("{name}.jsonl"));
        let mut text = String::new();
        let mut want = BTreeMap::new();
        for i in 0..ENTRIES {
            let value = json!({"title": format!("cluster movie {b} {i}"), "i": i});
            text.push_str(&json!({"key": format!("m{i:03}"), "value": value}).to_string());
            text.push('\n');
            want.insert(format!("m{i:03}"), value);
        }
        let value = json!({"title": format!("cluster movie {b} rewritten")});
        text.push_str(&json!({"key": "m000", "value": value}).to_string());
        text.push('\n');
        want.insert("m000".into(), value);
        std::fs::write(&file, text).unwrap();
        p.run(&["import", &name, file.to_str().unwrap()]);
        // A delete in some (each is a process run).
        let dels = u64::from(b < 10);
        if dels > 0 {
            p.run(&["del", &name, "m001"]);
            want.remove("m001");
        }
        lengths.insert(feed.clone(), 1 + ENTRIES as u64 + 1 + dels);
        oracle.insert(feed.clone(), want);
        ours.push((name, feed));
    }
    let serving = p.serve(&["--no-dht"], None);
    let line = serving
        .wait_line(" for replication on ", Duration::from_secs(20))
        .await;
    let ours_addr = apiary_tests::printed::publisher_replication(&line).unwrap();

    // JS bees: THEIRS small ones and the large one.
    let mut js = JsPeer::start().await;
    let mut theirs = Vec::new();
    for b in 0..THEIRS {
        let name = format!("j{b:03}");
        let created = js
            .call(json!({"cmd": "create", "name": name, "compat": false}))
            .await;
        let feed = key_of(&created).to_z32();
        js.call(json!({"cmd": "fill", "name": name, "count": ENTRIES, "valueBytes": 8}))
            .await;
        js.call(json!({"cmd": "del", "name": name, "key": "k00000003"}))
            .await;
        let mut want = BTreeMap::new();
        for i in 0..ENTRIES {
            if i != 3 {
                want.insert(format!("k{i:08}"), json!({"i": i, "text": "xxxxxxxx"}));
            }
        }
        lengths.insert(feed.clone(), 1 + ENTRIES as u64 + 1);
        oracle.insert(feed.clone(), want);
        theirs.push((name, feed));
    }
    let created = js
        .call(json!({"cmd": "create", "name": "large", "compat": false}))
        .await;
    let large = key_of(&created).to_z32();
    js.call(json!({"cmd": "fill", "name": "large", "count": LARGE, "valueBytes": 40}))
        .await;
    let text = "x".repeat(40);
    oracle.insert(
        large.clone(),
        (0..LARGE)
            .map(|i| (format!("k{i:08}"), json!({"i": i, "text": text})))
            .collect(),
    );
    lengths.insert(large.clone(), LARGE + 1);
    let js_addr = format!("127.0.0.1:{}", js.serve().await);

    // Three aggregators, both roles; a2 keeps no block it has published (index-only).
    let mut aggs = Vec::new();
    for i in 0..3 {
        let mut extra = cluster_toml(&nats, &format!("a{i}"), r#"["follower", "indexer"]"#);
        if i == 2 {
            extra = format!("retention = \"index-only\"\n{extra}");
        }
        let a = AggProc::start(dir.join(format!("a{i}")), &extra).await;
        NODES.lock().unwrap().push(a.base.clone());
        aggs.push(a);
    }
    // Follows through any node (each writes the cluster's follow list).
    for (n, (feed, addr)) in ours
        .iter()
        .map(|(_, f)| (f, &ours_addr))
        .chain(theirs.iter().map(|(_, f)| (f, &js_addr)))
        .chain([(&large, &js_addr)])
        .enumerate()
    {
        let (s, v) = aggs[n % 3].follow(feed, Some(addr)).await;
        assert!(s == 201 || s == 200, "{s} {v}");
    }

    phase("bees made, followed");
    // Phase 2: kill -9 the large bee's follower during its backfill.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let (_, v) = aggs[0].get(&format!("/v1/feeds/{large}")).await;
        let holder = v["cluster"]["holder"].as_str().map(str::to_owned);
        let indexed = v["indexedVersion"].as_u64().unwrap_or(0);
        assert!(
            indexed < LARGE + 1,
            "the large bee was indexed before a kill could land"
        );
        if let (Some(h), true) = (holder, indexed > 0) {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "the large bee never started: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let vi: usize = victim.trim_start_matches('a').parse().unwrap();
    aggs[vi].kill9().await;
    eprintln!("killed {victim}, the large bee's follower, during its backfill");
    for (i, a) in aggs.iter().enumerate() {
        if i != vi {
            let full = i == usize::from(vi == 0);
            converge(a, &oracle, &lengths, Duration::from_secs(120), full).await;
        }
    }
    let (_, v) = aggs[(vi + 1) % 3].get(&format!("/v1/feeds/{large}")).await;
    assert_ne!(
        v["cluster"]["holder"].as_str(),
        Some(victim.as_str()),
        "{v}"
    );
    let moves: u64 = {
        let mut m = 0;
        for (i, a) in aggs.iter().enumerate() {
            if i != vi {
                m += metric(a, "apiary_cluster_lease_moves_total").await;
            }
        }
        m
    };
    assert!(moves > 0, "no lease moved");
    // Identical answers on every live indexer.
    let mut answers = Vec::new();
    for (i, a) in aggs.iter().enumerate() {
        if i != vi {
            answers.push(hits(a, "rewritten", "recent").await);
        }
    }
    assert_eq!(answers[0].len(), OURS, "{:?}", answers[0]);
    assert_eq!(answers[0], answers[1]);

    // The killed one comes back and catches up from its checkpoint.
    aggs[vi].restart().await;
    converge(
        &aggs[vi],
        &oracle,
        &lengths,
        Duration::from_secs(120),
        false,
    )
    .await;
    let applied = metric(&aggs[vi], "apiary_cluster_links_applied_total").await;
    let last = metric(&aggs[(vi + 1) % 3], "apiary_cluster_stream_sequence").await;
    assert!(
        applied < last,
        "the restarted indexer applied {applied} links of {last}: it started over"
    );

    phase("phase 2 done (follower killed, restarted, caught up)");
    // An index-only node drops a feed's blocks by spool file (256 blocks), so only a feed of
    // more than that is dropped from: the small bees never are, and the large one is held
    // by a2 only in some runs (its key decides). One of our bees that a2 holds (with all
    // three up, a2 keeps its shards) grows past one file; phase 3's checks cover it.
    let mut grown = None;
    for (name, feed) in &ours[5..] {
        let (_, v) = aggs[2].get(&format!("/v1/feeds/{feed}")).await;
        if v["cluster"]["holder"].as_str() == Some("a2") {
            grown = Some((name.clone(), feed.clone()));
            break;
        }
    }
    let (grown_name, grown_feed) = grown.expect("a2 holds none of our bees");
    let file = p.dir.path().join("grown.jsonl");
    let mut text = String::new();
    let want = oracle.get_mut(&grown_feed).unwrap();
    for i in 0..300 {
        let value = json!({"title": format!("padding {i}")});
        text.push_str(&json!({"key": format!("p{i:03}"), "value": value}).to_string());
        text.push('\n');
        want.insert(format!("p{i:03}"), value);
    }
    std::fs::write(&file, text).unwrap();
    p.run(&["import", &grown_name, file.to_str().unwrap()]);
    *lengths.get_mut(&grown_feed).unwrap() += 300;
    // Phase 3: kill -9 the stream's leader while authors write.
    let leader = nats
        .wait_stream_leader("apiary-entries", Duration::from_secs(10))
        .await;
    let writes = tokio::spawn({
        let names: Vec<(String, String)> = theirs[..5].to_vec();
        async move {
            for (name, _) in &names {
                js.call(json!({"cmd": "fill", "name": name, "count": 20, "start": 1000, "valueBytes": 4}))
                    .await;
            }
            js
        }
    });
    nats.kill9(leader).await;
    for (name, feed) in &ours[..5] {
        for i in 0..10 {
            p.run(&[
                "put",
                name,
                &format!("n{i:03}"),
                &json!({"title": "after the leader"}).to_string(),
            ]);
            oracle
                .get_mut(feed)
                .unwrap()
                .insert(format!("n{i:03}"), json!({"title": "after the leader"}));
        }
        *lengths.get_mut(feed).unwrap() += 10;
    }
    let _js = writes.await.unwrap();
    for (_, feed) in &theirs[..5] {
        let want = oracle.get_mut(feed).unwrap();
        for i in 1000..1020 {
            want.insert(format!("k{i:08}"), json!({"i": i, "text": "xxxx"}));
        }
        *lengths.get_mut(feed).unwrap() += 20;
    }
    for a in &aggs {
        converge(a, &oracle, &lengths, Duration::from_secs(120), false).await;
    }
    nats.restart(leader).await;
    // The index-only follower drops what it published (the grown bee's first spool file at
    // least), and still converged above.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&aggs[2], "apiary_blocks_dropped_total").await == 0 {
        assert!(
            Instant::now() < deadline,
            "a2 (index-only) dropped no block of {grown_feed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    phase("phase 3 done (stream leader killed)");
    // Phase 4: a new indexer, late, builds its replica from the stream.
    let extra = cluster_toml(&nats, "late", r#"["indexer"]"#);
    let late = AggProc::start(dir.join("late"), &extra).await;
    converge(&late, &oracle, &lengths, Duration::from_secs(120), true).await;
    // The same answers on all four indexers: every hit newest first, and by relevance a
    // query with fewer hits than a page (the 50 entries written around the leader's kill).
    for (q, sort, n) in [("rewritten", "recent", OURS), ("leader", "relevance", 50)] {
        let want = hits(&late, q, sort).await;
        assert_eq!(want.len(), n, "{q}: {want:?}");
        for a in &aggs {
            assert_eq!(hits(a, q, sort).await, want, "{q} by {sort} on {}", a.base);
        }
    }
    assert_eq!(metric(&late, "apiary_cluster_shards_held").await, 0);
    // Every indexer reports no stream lag once caught up (the stream's end is sampled every
    // few seconds).
    for a in aggs.iter().chain([&late]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seq = metric(a, "apiary_cluster_stream_sequence").await;
            let lag = metric(a, "apiary_cluster_stream_lag").await;
            if seq > 0 && lag == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{}: lag {lag} at {seq}", a.base);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Proofs from a node that holds no shard (it fetches the blocks from the feed's peers):
    // a present key with its latest value and a deleted one, each checked by our verifier
    // against the feed key alone.
    let (_, proven) = &ours[1];
    let (_, deleted_in) = &theirs[6];
    for (feed, key, found) in [(proven, "m000", true), (deleted_in, "k00000003", false)] {
        let (s, b) = late.get(&format!("/v1/proofs/{feed}/{key}")).await;
        assert_eq!(s, 200, "proof of {feed}/{key} on the late indexer: {b}");
        assert_eq!(b["result"]["found"], found, "{b}");
        if found {
            let raw = STANDARD
                .decode(b["result"]["value"].as_str().unwrap())
                .unwrap();
            let v: Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(v, oracle[feed][key]);
        }
        let file = dir.join("bundle.json");
        std::fs::write(&file, serde_json::to_vec(&b).unwrap()).unwrap();
        let agg = bin_path("apiary-aggregator", "apiary-aggregator");
        let (code, out, err) = run_bin(&agg, &["verify", file.to_str().unwrap(), "--key", feed]);
        assert_eq!(code, 0, "verify: {out}{err}");
    }

    phase("phase 4 done (late indexer, its proofs)");
    // Phase 5: an unfollow on one node purges the feed everywhere.
    let (_, gone) = &ours[0];
    assert_eq!(
        aggs[1].delete(&format!("/v1/feeds/{gone}"), None).await,
        204
    );
    for a in aggs.iter().chain([&late]) {
        a.wait_for(
            &format!("/v1/feed?feed={gone}"),
            Duration::from_secs(30),
            |v| v["entries"].as_array().is_some_and(|e| e.is_empty()),
        )
        .await;
        let (s, _) = a.get(&format!("/v1/feeds/{gone}")).await;
        assert_eq!(s, 404, "{}", a.base);
    }
    // Followed again: a new chain, every entry back on every indexer.
    let (s, v) = aggs[2].follow(gone, Some(&ours_addr)).await;
    assert_eq!(s, 201, "{v}");
    let mut back = Oracle::new();
    back.insert(gone.clone(), oracle[gone].clone());
    let again = HashMap::from([(gone.clone(), lengths[gone])]);
    for a in aggs.iter().chain([&late]) {
        converge(a, &back, &again, Duration::from_secs(60), true).await;
    }
    phase("phase 5 done (unfollow, follow again)");
    drop(serving);
}
