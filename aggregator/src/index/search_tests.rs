//! Search as a new user tries it, in several languages and scripts, through the real
//! extraction, analysis and index (issue "search that works in every language").

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{EntryDoc, Filters, Index, IndexOp};
use crate::extract::extract;
use crate::health::Health;

/// Values as people post them: a bare title (language detected) or one with its language.
fn values() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("amelie", json!({"title": "Amélie"})),
        ("berlin", json!({"title": "Der Himmel über Berlin"})),
        ("running", json!({"title": "Running runners ran quickly"})),
        (
            "tokyo",
            json!({"title": "東京物語は小津安二郎の映画です", "langs": ["ja"]}),
        ),
        ("moscow", json!({"title": "Москва слезам не верит"})),
        ("seoul", json!({"text": "서울에서 만나요", "lang": "ko"})),
        (
            "hindi",
            json!({"text": "मुझे हिन्दी फ़िल्में पसंद हैं", "lang": "hi"}),
        ),
        (
            "destin",
            json!({"title": "Le Fabuleux Destin d'Amélie Poulain", "language": "fr"}),
        ),
        // One word: too little to detect a language from, so the declared one stems it.
        ("cats", json!({"text": "Cats", "langs": ["en-GB"]})),
        ("wide", json!({"title": "ＴＯＫＹＯ Ｄｒｉｆｔ"})),
    ]
}

async fn index_of(dir: &std::path::Path) -> Arc<Index> {
    let index = Index::open(
        dir,
        15,
        Duration::from_millis(5),
        Arc::new(Health::default()),
    )
    .unwrap();
    let ops = values()
        .into_iter()
        .enumerate()
        .map(|(i, (key, v))| {
            IndexOp::Insert(Box::new(EntryDoc {
                feed: "f".into(),
                key: key.as_bytes().to_vec(),
                seq: i as u64,
                version: i as u64 + 1,
                seen_at: i as i64,
                extracted: extract(&v),
                value: v.to_string(),
            }))
        })
        .collect();
    index.submit_and_wait(ops).await.unwrap();
    index
}

fn found(index: &Index, q: &str) -> Vec<String> {
    let page = index.search(q, &Filters::default(), None, 20).unwrap();
    page.entries.into_iter().map(|e| e.key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_find_their_entries_across_languages() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_of(dir.path()).await;
    let cases: &[(&str, &[&str])] = &[
        // Diacritics and case folded, both ways.
        ("amelie", &["amelie", "destin"]),
        ("Amélie", &["amelie", "destin"]),
        ("AMELIE", &["amelie", "destin"]),
        ("uber", &["berlin"]),
        ("über", &["berlin"]),
        ("москва", &["moscow"]),
        ("МОСКВА", &["moscow"]),
        // Stems: the entry's words in the language detected or declared.
        ("run", &["running"]),
        ("running", &["running"]),
        ("cat", &["cats"]),
        ("destin", &["destin"]),
        // CJK: any word of the text; a longer one as the phrase of its bigrams.
        ("東京", &["tokyo"]),
        ("小津", &["tokyo"]),
        ("映画", &["tokyo"]),
        ("小津安二郎", &["tokyo"]),
        ("서울", &["seoul"]),
        // A word in an Indic script stays whole.
        ("हिन्दी", &["hindi"]),
        // Full-width letters fold to ASCII.
        ("tokyo drift", &["wide"]),
    ];
    for (q, want) in cases {
        let mut got = found(&index, q);
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "q={q}");
    }
    // Nothing found where nothing matches: the folding and bigrams do not match everything.
    for q in ["amelia", "京都", "津安三", "runner's high", "berlinale"] {
        assert!(found(&index, q).is_empty(), "q={q}: {:?}", found(&index, q));
    }
}
