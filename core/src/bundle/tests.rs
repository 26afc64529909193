//! Bundles built from a real writer's bee, checked against the bee's own `get` at several
//! versions, and every kind of tampering refused.

use std::sync::Arc;

use super::format::b64;
use super::*;
use crate::bee::{BeeWriter, Op};
use crate::crypto::KeyPair;
use crate::replicate::{Replica, Replicator, ReplicatorOptions};
use crate::store::Store;
use crate::Key;

/// A bee of 200 puts (values end in `salt`) (deep enough for several levels), overwrites, deletes, a sub and
/// unicode keys; returns the writer and the versions after each stage.
async fn bee(compat: bool, salt: &str) -> (BeeWriter, Vec<u64>) {
    let rep = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default());
    let w = BeeWriter::new(rep.create_core(KeyPair::generate(), compat).unwrap()).unwrap();
    let mut versions = Vec::new();
    for i in 0..200u32 {
        let v = format!("{{\"title\":\"movie {i}{salt}\"}}");
        w.put(format!("k{i:03}").as_bytes(), v.as_bytes())
            .await
            .unwrap();
    }
    versions.push(w.bee().version());
    w.put(b"k007", b"{\"title\":\"seven, again\"}")
        .await
        .unwrap();
    w.del(b"k100").await.unwrap();
    w.put("ключ/日本語/ü".as_bytes(), b"{\"title\":\"unicode\"}")
        .await
        .unwrap();
    w.put(b"posts\0p1", b"{\"title\":\"in a sub\"}")
        .await
        .unwrap();
    versions.push(w.bee().version());
    w.batch(vec![
        Op::Del {
            key: b"k050".to_vec(),
        },
        Op::Put {
            key: b"k201".to_vec(),
            value: b"{}".to_vec(),
        },
    ])
    .await
    .unwrap();
    versions.push(w.bee().version());
    (w, versions)
}

fn core(w: &BeeWriter) -> &Arc<Replica> {
    w.bee().core()
}

const KEYS: [&str; 9] = [
    "k000",
    "k007",
    "k050",
    "k100",
    "k150",
    "k199",
    "k201",
    "ключ/日本語/ü",
    "posts\0p1",
];

#[tokio::test]
async fn honest_bundles_prove_what_the_bee_says() {
    for compat in [false, true] {
        let (w, versions) = bee(compat, "").await;
        let key = *core(&w).key();
        for &v in versions.iter().chain([1, 2, 3].iter()) {
            for k in KEYS.iter().chain(["absent", "", "k0"].iter()) {
                let b = build(core(&w), k, v, true).await.unwrap();
                let p = verify(&b, &key).unwrap();
                let want = w.bee().checkout(v).get(k.as_bytes()).await.unwrap();
                assert_eq!(p.entry, want.map(|e| (e.seq, e.value)), "{k} at {v}");
                assert_eq!((p.version, p.key.as_str()), (v, *k));
                // Shared nodes: none twice, none computable, none missing.
                let json = serde_json::to_string(&b).unwrap();
                let back: Bundle = serde_json::from_str(&json).unwrap();
                assert_eq!(verify(&back, &key).unwrap(), p);
            }
        }
    }
}

#[tokio::test]
async fn a_lookup_reads_a_handful_of_blocks() {
    let (w, _) = bee(false, "").await;
    let b = build(core(&w), "k123", w.bee().version(), true)
        .await
        .unwrap();
    assert!(b.result.found);
    // 200 keys, nodes of at most 9 keys: three levels, a few comparisons each.
    assert!(
        (2..=16).contains(&b.blocks.len()),
        "{} blocks",
        b.blocks.len()
    );
    assert!(b.nodes.len() < 64, "{} nodes", b.nodes.len());
}

