//! Search as a new user tries it, in several languages and scripts, through the real
//! extraction, analysis and index (issue "search that works in every language").

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{EntryDoc, Filters, Index, IndexOp, Recency, SearchOptions, SearchSort};
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
        ("stalker", json!({"title": "Stalker"})),
        ("matrix", json!({"title": "The Matrix"})),
        // Says "matrox" often: a typo match must still come after the exact one.
        ("matrox", json!({"title": "Matrox matrox matrox"})),
        ("cinema", json!({"text": "Cinematography rules"})),
        ("hashtag", json!({"text": "Learning #Rust with @alice"})),
        ("plain", json!({"text": "Rust never sleeps, says alice"})),
        // The same words as others, written otherwise: no accent, another inflection.
        ("amelie-plain", json!({"title": "Amelie", "lang": "en"})),
        ("cat", json!({"text": "A cat", "lang": "en"})),
        ("cats2", json!({"text": "Cats and more cats", "lang": "en"})),
        ("creme-plain", json!({"title": "Creme brulee"})),
        ("creme", json!({"title": "Crème brûlée"})),
    ]
}

/// An empty index in `dir`, committing every 5 ms (also for the judged sets).
pub(super) fn open_index(dir: &std::path::Path) -> Arc<Index> {
    Index::open(
        dir,
        15,
        Duration::from_millis(5),
        Arc::new(Health::default()),
    )
    .unwrap()
}

async fn index_of(dir: &std::path::Path) -> Arc<Index> {
    let index = open_index(dir);
    let ops = values()
        .into_iter()
        .enumerate()
        .map(|(i, (key, v))| {
            IndexOp::Insert(Box::new(EntryDoc::new(
                "f".into(),
                key.as_bytes().to_vec(),
                i as u64,
                i as i64,
                extract(&v),
                v.to_string(),
            )))
        })
        .collect();
    index.submit_and_wait(ops).await.unwrap();
    index
}

fn found(index: &Index, q: &str) -> Vec<String> {
    search(index, q, false)
}

