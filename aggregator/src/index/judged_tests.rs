//! Search quality on judged query sets (issue "search that works in every language"): the
//! files in `aggregator/testdata/search/` hold entries written for this purpose in many
//! languages, and queries with the entries each must find. Every entry goes through the real
//! extraction, analysis and index; each query is searched as `/v1/search` would, and its
//! first ten hits are judged.
//!
//! - **recall@10**: of the entries a query must find, the share in its first ten hits,
//!   averaged over the queries; the tests fail below [`MIN_RECALL`].
//! - **MRR**: the mean of 1 / (rank of the first entry it must find), reported.
//!
//! `cargo test -p apiary-aggregator judged -- --nocapture` prints both per language and per
//! kind of query, and every query that missed an entry.
//!
//! File format (one JSON object): `entries`, each `{"id", "value"}` (the value as posted;
//! the id is its key), and `queries`, each `{"q", "lang", "kind", "relevant": [ids], "note"}`
//! and optionally `"prefix": true` (the last word is being typed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::{EntryDoc, Filters, Index, IndexOp, SearchOptions};
use crate::extract::extract;

/// The recall@10 a set must reach.
const MIN_RECALL: f64 = 0.95;

#[derive(Deserialize)]
struct Set {
    entries: Vec<JudgedEntry>,
    queries: Vec<Judged>,
}

#[derive(Deserialize)]
struct JudgedEntry {
    id: String,
    value: serde_json::Value,
}

#[derive(Deserialize)]
struct Judged {
    q: String,
    lang: String,
    kind: String,
    relevant: Vec<String>,
    #[serde(default)]
    prefix: bool,
}

fn load(names: &[&str]) -> Set {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/search");
    let mut all = Set {
        entries: Vec::new(),
        queries: Vec::new(),
    };
    for name in names {
        let text = std::fs::read_to_string(dir.join(name)).expect(name);
        let set: Set = serde_json::from_str(&text).expect(name);
        all.entries.extend(set.entries);
        all.queries.extend(set.queries);
    }
    all
}

async fn index_of(dir: &Path, set: &Set) -> Arc<Index> {
    let index = super::search_tests::open_index(dir);
    let mut ids = HashSet::new();
    let ops = set
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert!(ids.insert(&e.id), "entry {} twice", e.id);
            IndexOp::Insert(Box::new(EntryDoc::new(
                "judged".into(),
                e.id.as_bytes().to_vec(),
                i as u64,
                i as i64,
                extract(&e.value),
                e.value.to_string(),
            )))
        })
        .collect();
    index.submit_and_wait(ops).await.unwrap();
    for q in &set.queries {
        assert!(!q.relevant.is_empty(), "{}: nothing to find", q.q);
        for r in &q.relevant {
            assert!(ids.contains(r), "{}: no entry {r}", q.q);
        }
    }
    index
}

/// Sums of one group of queries.
#[derive(Default)]
struct Score {
    queries: usize,
    recall: f64,
    rr: f64,
}

impl Score {
    fn add(&mut self, recall: f64, rr: f64) {
        self.queries += 1;
        self.recall += recall;
        self.rr += rr;
    }

    fn recall(&self) -> f64 {
        self.recall / self.queries.max(1) as f64
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name:<14} {:>4} queries  recall@10 {:.3}  MRR {:.3}",
            self.queries,
            self.recall(),
            self.rr / self.queries.max(1) as f64
        )
    }
}

/// Runs every query of `set`, prints the scores and misses, and returns the whole set's.
async fn judge(title: &str, set: &Set) -> Score {
    let dir = tempfile::tempdir().unwrap();
    let index = index_of(dir.path(), set).await;
    let mut total = Score::default();
    let mut by_lang: BTreeMap<&str, Score> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, Score> = BTreeMap::new();
    let mut misses = Vec::new();
    for j in &set.queries {
        let opts = SearchOptions {
            prefix: j.prefix,
            ..Default::default()
        };
        let page = index
            .search(&j.q, &Filters::default(), None, 10, opts)
            .unwrap_or_else(|e| panic!("{}: {e}", j.q));
        let got: Vec<String> = page.entries.into_iter().map(|e| e.key).collect();
        let found = j.relevant.iter().filter(|r| got.contains(r)).count();
        let recall = found as f64 / j.relevant.len() as f64;
        let rr = got
            .iter()
            .position(|k| j.relevant.contains(k))
            .map_or(0.0, |i| 1.0 / (i + 1) as f64);
        total.add(recall, rr);
        by_lang.entry(&j.lang).or_default().add(recall, rr);
        by_kind.entry(&j.kind).or_default().add(recall, rr);
        if found < j.relevant.len() {
            misses.push(format!(
                "  {} [{} {}{}] wants {:?}, got {:?}",
                j.q,
                j.lang,
                j.kind,
                if j.prefix { ", prefix" } else { "" },
                j.relevant,
                got
            ));
        }
    }
    let mut report = vec![format!("{title}: {} entries", set.entries.len())];
    report.push(total.line("all"));
    report.extend(by_lang.iter().map(|(l, s)| s.line(l)));
    report.extend(by_kind.iter().map(|(k, s)| s.line(k)));
    report.push(format!("missed ({}):", misses.len()));
    report.extend(misses);
    eprintln!("{}", report.join("\n"));
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judged_multilingual_queries() {
    let set = load(&["judged-cjk.json", "judged-world.json", "judged-europe.json"]);
    let langs: HashSet<&str> = set.queries.iter().map(|q| q.lang.as_str()).collect();
    assert!(set.queries.len() >= 150 && langs.len() >= 10);
    let score = judge("multilingual", &set).await;
    assert!(
        score.recall() >= MIN_RECALL,
        "recall@10 {:.3}",
        score.recall()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judged_typo_and_prefix_queries() {
    let set = load(&["typos.json"]);
    let score = judge("typos and prefixes", &set).await;
    assert!(
        score.recall() >= MIN_RECALL,
        "recall@10 {:.3}",
        score.recall()
    );
}
