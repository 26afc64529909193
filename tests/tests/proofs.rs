//! Proof bundles end to end: an aggregator follows JS-made bees (a default manifest core and
//! a compat core) and serves `/v1/proofs`; every bundle it gives — puts, an overwrite, a
//! delete (absence), a key never written, a sub key, a unicode key, older versions — is
//! accepted by both verifiers, ours (`apiary-aggregator verify`) and the independent JS one
//! (`tests/js/verify-bundle.js`, on hypercore-crypto and hyperbee's own encoding), and each
//! tampered variant is refused by both.

use std::path::Path;
use std::time::Duration;

use apiary_tests::agg::{temp_dir, AggProc};
use apiary_tests::{bin_path, ensure_js, js_bee, js_dir, run_bin, JsPeer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

/// Both verifiers on `bundle` for feed `key`: (ours accepted, JS accepted), and what each
/// printed.
fn verify_both(dir: &Path, bundle: &Value, key: &str) -> (bool, bool, String) {
    let file = dir.join("bundle.json");
    std::fs::write(&file, serde_json::to_vec(bundle).unwrap()).unwrap();
    let f = file.to_str().unwrap();
    let agg = bin_path("apiary-aggregator", "apiary-aggregator");
    let (code, out, err) = run_bin(&agg, &["verify", f, "--key", key]);
    assert!(code == 0 || code == 1, "ours exited {code}: {err}");
    let js = std::process::Command::new("node")
        .arg(js_dir().join("verify-bundle.js"))
        .args(["--key", key, f])
        .output()
        .unwrap();
    let js_out = String::from_utf8_lossy(&js.stdout).into_owned();
    let js_ok = js.status.success();
    if js_ok && bundle["format"] == "apiary-bee-proof/1" {
        let v: Value = serde_json::from_str(js_out.trim()).unwrap();
        assert_eq!(v["ok"], true, "{js_out}");
        assert_eq!(v["found"], bundle["result"]["found"], "{js_out}");
        assert_eq!(v["version"], bundle["version"], "{js_out}");
    }
    (code == 0, js_ok, format!("ours: {out}{err}\njs: {js_out}"))
}

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

/// The value a found bundle proves, as JSON.
fn proven_value(bundle: &Value) -> Value {
    let raw = STANDARD
        .decode(bundle["result"]["value"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// Waits until the aggregator has dropped at least `n` block payloads (index-only).
async fn wait_dropped(agg: &AggProc, n: u64) {
    let t = std::time::Instant::now();
    loop {
        let text = agg.text("/metrics").await;
        let dropped = text
            .lines()
            .find_map(|l| l.strip_prefix("apiary_blocks_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped >= n as f64 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "only {dropped} blocks dropped, waiting for {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tampered copies of an honest, found bundle, each named. `older` is a bundle of the same
/// feed at an older version, `other` one of another feed.
fn tampered(b: &Value, older: &Value, other: &Value) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    let mut t = b.clone();
    let data = STANDARD
        .decode(t["blocks"][0]["data"].as_str().unwrap())
        .unwrap();
    let mut flipped = data.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x20;
    t["blocks"][0]["data"] = json!(STANDARD.encode(&flipped));
    out.push(("one byte of a block", t));
    let mut t = b.clone();
    let h = t["nodes"][0]["hash"].as_str().unwrap().to_owned();
    let flip = if h.starts_with('0') { "1" } else { "0" };
    t["nodes"][0]["hash"] = json!(format!("{flip}{}", &h[1..]));
    out.push(("a node hash", t));
    let mut t = b.clone();
    let s = t["tree"]["signature"].as_str().unwrap().to_owned();
    let flip = if s.ends_with('0') { "1" } else { "0" };
    t["tree"]["signature"] = json!(format!("{}{flip}", &s[..s.len() - 1]));
    out.push(("the signature", t));
    let mut t = b.clone();
    t["tree"]["length"] = json!(b["tree"]["length"].as_u64().unwrap() + 1);
    out.push(("the length", t));
    let mut t = b.clone();
    t["result"]["value"] = json!(b64("{\"title\":\"Not what they wrote\"}"));
    out.push(("a swapped value", t));
    // A path block of another version: the older bundle's root block replaces this one's.
    let mut t = b.clone();
    let blocks = t["blocks"].as_array_mut().unwrap();
    let old_root = older["blocks"].as_array().unwrap().last().unwrap().clone();
    let new_root = blocks.len() - 1;
    blocks[new_root]["data"] = old_root["data"].clone();
    out.push(("a path block from another version", t));
    let mut t = b.clone();
    t["blocks"].as_array_mut().unwrap().remove(0);
    out.push(("a key missing from the path", t));
    let mut t = b.clone();
    t["tree"]["manifest"] = other["tree"]["manifest"].clone();
    out.push(("a manifest for another key", t));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_from_js_bees_pass_both_verifiers_and_tampers_fail_both() {
    ensure_js();
    let (_d, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let movies = js
        .call(json!({"cmd": "create", "name": "movies", "compat": false}))
        .await;
    let mkey = movies["key"].as_str().unwrap().to_owned();
    let mut keys = Vec::new();
    for i in 0..40 {
        let k = format!("{:016x}", 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1));
        js.call(json!({"cmd": "put", "name": "movies", "key": k, "value": {"title": format!("Movie {i}")}}))
            .await;
        keys.push(k);
    }
    let mid = js
        .call(json!({"cmd": "put", "name": "movies", "key": "映画/Ünïcode é", "value": {"title": "Ünïcode"}}))
        .await["version"]
        .as_u64()
        .unwrap();
    js.call(
        json!({"cmd": "put", "name": "movies", "key": keys[3], "value": {"title": "Overwritten"}}),
    )
    .await;
    js.call(json!({"cmd": "del", "name": "movies", "key": keys[5]}))
        .await;
    let last = js
        .call(json!({"cmd": "subput", "name": "movies", "prefix": "reviews", "key": "r1", "value": {"title": "A review"}}))
        .await["version"]
        .as_u64()
        .unwrap();
    let old = js
        .call(json!({"cmd": "create", "name": "old", "compat": true}))
        .await;
    let okey = old["key"].as_str().unwrap().to_owned();
    for k in ["a", "b", "c"] {
        js.call(json!({"cmd": "put", "name": "old", "key": k, "value": {"title": k}}))
            .await;
    }
    let port = js.serve().await;
    let peer = format!("127.0.0.1:{port}");

    let agg = AggProc::start(dir.join("agg"), "").await;
    for k in [&mkey, &okey] {
        let (s, v) = agg.follow(k, Some(&peer)).await;
        assert_eq!(s, 201, "{v}");
    }
    agg.wait_for(&format!("/v1/feeds/{mkey}"), Duration::from_secs(20), |v| {
        v["indexedVersion"] == last
    })
    .await;
    agg.wait_for(&format!("/v1/feeds/{okey}"), Duration::from_secs(20), |v| {
        v["indexedVersion"] == 4
    })
    .await;

    // Every hit of the merged feed links its proof, and the proof proves the value shown.
    let mut honest = Vec::new();
    let (_, page) = agg.get("/v1/feed?limit=100").await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 40 - 1 + 1 + 1 + 3, "{page}");
    for e in entries {
        let link = e["proof"].as_str().unwrap();
        let (s, b) = agg.get(link).await;
        assert_eq!(s, 200, "{link}: {b}");
        assert_eq!(b["result"]["found"], true, "{link}");
        assert_eq!(proven_value(&b), e["value"], "{link}");
        assert_eq!(b["result"]["seq"], e["seq"], "{link}");
        honest.push((e["feed"].as_str().unwrap().to_owned(), b));
    }
    // Absence: the deleted key, a key never written; an older version, before the overwrite
    // and the delete; and a search hit's link.
    let feed = |b: &Value| b["feed"].as_str().unwrap().to_owned();
    for (path, found) in [
        (format!("/v1/proofs/{mkey}/{}", keys[5]), false),
        (format!("/v1/proofs/{mkey}/never-written"), false),
        (format!("/v1/proofs/{mkey}/{}?version={mid}", keys[5]), true),
        (format!("/v1/proofs/{mkey}/{}?version={mid}", keys[3]), true),
        (format!("/v1/proofs/{mkey}/{}?version=2", keys[0]), true),
        (format!("/v1/proofs/{okey}/zzz"), false),
    ] {
        let (s, b) = agg.get(&path).await;
        assert_eq!(s, 200, "{path}: {b}");
        assert_eq!(b["result"]["found"], found, "{path}");
        honest.push((feed(&b), b));
    }
    let (_, before) = agg
        .get(&format!("/v1/proofs/{mkey}/{}?version={mid}", keys[3]))
        .await;
    assert_eq!(proven_value(&before), json!({"title": "Movie 3"}));
    let (_, hits) = agg.get("/v1/search?q=review").await;
    let link = hits["entries"][0]["proof"].as_str().unwrap().to_owned();
    assert!(link.contains("reviews%00r1"), "{link}");

    for (f, b) in &honest {
        let (ours, theirs, said) = verify_both(&dir, b, f);
        assert!(ours && theirs, "an honest bundle was refused\n{said}\n{b}");
    }
    eprintln!("{} honest bundles accepted by both verifiers", honest.len());

    // Tampers, on a found bundle of the manifest bee (the compat one has no manifest).
    let (_, b) = agg.get(&format!("/v1/proofs/{mkey}/{}", keys[3])).await;
    let (_, older) = agg
        .get(&format!("/v1/proofs/{mkey}/{}?version={mid}", keys[3]))
        .await;
    let other = js
        .call(json!({"cmd": "create", "name": "other", "compat": false}))
        .await;
    let okey2 = other["key"].as_str().unwrap().to_owned();
    js.call(json!({"cmd": "put", "name": "other", "key": "x", "value": {}}))
        .await;
    let (s, v) = agg.follow(&okey2, Some(&peer)).await;
    assert_eq!(s, 201, "{v}");
    let (other, _) = agg
        .wait_for(
            &format!("/v1/proofs/{okey2}/x"),
            Duration::from_secs(20),
            |v| v["result"]["found"] == true,
        )
        .await;
    let mut refused = 0;
    for (what, t) in tampered(&b, &older, &other) {
        assert_ne!(t, b, "{what} changed nothing");
        let (ours, theirs, said) = verify_both(&dir, &t, &feed(&b));
        assert!(!ours && !theirs, "{what} was accepted\n{said}");
        refused += 1;
    }
    assert_eq!(refused, 8);

    // What the API refuses: a version past the signed length, a feed not followed.
    let (s, v) = agg
        .get(&format!("/v1/proofs/{mkey}/{}?version=999999", keys[0]))
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = agg.get(&format!("/v1/proofs/{}/k", "0".repeat(64))).await;
    assert_eq!(s, 404);
    let (s, _) = agg.get(&format!("/v1/proofs/{mkey}/k?version=0")).await;
    assert_eq!(s, 400);
}

/// The other way round: bundles made by JS alone (`tests/js/make-bundle.js`: hyperbee's own
/// `get` records the blocks it reads, hypercore's storage gives the nodes) pass our verifier,
/// so the two sides agree on the format, not only on each other's output.
#[tokio::test]
async fn bundles_made_by_js_pass_our_verifier() {
    ensure_js();
    let (_d, dir) = temp_dir();
    let out = dir.join("bundles");
    let made = std::process::Command::new("node")
        .arg(js_dir().join("make-bundle.js"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let mut checked = 0;
    for f in std::fs::read_dir(&out).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let b: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let key = b["feed"].as_str().unwrap().to_owned();
        let (ours, theirs, said) = verify_both(&dir, &b, &key);
        assert!(ours && theirs, "{}: {said}", path.display());
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} bundles made");
}

/// `retention = "index-only"`: the payloads are dropped once indexed; a proof fetches the
/// blocks it needs from the author's peer while it is online, and with no peer online it is
/// an inclusion proof of the entry's block, which both verifiers accept as such.
#[tokio::test(flavor = "multi_thread")]
async fn index_only_proofs_fetch_from_peers_or_prove_inclusion() {
    ensure_js();
    let (_d, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let key = js_bee(&mut js, "big", 500, 100).await;
    let port = js.serve().await;
    let agg = AggProc::start(dir.join("agg"), "retention = \"index-only\"").await;
    let (s, v) = agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(s, 201, "{v}");
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(20), |v| {
        v["indexedVersion"] == 501
    })
    .await;
    wait_dropped(&agg, 256).await;

    // The peer is online: a full bundle, its blocks fetched again.
    let (s, full) = agg.get(&format!("/v1/proofs/{key}/k00000123")).await;
    assert_eq!(s, 200, "{full}");
    assert_eq!(full["format"], "apiary-bee-proof/1");
    assert_eq!(full["result"]["found"], true);
    let (ours, theirs, said) = verify_both(&dir, &full, &key);
    assert!(ours && theirs, "{said}");
    let (s, gone) = agg.get(&format!("/v1/proofs/{key}/never")).await;
    assert_eq!(
        (s, &gone["result"]["found"]),
        (200, &json!(false)),
        "{gone}"
    );

    // The peer goes away: the tree alone proves the entry's block is in the signed log.
    js.close().await;
    agg.wait_for(&format!("/v1/feeds/{key}"), Duration::from_secs(20), |v| {
        v["peers"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["connected"] == false))
    })
    .await;
    let (s, inc) = agg.get(&format!("/v1/proofs/{key}/k00000042")).await;
    assert_eq!(s, 200, "{inc}");
    assert_eq!(inc["format"], "apiary-inclusion-proof/1", "{inc}");
    let (_, entry) = agg.get(&format!("/v1/entries/{key}/k00000042")).await;
    assert_eq!(inc["seq"], entry["seq"]);
    let (ours, theirs, said) = verify_both(&dir, &inc, &key);
    assert!(ours && theirs, "{said}");
    assert!(
        said.contains("inclusion only") && said.contains("NOT proven"),
        "{said}"
    );
    let mut t = inc.clone();
    t["leaf"]["size"] = json!(inc["leaf"]["size"].as_u64().unwrap() + 1);
    let (ours, theirs, said) = verify_both(&dir, &t, &key);
    assert!(!ours && !theirs, "a tampered leaf was accepted\n{said}");
    // Absence needs the blocks: it cannot be proven now, and says so.
    let (s, v) = agg.get(&format!("/v1/proofs/{key}/never")).await;
    assert_eq!(s, 503, "{v}");
}

/// A reindex under `retention = "index-only"` (the index wiped, as a new schema version
/// does): the blocks are gone from the store, so the log is fetched again from the peer, and
/// the index ends as it was.
#[tokio::test(flavor = "multi_thread")]
async fn index_only_reindex_fetches_the_log_again() {
    ensure_js();
    let (_d, dir) = temp_dir();
    let mut js = JsPeer::start().await;
    let key = js_bee(&mut js, "big", 300, 50).await;
    js.call(json!({"cmd": "del", "name": "big", "key": "k00000007"}))
        .await;
    let port = js.serve().await;
    let mut agg = AggProc::start(dir.join("agg"), "retention = \"index-only\"").await;
    let (s, v) = agg.follow(&key, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(s, 201, "{v}");
    let caught_up = |v: &Value| v["indexedVersion"] == 302;
    agg.wait_for(
        &format!("/v1/feeds/{key}"),
        Duration::from_secs(20),
        caught_up,
    )
    .await;
    wait_dropped(&agg, 256).await;
    let before = agg.all_entries(&key).await;
    assert_eq!(before.len(), 299);
    let (st, _) = agg.terminate(Duration::from_secs(20)).await;
    assert!(st.success());
    std::fs::remove_dir_all(dir.join("agg").join("data").join("index")).unwrap();
    agg.restart().await;
    let (status, _) = agg
        .wait_for(
            &format!("/v1/feeds/{key}"),
            Duration::from_secs(30),
            caught_up,
        )
        .await;
    // Fetched again: this process downloaded the blocks it had dropped.
    assert!(
        status["blocksDownloaded"].as_u64().unwrap_or(0) >= 256,
        "{status}"
    );
    let after = agg.all_entries(&key).await;
    let ids = |v: &[Value]| {
        let mut k: Vec<String> = v.iter().map(|e| e["key"].to_string()).collect();
        k.sort();
        k
    };
    assert_eq!(ids(&after), ids(&before));
}
