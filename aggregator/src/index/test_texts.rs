//! Test only: small in-RAM indexes of random texts, in several segments with a delete, for
//! the oracle tests of the query code ([`terms_and`](super::terms_and),
//! [`top_k`](super::top_k)).

#![allow(clippy::unwrap_used)]

use tantivy::schema::{Field, Schema, TEXT};
use tantivy::{doc, Index, IndexWriter, Searcher, Term};

/// A xorshift64 generator: the same numbers on every run.
pub(super) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Words `w0`, `w1`, … `w{n-1}`.
pub(super) fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i}")).collect()
}

/// A `text` field holding `per_segment` documents `body(i)` in each of `segments` commits;
/// the documents holding `deleted.1` are deleted in the commit of segment `deleted.0`.
pub(super) fn segments(
    segments: usize,
    per_segment: usize,
    deleted: (usize, &str),
    mut body: impl FnMut(usize) -> String,
) -> (Searcher, Field) {
    let mut schema = Schema::builder();
    let text = schema.add_text_field("text", TEXT);
    let index = Index::create_in_ram(schema.build());
    let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
    for seg in 0..segments {
        for i in 0..per_segment {
            writer.add_document(doc!(text => body(i))).unwrap();
        }
        if seg == deleted.0 {
            writer.delete_term(Term::from_field_text(text, deleted.1));
        }
        writer.commit().unwrap();
    }
    let searcher = index.reader().unwrap().searcher();
    assert_eq!(searcher.segment_readers().len(), segments);
    (searcher, text)
}
