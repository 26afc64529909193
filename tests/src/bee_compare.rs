//! The same questions asked of JS hyperbee and of our reader, for comparing answers.

use apiary_core::bee::{Bee, HistoryOptions, OpKind, RangeOptions};
use serde_json::{json, Value};

use crate::{entry_json, JsPeer};

/// One write of the movie workload.
#[derive(Debug, Clone)]
pub enum MovieOp {
    /// put key value
    Put(String, Value),
    /// del key
    Del(String),
    /// put in sub(prefix)
    SubPut(String, String, Value),
    /// one batch
    Batch(Vec<(String, Option<Value>)>),
}

/// The workload: overwrites, deletes, unicode keys, a sub, a 5 KB value and a batch.
pub fn movie_ops() -> Vec<MovieOp> {
    let mut ops = vec![
        MovieOp::Put("m1".into(), json!({"title": "Alien"})),
        MovieOp::Put("m2".into(), json!({"title": "Blade Runner"})),
        MovieOp::Put("m3".into(), json!({"title": "Brazil"})),
        MovieOp::Put("ключ".into(), json!({"title": "Сталкер"})),
        MovieOp::Put("😀".into(), json!({"title": "emoji", "n": 1})),
        MovieOp::Put("m2".into(), json!({"title": "Blade Runner 2049"})),
        MovieOp::Put("big".into(), json!({"title": "x".repeat(5000)})),
        MovieOp::Del("m3".into()),
        MovieOp::SubPut("films".into(), "f1".into(), json!({"title": "Solaris"})),
        MovieOp::SubPut("films".into(), "f2".into(), json!({"title": "Mirror"})),
    ];
    let mut batch: Vec<(String, Option<Value>)> = (0..30)
        .map(|i| {
            (
                format!("k{i:03}"),
                Some(json!({"title": format!("movie {i}"), "i": i})),
            )
        })
        .collect();
    batch.push(("m1".into(), None));
    ops.push(MovieOp::Batch(batch));
    ops
}

/// Writes the workload through the JS peer into bee `name`.
pub async fn fill_js(js: &mut JsPeer, name: &str) {
    for op in movie_ops() {
        let cmd = match op {
            MovieOp::Put(k, v) => json!({"cmd": "put", "name": name, "key": k, "value": v}),
            MovieOp::Del(k) => json!({"cmd": "del", "name": name, "key": k}),
            MovieOp::SubPut(p, k, v) => {
                json!({"cmd": "subput", "name": name, "prefix": p, "key": k, "value": v})
            }
            MovieOp::Batch(b) => {
                let ops: Vec<Value> = b
                    .into_iter()
                    .map(|(k, v)| match v {
                        Some(v) => json!({"type": "put", "key": k, "value": v}),
                        None => json!({"type": "del", "key": k}),
                    })
                    .collect();
                json!({"cmd": "batch", "name": name, "ops": ops})
            }
        };
        js.call(cmd).await;
    }
}

/// Writes the workload with our writer.
pub async fn fill_rust(w: &apiary_core::bee::BeeWriter) {
    use apiary_core::bee::Op;
    let enc = |v: &Value| serde_json::to_vec(v).unwrap();
    for op in movie_ops() {
        match op {
            MovieOp::Put(k, v) => {
                w.put(k.as_bytes(), &enc(&v)).await.unwrap();
            }
            MovieOp::Del(k) => {
                w.del(k.as_bytes()).await.unwrap();
            }
            MovieOp::SubPut(p, k, v) => {
                let key = format!("{p}\u{0}{k}");
                w.put(key.as_bytes(), &enc(&v)).await.unwrap();
            }
            MovieOp::Batch(b) => {
                let ops = b
                    .into_iter()
                    .map(|(k, v)| match v {
                        Some(v) => Op::Put {
                            key: k.into_bytes(),
                            value: enc(&v),
                        },
                        None => Op::Del {
                            key: k.into_bytes(),
                        },
                    })
                    .collect();
                w.batch(ops).await.unwrap();
            }
        }
    }
}

/// The `entries` array of a JS reply.
pub fn entries(v: &Value) -> Vec<Value> {
    v["entries"].as_array().cloned().unwrap_or_default()
}

/// Range options from the JS JSON form.
pub fn range_opts(o: &Value) -> RangeOptions {
    let b = |k: &str| {
        o.get(k)
            .and_then(|v| v.as_str())
            .map(|s| s.as_bytes().to_vec())
    };
    RangeOptions {
        gt: b("gt"),
        gte: b("gte"),
        lt: b("lt"),
        lte: b("lte"),
        reverse: o.get("reverse").and_then(Value::as_bool).unwrap_or(false),
        limit: o.get("limit").and_then(Value::as_u64).map(|l| l as usize),
    }
}