fn search(index: &Index, q: &str, prefix: bool) -> Vec<String> {
    let opts = SearchOptions {
        prefix,
        ..Default::default()
    };
    let page = index
        .search(q, &Filters::default(), None, 20, opts)
        .unwrap();
    page.entries.into_iter().map(|e| e.key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_find_their_entries_across_languages() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_of(dir.path()).await;
    let cases: &[(&str, &[&str])] = &[
        // Diacritics and case folded, both ways.
        ("amelie", &["amelie", "destin", "amelie-plain"]),
        ("Amélie", &["amelie", "destin", "amelie-plain"]),
        ("AMELIE", &["amelie", "destin", "amelie-plain"]),
        ("uber", &["berlin"]),
        ("über", &["berlin"]),
        ("москва", &["moscow"]),
        ("МОСКВА", &["moscow"]),
        // Stems: the entry's words in the language detected or declared.
        ("run", &["running"]),
        ("running", &["running"]),
        ("cat", &["cats", "cat", "cats2"]),
        ("destin", &["destin"]),
        // CJK: any word of the text; a longer one as the phrase of its bigrams.
        ("東京", &["tokyo"]),
        ("小津", &["tokyo"]),
        ("映画", &["tokyo"]),
        ("小津安二郎", &["tokyo"]),
        ("서울", &["seoul"]),
        // A word in an Indic script stays whole.
        ("हिन्दी", &["hindi"]),
        // Hashtags and mentions: exact with the marker, found by the word without it.
        ("#rust", &["hashtag"]),
        ("#RUST", &["hashtag"]),
        ("rust", &["hashtag", "plain"]),
        ("@alice", &["hashtag"]),
        ("alice", &["hashtag", "plain"]),
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
    for q in [
        "京都",
        "津安三",
        "runner's high",
        "berlinale",
        "stal",
        "runz",
    ] {
        assert!(found(&index, q).is_empty(), "q={q}: {:?}", found(&index, q));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typos_and_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_of(dir.path()).await;
    // One typo from 5 letters, two from 9, none below 5; typo matches after exact ones.
    assert_eq!(found(&index, "stalkr"), ["stalker"]);
    assert_eq!(found(&index, "Stalkre"), ["stalker"]);
    assert_eq!(found(&index, "cinematografy"), ["cinema"]);
    assert_eq!(found(&index, "matrix"), ["matrix", "matrox"]);
    assert_eq!(found(&index, "matrox"), ["matrox", "matrix"]);
    let mut amelia = found(&index, "amelia");
    amelia.sort();
    assert_eq!(amelia, ["amelie", "amelie-plain", "destin"]);
    assert!(
        found(&index, "stlkr").is_empty(),
        "two typos in a 5-letter word"
    );
    // Scores go down the page, typo matches included.
    let page = index
        .search(
            "matrix",
            &Filters::default(),
            None,
            20,
            SearchOptions::default(),
        )
        .unwrap();
    let scores: Vec<f32> = page.entries.iter().filter_map(|e| e.score).collect();
    assert!(scores.windows(2).all(|w| w[0] > w[1]), "{scores:?}");
    // Prefixes: asked, or a trailing `*`; the last word only.
    assert_eq!(search(&index, "stal", true), ["stalker"]);
    assert_eq!(found(&index, "stal*"), ["stalker"]);
    assert_eq!(found(&index, "the mat*"), ["matrix"]);
    let mut ame = search(&index, "Amé", true);
    ame.sort();
    assert_eq!(ame, ["amelie", "amelie-plain", "destin"]);
    assert_eq!(search(&index, "東", true), ["tokyo"]);
    assert!(search(&index, "mat the", true).is_empty());
    // Paging through exact then typo matches: each once, in the same order.
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = index
            .search(
                "matrix",
                &Filters::default(),
                cursor.as_deref(),
                1,
                Default::default(),
            )
            .unwrap();
        keys.extend(page.entries.into_iter().map(|e| e.key));
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(keys, ["matrix", "matrox"]);
}

/// The words as typed first: written with the query's accents, then the other forms of a
/// word (stems in any language), then typos.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_as_typed_rank_first() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_of(dir.path()).await;
    // "Crème brûlée" as written ranks above "Creme brulee" (equal otherwise, and first in
    // the index); typed without the accents, they tie and keep the index's order.
    assert_eq!(found(&index, "Crème brûlée"), ["creme", "creme-plain"]);
    assert_eq!(found(&index, "creme brulee"), ["creme-plain", "creme"]);
    assert_eq!(found(&index, "Amélie")[..2], ["amelie", "amelie-plain"]);
    // `cats`: the entries that say "cats" (the English entry's stem is "cat"), then the
    // one that says "cat", found by the query's stem.
    let cats = found(&index, "cats");
    assert_eq!(cats.len(), 3, "{cats:?}");
    assert_eq!(cats[2], "cat", "{cats:?}");
    // A phrase finds its words inflected otherwise.
    assert_eq!(found(&index, "\"cat rules\""), Vec::<String>::new());
    assert_eq!(found(&index, "\"runs runner\""), ["running"]);
}

/// `sort=recent`: the same matches, newest first, exact before typo matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_of(dir.path()).await;
    let recent = SearchOptions {
        sort: SearchSort::Recent,
        ..Default::default()
    };
    let keys = |q: &str, opts| -> Vec<String> {
        let page = index
            .search(q, &Filters::default(), None, 20, opts)
            .unwrap();
        assert!(page
            .entries
            .iter()
            .all(|e| e.score.is_none() == (opts.sort == SearchSort::Recent)));
        page.entries.into_iter().map(|e| e.key).collect()
    };
    // seen_at is the value's place in `values()`: "plain" came after "hashtag".
    assert_eq!(keys("rust", recent), ["plain", "hashtag"]);
    assert_eq!(keys("alice", recent), ["plain", "hashtag"]);
    // "matrox" is newer, but a typo match: it still comes after the exact one.
    assert_eq!(keys("matrix", recent), ["matrix", "matrox"]);
    assert_eq!(
        keys("matrix", SearchOptions::default()),
        ["matrix", "matrox"]
    );
}

/// `highlight`: each hit has its snippet, the matched words marked, HTML-escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_have_snippets_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_of(dir.path()).await;
    let highlight = SearchOptions {
        highlight: true,
        ..Default::default()
    };
    let snippets = |q: &str, opts| -> Vec<Option<String>> {
        let page = index
            .search(q, &Filters::default(), None, 20, opts)
            .unwrap();
        page.entries.into_iter().map(|e| e.snippet).collect()
    };
    assert_eq!(
        snippets("uber", highlight),
        [Some("Der Himmel <mark>über</mark> Berlin".to_owned())]
    );
    assert_eq!(
        snippets("映画", highlight),
        [Some(
            "東京物語は小津安二郎の<mark>映画</mark>です".to_owned()
        )]
    );
    let stalker = SearchOptions {
        prefix: true,
        ..highlight
    };
    assert_eq!(
        snippets("stal", stalker),
        [Some("<mark>Stalker</mark>".to_owned())]
    );
    assert_eq!(snippets("uber", SearchOptions::default()), [None]);
}

