//! A hostile author signs a bee of 2^53 blocks (the longest our verifier accepts) and serves
//! it (`apiary_tests::huge`). Following it must stay cheap: the reader verifies it with O(53)
//! work per proof, and a real aggregator following it and an honest bee keeps its memory
//! bounded, keeps answering, and keeps indexing the honest bee.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use apiary_core::bee::{block, Bee, BeeWriter};
use apiary_core::crypto::KeyPair;
use apiary_core::merkle::MAX_LENGTH;
use apiary_core::replicate::{Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::huge::{HugeCore, VALUE};
use apiary_tests::init_tracing;
use serde_json::Value;

fn replicator(announce_all: bool) -> Replicator {
    Replicator::new(
        Store::temporary().unwrap(),
        ReplicatorOptions {
            announce_all,
            ..Default::default()
        },
    )
}

/// The fabricated tree is the tree an honest writer makes of the same blocks.
#[tokio::test]
async fn fabricated_roots_match_a_written_core() {
    let rep = replicator(false);
    let core = rep.create_core(KeyPair::generate(), false).unwrap();
    let entry = HugeCore::new(2).entry.clone();
    core.append(&[block::encode_header()]).unwrap();
    for length in 2..=70u64 {
        core.append(std::slice::from_ref(&entry)).unwrap();
        let fab = HugeCore::new(length);
        for r in &core.head().roots {
            assert_eq!(fab.node(r.index), Some(*r), "length {length}");
        }
        assert_eq!(fab.node(2 * length), None);
    }
}

/// Our reader takes the claim: length 2^53 (and 2^53 − 1, 53 roots), any block, the bee's
/// header and its one key, with requests of a few dozen nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_verifies_a_core_of_2_pow_53() {
    init_tracing();
    for length in [MAX_LENGTH, MAX_LENGTH - 1] {
        let huge = HugeCore::new(length);
        let addr = huge.serve().await;
        let reader = replicator(false);
        let core = reader.replica(huge.key()).unwrap();
        let conn = reader.connect(&addr).await.unwrap();
        conn.open(&core).await.unwrap();
        let t = Instant::now();
        assert_eq!(core.update(Duration::from_secs(10)).await.unwrap(), length);
        assert_eq!(core.get(length - 1).await.unwrap(), huge.entry);
        assert_eq!(core.get(0).await.unwrap(), huge.header);
        let picked = [1, 2, 1 << 20, (1 << 52) + 12345, length / 3, length - 2];
        for seq in picked {
            assert_eq!(core.get(seq).await.unwrap(), huge.entry, "block {seq}");
        }
        core.download_range(length - 2000, length, 64)
            .await
            .unwrap();
        let mut held: std::collections::BTreeSet<u64> = (length - 2000..length).collect();
        held.extend([0].into_iter().chain(picked));
        let bee = Bee::new(core.clone());
        assert_eq!(bee.version(), length);
        assert_eq!(bee.header().await.unwrap().protocol, "hyperbee");
        let e = bee
            .snapshot()
            .get(b"k")
            .await
            .unwrap()
            .expect("the key is there");
        // (The root block's own key is "k": the walk stops there, as JS hyperbee's does.)
        assert_eq!((e.seq, e.value.as_deref()), (length - 1, Some(VALUE)));
        let stored = core.store().block_count().unwrap();
        eprintln!(
            "length {length}: verified in {:?}; {stored} blocks stored, {} requests answered",
            t.elapsed(),
            huge.answered.load(Ordering::Relaxed)
        );
        assert_eq!(stored, held.len() as u64);
        assert_eq!(huge.refused.load(Ordering::Relaxed), 0);
        assert!(!conn.is_closed());
    }
}

/// One block more than 2^53, correctly signed: the reader refuses the upgrade and ends the
/// session, and keeps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_past_2_pow_53_is_refused() {
    init_tracing();
    let huge = HugeCore::new(MAX_LENGTH + 1);
    let addr = huge.serve().await;
    let reader = replicator(false);
    let core = reader.replica(huge.key()).unwrap();
    let conn = reader.connect(&addr).await.unwrap();
    conn.open(&core).await.unwrap();
    // (The upgrade the peer's sync starts may fail first and end the session: then update
    // finds no peer and reports length 0.)
    let got = core.update(Duration::from_secs(2)).await;
    assert!(matches!(got, Err(_) | Ok(0)), "{got:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the session ends");
    let reason = end.expect_err("with an error");
    eprintln!("{reason}");
    assert!(reason.contains("impossible length"), "{reason}");
    assert_eq!(core.length(), 0);
    assert_eq!(core.store().block_count().unwrap(), 0);
}

/// The aggregator's resident memory in MB (`VmRSS` of /proc/<pid>/status).
fn rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Honest puts during the evil ingest, one every 2 s.
const ROUNDS: u32 = 8;