/// Our reader's history in the JS peer's JSON form `{type, seq, key, value}` (`type` is
/// `put` or `del`).
pub async fn history_json(bee: &Bee, opts: &HistoryOptions) -> Vec<Value> {
    bee.history(opts)
        .await
        .unwrap()
        .iter()
        .map(|h| {
            let mut e = entry_json(&h.entry);
            e["type"] = json!(if h.kind == OpKind::Put { "put" } else { "del" });
            e
        })
        .collect()
}

/// Asks JS and our reader the same get/range/history/diff questions on the movie workload.
pub async fn compare_everything(js: &mut JsPeer, name: &str, bee: &Bee) {
    let version = bee.version();
    let info = js.call(json!({"cmd": "info", "name": name})).await;
    assert_eq!(info["version"], json!(version), "same version");
    bee.header().await.unwrap();

    // get, at the current and an older version, in the sub too
    for v in [None, Some(5u64), Some(11)] {
        let snap = v.map_or_else(|| bee.snapshot(), |v| bee.checkout(v));
        for k in [
            "m1",
            "m2",
            "m3",
            "ключ",
            "😀",
            "big",
            "k007",
            "nope",
            "films\u{0}f1",
        ] {
            let mut q = json!({"cmd": "get", "name": name, "key": k});
            if let Some(v) = v {
                q["version"] = json!(v);
            }
            let want = js.call(q).await["entry"].clone();
            let got = snap
                .get(k.as_bytes())
                .await
                .unwrap()
                .map(|e| entry_json(&e))
                .unwrap_or(Value::Null);
            assert_eq!(got, want, "get {k} at {v:?}");
        }
    }
    let sub = bee.snapshot().sub(b"films");
    let want = js
        .call(json!({"cmd": "get", "name": name, "sub": "films", "key": "f2"}))
        .await["entry"]
        .clone();
    assert_eq!(entry_json(&sub.get(b"f2").await.unwrap().unwrap()), want);

    // range, both directions, bounds and limits
    let cases = [
        json!({}),
        json!({"reverse": true}),
        json!({"gte": "k010", "lt": "k020"}),
        json!({"gt": "k010", "lte": "k020", "reverse": true}),
        json!({"limit": 5}),
        json!({"reverse": true, "limit": 3}),
        json!({"gt": "m", "limit": 4}),
        json!({"lt": "k005"}),
        json!({"gte": "zzz"}),
        json!({"gt": "k029", "lt": "m2"}),
    ];
    for o in &cases {
        let want = entries(
            &js.call(json!({"cmd": "range", "name": name, "opts": o}))
                .await,
        );
        let got: Vec<Value> = bee
            .snapshot()
            .range(range_opts(o))
            .await
            .unwrap()
            .iter()
            .map(entry_json)
            .collect();
        assert_eq!(got, want, "range {o}");
        let want = entries(
            &js.call(json!({"cmd": "range", "name": name, "opts": o, "version": 8}))
                .await,
        );
        let got: Vec<Value> = bee
            .checkout(8)
            .range(range_opts(o))
            .await
            .unwrap()
            .iter()
            .map(entry_json)
            .collect();
        assert_eq!(got, want, "range {o} at version 8");
    }
    let want = entries(
        &js.call(json!({"cmd": "range", "name": name, "sub": "films", "opts": {}}))
            .await,
    );
    let got: Vec<Value> = sub
        .range(RangeOptions::default())
        .await
        .unwrap()
        .iter()
        .map(entry_json)
        .collect();
    assert_eq!(got, want, "range of a sub");
    assert_eq!(got.len(), 2);

    // history: puts and deletes in log order
    for o in [
        json!({}),
        json!({"reverse": true}),
        json!({"gte": 5, "lt": 12}),
        json!({"gt": -4}),
        json!({"limit": 3, "reverse": true}),
        json!({"lte": 9}),
    ] {
        let want = entries(
            &js.call(json!({"cmd": "history", "name": name, "opts": o}))
                .await,
        );
        let i = |k: &str| o.get(k).and_then(Value::as_i64);
        let opts = HistoryOptions {
            gt: i("gt"),
            gte: i("gte"),
            lt: i("lt"),
            lte: i("lte"),
            reverse: o.get("reverse").and_then(Value::as_bool).unwrap_or(false),
            limit: o.get("limit").and_then(Value::as_u64).map(|l| l as usize),
        };
        let got = history_json(bee, &opts).await;
        assert_eq!(got, want, "history {o}");
    }

    // diff between versions, in both directions
    for (left, right) in [(version, 3u64), (9, version), (version, 1), (11, 10)] {
        let want = entries(
            &js.call(
                json!({"cmd": "diff", "name": name, "version": left, "other": right, "opts": {}}),
            )
            .await,
        );
        let got: Vec<Value> = bee
            .checkout(left)
            .diff(right, RangeOptions::default())
            .await
            .unwrap()
            .iter()
            .map(|d| {
                json!({
                    "left": d.left.as_ref().map(entry_json).unwrap_or(Value::Null),
                    "right": d.right.as_ref().map(entry_json).unwrap_or(Value::Null),
                })
            })
            .collect();
        assert_eq!(got, want, "diff {left} vs {right}");
    }
}