/// The recency boost: a fresh entry rises above an older one of equal score, and the
/// pruned search over several segments returns what scoring every match would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_entries_rise_by_recency() {
    let dir = tempfile::tempdir().unwrap();
    let index = open_index(dir.path());
    let now = apiary_core::tid::now_micros() as i64;
    const HOUR: i64 = 3_600_000_000;
    let mut next = super::test_texts::xorshift(0x2545_f491_4f6c_dd1d);
    let mut ages = std::collections::HashMap::new();
    // Three batches (segments): entries of 1 to 6 words "bread" among others, 0 to 10 days
    // old; the first two of the same text, the older first.
    for batch in 0..3u64 {
        let ops = (0..100u64)
            .map(|i| {
                let n = batch * 100 + i;
                let (age, text) = match n {
                    0 => (30 * 24 * HOUR, "fresh bread".to_owned()),
                    1 => (HOUR, "fresh bread".to_owned()),
                    _ => {
                        let breads = 1 + next() % 6;
                        let others = next() % 8;
                        let mut words = vec!["bread"; breads as usize];
                        words.extend(std::iter::repeat_n("crumb", others as usize));
                        ((next() % (240 * HOUR as u64)) as i64, words.join(" "))
                    }
                };
                let key = format!("k{n:03}");
                ages.insert(key.clone(), age);
                let v = json!({ "text": text, "lang": "en" });
                IndexOp::Insert(Box::new(EntryDoc::new(
                    "f".into(),
                    key.into_bytes(),
                    n,
                    now - age,
                    extract(&v),
                    v.to_string(),
                )))
            })
            .collect();
        index.submit_and_wait(ops).await.unwrap();
    }
    let recency = Recency {
        weight: 0.5,
        half_life_us: 24.0 * HOUR as f64,
    };
    // The first `limit` hits, a page of at most 100 at a time.
    let keys = |q: &str, recency: Option<Recency>, limit: usize| -> Vec<(String, f32)> {
        let opts = SearchOptions {
            recency,
            ..Default::default()
        };
        let mut hits = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = index
                .search(q, &Filters::default(), cursor.as_deref(), 100, opts)
                .unwrap();
            hits.extend(page.entries.into_iter().map(|e| (e.key, e.score.unwrap())));
            match page.cursor {
                Some(c) if hits.len() < limit => cursor = Some(c),
                _ => break,
            }
        }
        hits.truncate(limit);
        hits
    };
    let order =
        |hits: Vec<(String, f32)>| -> Vec<String> { hits.into_iter().map(|h| h.0).collect() };
    assert_eq!(order(keys("fresh", None, 10)), ["k000", "k001"]);
    assert_eq!(order(keys("fresh", Some(recency), 10)), ["k001", "k000"]);
    // Every match scored, boosted by hand, against the pruned search's first 20.
    let all = keys("bread", None, 500);
    assert_eq!(all.len(), 300);
    let mut boosted: Vec<(String, f32)> = all
        .into_iter()
        .map(|(k, s)| {
            let age = ages[&k] as f64;
            let f = 1.0 + 0.5 * (-age / recency.half_life_us).exp2() as f32;
            (k, s * f)
        })
        .collect();
    boosted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let got = keys("bread", Some(recency), 20);
    for ((gk, gs), (wk, ws)) in got.iter().zip(&boosted) {
        assert!((gs - ws).abs() <= ws * 1e-4, "{gk} {gs} vs {wk} {ws}");
    }
    assert_eq!(got.len(), 20);
}