/// One tampered copy of `b` per way of lying, each named.
fn tampered(b: &Bundle, other: &Bundle) -> Vec<(&'static str, Bundle)> {
    let mut out = Vec::new();
    let mut t = b.clone();
    let mut data = base64_bytes(&t.blocks[0].data);
    let mid = data.len() / 2;
    data[mid] ^= 1;
    t.blocks[0].data = b64(&data);
    out.push(("a byte of a block", t));
    let mut t = b.clone();
    flip_hex(&mut t.nodes[0].hash);
    out.push(("a node hash", t));
    let mut t = b.clone();
    t.nodes[0].size += 1;
    out.push(("a node size", t));
    let mut t = b.clone();
    flip_hex(t.tree.signature.as_mut().unwrap());
    out.push(("the signature", t));
    for tail in ["00", "01"] {
        let mut t = b.clone();
        let s = t.tree.signature.as_mut().unwrap();
        s.truncate(s.len() - 2);
        s.push_str(tail);
        s.push_str("00");
        out.push(("a byte after the signature's proofs", t));
    }
    let mut t = b.clone();
    t.tree.signature = None;
    out.push(("no signature", t));
    let mut t = b.clone();
    t.tree.length -= 1;
    out.push(("the length", t));
    let mut t = b.clone();
    t.tree.fork += 1;
    out.push(("the fork", t));
    let mut t = b.clone();
    t.result.value = Some(b64(b"{\"title\":\"not what was written\"}"));
    out.push(("a swapped value", t));
    let mut t = b.clone();
    t.result = BundleResult {
        found: false,
        seq: None,
        value: None,
    };
    out.push(("found claimed absent", t));
    let mut t = b.clone();
    let last = t.blocks.len() - 1;
    t.blocks.remove(last);
    out.push(("a key missing from the path", t));
    let mut t = b.clone();
    t.nodes.pop();
    out.push(("a node missing", t));
    let mut t = b.clone();
    t.nodes.push(t.nodes[0].clone());
    out.push(("a node twice", t));
    let mut t = b.clone();
    t.blocks.push(t.blocks[0].clone());
    out.push(("a block twice", t));
    let mut t = b.clone();
    t.version = t.tree.length + 1;
    out.push(("a version past the length", t));
    let mut t = b.clone();
    t.key = "k124".into();
    out.push(("another key", t));
    // The same seq's block from another bee (another version of history).
    let mut t = b.clone();
    let o = other.blocks.iter().find(|o| o.seq == t.blocks[0].seq);
    t.blocks[0].data = o.map(|o| o.data.clone()).unwrap_or_default();
    out.push(("a path block from another log", t));
    let mut t = b.clone();
    t.tree.manifest = other.tree.manifest.clone();
    out.push(("a manifest for another key", t));
    let mut t = b.clone();
    t.feed = other.feed.clone();
    out.push(("another feed", t));
    out
}

fn base64_bytes(s: &str) -> Vec<u8> {
    super::format::from_b64("test", s).unwrap()
}

fn flip_hex(s: &mut String) {
    let first = if s.starts_with('0') { "1" } else { "0" };
    s.replace_range(0..1, first);
}

#[tokio::test]
async fn every_tamper_is_refused() {
    let (w, versions) = bee(false, "").await;
    let (other, _) = bee(false, " (other)").await;
    let key = *core(&w).key();
    let v = w.bee().version();
    let b = build(core(&w), "k123", v, true).await.unwrap();
    let o = build(core(&other), "k123", v, true).await.unwrap();
    verify(&b, &key).unwrap();
    let all = tampered(&b, &o);
    assert!(all.len() >= 20, "{}", all.len());
    for (what, t) in all {
        assert!(verify(&t, &key).is_err(), "accepted with {what} changed");
    }
    // A path block from an older version of the same bee: k007 was overwritten.
    let old = build(core(&w), "k007", versions[0], true).await.unwrap();
    assert_ne!(
        old.result,
        build(core(&w), "k007", v, true).await.unwrap().result
    );
    let mut t = build(core(&w), "k007", v, true).await.unwrap();
    t.result = old.result.clone();
    assert!(verify(&t, &key).is_err(), "accepted an older value");
    let mut t = old.clone();
    t.version = v;
    assert!(
        verify(&t, &key).is_err(),
        "accepted an old path at a new version"
    );
    // Absence is proven, and cannot be claimed for a key that is there.
    let gone = build(core(&w), "k100", v, true).await.unwrap();
    assert!(!gone.result.found);
    verify(&gone, &key).unwrap();
    let mut t = gone.clone();
    t.key = "k101".into();
    assert!(
        verify(&t, &key).is_err(),
        "absence of a present key accepted"
    );
}