/// A real aggregator follows the 2^53 bee and an honest one: the honest bee's new entries
/// are searchable within seconds throughout, /healthz answers, memory stays bounded, the
/// claim shows in the feed's status, and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_follows_a_huge_claim_and_an_honest_bee() {
    init_tracing();
    let (_keep, dir) = temp_dir();
    // Its stderr (the log, and any panic message) goes to a file we read at the end.
    let log = dir.join("aggregator.log");
    let script = format!("exec \"$0\" \"$@\" 2>'{}'", log.display());
    let agg = AggProc::start_under(dir.join("agg"), "", &["sh", "-c", &script]).await;
    let pid = agg.pid().unwrap();

    // The honest bee, written and served in this process.
    let rep = replicator(true);
    let writer = BeeWriter::new(rep.create_core(KeyPair::generate(), false).unwrap()).unwrap();
    writer
        .put(b"h0", br#"{"title":"honest zero"}"#)
        .await
        .unwrap();
    let (honest_addr, _task) = rep.listen("127.0.0.1:0").await.unwrap();
    let honest = writer.bee().core().key().to_hex();
    let (s, v) = agg.follow(&honest, Some(&honest_addr.to_string())).await;
    assert_eq!(s, 201, "{v}");
    agg.wait_for("/v1/search?q=zero", Duration::from_secs(20), |v| {
        v["entries"].as_array().is_some_and(|e| e.len() == 1)
    })
    .await;
    let rss_before = rss_mb(pid);

    let huge = HugeCore::new(MAX_LENGTH);
    let evil_addr = huge.serve().await;
    let evil = huge.key().to_hex();
    let (s, v) = agg.follow(&evil, Some(&evil_addr)).await;
    assert_eq!(s, 201, "{v}");
    let status = format!("/v1/feeds/{evil}");
    let (st, took) = agg
        .wait_for(&status, Duration::from_secs(30), |v| {
            v["length"] == MAX_LENGTH
        })
        .await;
    eprintln!("evil length {} seen after {took:?}", st["length"]);
    // Its one key is indexed once the first chunk is in.
    agg.wait_for("/v1/search?q=huge", Duration::from_secs(30), |v| {
        v["entries"].as_array().is_some_and(|e| e.len() == 1)
    })
    .await;

    // ROUNDS × 2 s of evil ingest: an honest put every 2 s, memory sampled all along.
    let t0 = Instant::now();
    let indexed_at = |v: &Value| v["indexedVersion"].as_u64().unwrap_or(0);
    let start_version = indexed_at(&agg.get(&status).await.1);
    let mut rss_max = rss_before;
    let mut latencies = Vec::new();
    let mut rss_trace = Vec::new();
    for n in 1..=ROUNDS {
        let word = format!("honestword{n}");
        let put = Instant::now();
        writer
            .put(
                format!("h{n}").as_bytes(),
                format!(r#"{{"title":"{word}"}}"#).as_bytes(),
            )
            .await
            .unwrap();
        let deadline = put + Duration::from_secs(2);
        let mut seen = None;
        while seen.is_none() || Instant::now() < deadline {
            if seen.is_none() {
                let (_, v) = agg.get(&format!("/v1/search?q={word}")).await;
                // The entry itself, first: the other rounds' words are one typo away from
                // this one, so they come after it.
                if v["entries"][0]["value"]["title"].as_str() == Some(word.as_str()) {
                    seen = Some(put.elapsed());
                }
            }
            rss_max = rss_max.max(rss_mb(pid));
            assert!(
                put.elapsed() < Duration::from_secs(20),
                "honest entry {n} not searchable after 20 s"
            );
            let (s, _) = agg.get("/healthz").await;
            assert_eq!(s, 200, "/healthz");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.push(seen.unwrap());
        rss_trace.push(rss_mb(pid).round());
    }
    let elapsed = t0.elapsed();
    let (_, st) = agg.get(&status).await;
    let end_version = indexed_at(&st);
    let rate = (end_version - start_version) as f64 / elapsed.as_secs_f64();
    eprintln!(
        "over {elapsed:?}: evil feed indexed {start_version} → {end_version} ({rate:.0} entries/s), \
         blocks downloaded {}, errors {}, last error {}; server answered {} requests, refused {}, \
         highest block asked {}",
        st["blocksDownloaded"],
        st["errors"],
        st["lastError"],
        huge.answered.load(Ordering::Relaxed),
        huge.refused.load(Ordering::Relaxed),
        huge.highest_block.load(Ordering::Relaxed),
    );
    eprintln!("honest put → searchable: {latencies:?}");
    eprintln!(
        "aggregator RSS: {rss_before:.0} MB before the evil feed, at most {rss_max:.0} MB; \
         every 2 s: {rss_trace:?}"
    );
    assert_eq!(st["length"], MAX_LENGTH, "{st}");
    assert_eq!(st["remoteLength"], MAX_LENGTH, "{st}");
    assert!(
        end_version > start_version,
        "the evil feed is ingested: {st}"
    );
    assert!(rss_max < 400.0, "RSS {rss_max:.0} MB");
    // The honest feed keeps its latency: its entries do not queue behind the evil feed's.
    let worst = latencies.iter().max().unwrap();
    assert!(*worst < Duration::from_secs(10), "{latencies:?}");
    assert!(
        st["lag"].as_u64().unwrap() > MAX_LENGTH - 1_000_000_000,
        "{st}"
    );
    let (s, one) = agg.get(&format!("/v1/entries/{evil}/k")).await;
    assert_eq!(
        (s, &one["value"]["title"]),
        (200, &Value::from("huge")),
        "{one}"
    );
    let (s, _) = agg.get("/metrics").await;
    assert_eq!(s, 200, "/metrics");
    let (_, feed) = agg.get(&format!("/v1/feed?feed={evil}")).await;
    assert_eq!(feed["entries"].as_array().map(Vec::len), Some(1), "{feed}");
    assert_eq!(agg.all_entries(&honest).await.len(), ROUNDS as usize + 1);

    let mut agg = agg;
    let child = agg.child.as_mut().unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the aggregator is alive"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "{text}");
}