/// Paging by relevance with recency on: entries of one text posted a millisecond apart (in
/// index order oldest first, so ties broken by address go against their age)
/// have boosts closer than a float tells apart, so their order rests on rounding at the
/// clock of the search. Each page weighs recency with the first page's clock (it rides in
/// the cursor), so paging shows every entry once, however long between pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relevance_pages_with_recency_show_each_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let index = open_index(dir.path());
    let now = apiary_core::tid::now_micros() as i64;
    const N: u64 = 300;
    let ops = (0..N)
        .map(|n| {
            let v = json!({ "text": "same old story", "lang": "en" });
            IndexOp::Insert(Box::new(EntryDoc::new(
                "f".into(),
                format!("k{n:03}").into_bytes(),
                n,
                now - 60_000_000 + n as i64 * 1_000,
                extract(&v),
                v.to_string(),
            )))
        })
        .collect();
    index.submit_and_wait(ops).await.unwrap();
    let opts = SearchOptions {
        recency: Some(Recency {
            weight: 0.5,
            half_life_us: 24.0 * 3_600_000_000.0,
        }),
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = index
            .search("story", &Filters::default(), cursor.as_deref(), 7, opts)
            .unwrap();
        pages += 1;
        for e in page.entries {
            assert!(seen.insert(e.key.clone()), "{} twice, page {pages}", e.key);
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        // Let the clock move between pages, as it does between a reader's clicks.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(seen.len(), N as usize);
}

/// A commit between two pages of a search does not shift them: the next pages read the
/// generation the first one read, so new hits ranked above change nothing of this paging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_between_pages_does_not_shift_them() {
    let dir = tempfile::tempdir().unwrap();
    let index = open_index(dir.path());
    let doc = |n: u64, text: &str| {
        let v = json!({ "text": text, "lang": "en" });
        IndexOp::Insert(Box::new(EntryDoc::new(
            "f".into(),
            format!("k{n:03}").into_bytes(),
            n,
            1_000_000 + n as i64,
            extract(&v),
            v.to_string(),
        )))
    };
    let first: Vec<IndexOp> = (0..30).map(|n| doc(n, "an apple a day")).collect();
    index.submit_and_wait(first).await.unwrap();
    let page = |cursor: Option<&str>| {
        index
            .search(
                "apple",
                &Filters::default(),
                cursor,
                10,
                SearchOptions::default(),
            )
            .unwrap()
    };
    let p1 = page(None);
    let mut seen: Vec<String> = p1.entries.iter().map(|e| e.key.clone()).collect();
    // Better matches than all of the first thirty, committed before page 2.
    let better: Vec<IndexOp> = (100..105).map(|n| doc(n, "apple apple apple")).collect();
    index.submit_and_wait(better).await.unwrap();
    let lead = page(None).entries[0].key.clone();
    assert!(
        lead.as_str() >= "k100",
        "the new ones lead a new search: {lead}"
    );
    let mut cursor = p1.cursor;
    while let Some(c) = cursor {
        let p = page(Some(&c));
        seen.extend(p.entries.iter().map(|e| e.key.clone()));
        cursor = p.cursor;
    }
    let mut want: Vec<String> = (0..30).map(|n| format!("k{n:03}")).collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
}