#[tokio::test]
async fn malformed_bundles_are_errors_not_panics() {
    let (w, _) = bee(false, "").await;
    let key = *core(&w).key();
    let b = build(core(&w), "k001", w.bee().version(), true)
        .await
        .unwrap();
    let json = serde_json::to_value(&b).unwrap();
    let cases = [
        ("/tree/roots/0/hash", serde_json::json!("zz")),
        ("/tree/roots/0/hash", serde_json::json!("00")),
        ("/blocks/0/data", serde_json::json!("@@@")),
        ("/blocks/0/data", serde_json::json!("")),
        ("/tree/manifest", serde_json::json!("ff")),
        ("/tree/length", serde_json::json!(0)),
        ("/tree/length", serde_json::json!(1u64 << 60)),
        ("/blocks/0/seq", serde_json::json!(0)),
        ("/blocks/0/seq", serde_json::json!(u64::MAX)),
        ("/nodes/0/index", serde_json::json!(u64::MAX)),
        ("/version", serde_json::json!(0)),
        ("/format", serde_json::json!("other/1")),
    ];
    for (path, v) in cases {
        let mut j = json.clone();
        *j.pointer_mut(path).unwrap() = v;
        let t: Bundle = serde_json::from_value(j).unwrap();
        assert!(verify(&t, &key).is_err(), "accepted {path} changed");
    }
    assert!(build(core(&w), "k001", w.bee().version() + 1, true)
        .await
        .is_err());
    assert!(build(core(&w), "k001", 0, true).await.is_err());
    let empty = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default())
        .create_core(KeyPair::generate(), false)
        .unwrap();
    assert!(build(&empty, "k", 1, true).await.is_err());
    let _: Key = key;
}

#[tokio::test]
async fn inclusion_proofs_from_the_tree_alone() {
    let (w, _) = bee(false, "").await;
    let key = *core(&w).key();
    let length = core(&w).length();
    // Every block's payload dropped: the tree is enough.
    assert!(core(&w).drop_blocks(length).unwrap() > 0);
    for seq in [1, 2, 100, length - 1] {
        let p = build_inclusion(core(&w), "k", length, seq, "test").unwrap();
        let proven = verify_inclusion(&p, &key).unwrap();
        assert_eq!((proven.seq, proven.length), (seq, length));
        let mut t = p.clone();
        flip_hex(&mut t.leaf.hash);
        assert!(verify_inclusion(&t, &key).is_err(), "leaf hash");
        let mut t = p.clone();
        t.leaf.size += 1;
        assert!(verify_inclusion(&t, &key).is_err(), "leaf size");
        let mut t = p.clone();
        t.seq += 1;
        assert!(verify_inclusion(&t, &key).is_err(), "another seq");
        if !p.nodes.is_empty() {
            let mut t = p.clone();
            flip_hex(&mut t.nodes[0].hash);
            assert!(verify_inclusion(&t, &key).is_err(), "a node");
        }
        let mut t = p.clone();
        t.tree.length -= 1;
        assert!(verify_inclusion(&t, &key).is_err(), "the length");
    }
    assert!(build_inclusion(core(&w), "k", length, length, "test").is_err());
    // A full bundle now needs blocks no peer has: it fails instead of lying.
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        build(core(&w), "k001", length, true),
    )
    .await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
    let r = build(core(&w), "k001", length, false).await;
    assert!(matches!(r, Err(crate::Error::NotAvailable { .. })), "{r:?}");
}
