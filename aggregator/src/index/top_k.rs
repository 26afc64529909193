//! The k best-scored documents of a query, with one threshold across all segments.
//!
//! tantivy 0.22's `TopDocs` collects each segment on its own: every segment's pruned search
//! (block-max WAND, [`TermsAnd`](super::terms_and::TermsAnd)) starts from no threshold and
//! scores its way up to its own k-th best before it can skip anything. A 10M-entry index
//! has a dozen or more segments, so most of a search's scoring went into segments' first
//! candidates that a single shared threshold would have skipped. Here the segments are
//! searched one after the other and each starts from the k-th best score found so far.
//!
//! The result is the one `TopDocs` gives: best score first, ties by document address. A
//! later segment's document that only ties the k-th score is skipped, and in `TopDocs`'
//! order it comes after the earlier one it ties with.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use tantivy::query::{EnableScoring, Query};
use tantivy::{DocAddress, DocId, Score, Searcher};

use super::newest::SortColumns;

/// A hit in the order of the result: greater is better (higher score, then lower address).
#[derive(Clone, Copy, PartialEq)]
struct Hit {
    score: Score,
    addr: Reverse<DocAddress>,
}

impl Eq for Hit {}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| self.addr.cmp(&other.addr))
    }
}

/// A boost of fresh entries: a score is multiplied by `1 + weight × 2^(−age / half_life)`,
/// the age being `now` less the entry's sortAt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recency {
    /// What a post of this instant adds (0.5: its score × 1.5).
    pub weight: f32,
    /// After this many microseconds the boost is half.
    pub half_life_us: f64,
}

impl Recency {
    /// The factor of an entry of sortAt `t` at `now` (µs).
    fn factor(&self, now: i64, t: i64) -> f32 {
        let age = now.saturating_sub(t).max(0) as f64;
        1.0 + self.weight * (-age / self.half_life_us).exp2() as f32
    }
}

/// Recency with the clock and the sortAt columns it reads.
pub(super) struct Fresh<'a> {
    pub recency: Recency,
    pub now: i64,
    pub columns: &'a SortColumns,
}

/// The best `k` documents of `query`, best first, as `(score, address)`; scores multiplied
/// by their recency factor when `fresh` is given. The pruned
/// search compares raw scores: its threshold is the k-th boosted score divided by the
/// segment's largest factor (that of its newest entry), so no document that could make the
/// top is skipped.
pub(super) fn top_k(
    searcher: &Searcher,
    query: &dyn Query,
    k: usize,
    fresh: Option<&Fresh<'_>>,
) -> tantivy::Result<Vec<(Score, DocAddress)>> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let weight = query.weight(EnableScoring::enabled_from_searcher(searcher))?;
    // The k best so far, the worst of them on top.
    let mut heap: BinaryHeap<Reverse<Hit>> = BinaryHeap::with_capacity(k + 1);
    for (ord, reader) in searcher.segment_readers().iter().enumerate() {
        let segment_ord = u32::try_from(ord).unwrap_or(u32::MAX);
        let alive = reader.alive_bitset();
        let floor = |heap: &BinaryHeap<Reverse<Hit>>| match heap.peek() {
            Some(worst) if heap.len() >= k => worst.0.score,
            _ => Score::MIN,
        };
        let column = fresh.map(|f| f.columns.sort_at(reader)).transpose()?;
        // The largest factor of this segment, to bring the threshold back to raw scores.
        let most = match (fresh, &column) {
            (Some(f), Some(c)) => f.recency.factor(f.now, c.max_value()).max(1.0),
            _ => 1.0,
        };
        let mut threshold = floor(&heap) / most;
        weight.for_each_pruning(threshold, reader, &mut |doc: DocId, score: Score| {
            if alive.is_some_and(|a| a.is_deleted(doc)) {
                return threshold;
            }
            let score = match (fresh, &column) {
                (Some(f), Some(c)) => {
                    score * f.recency.factor(f.now, c.first(doc).unwrap_or(i64::MIN))
                }
                _ => score,
            };
            let hit = Hit {
                score,
                addr: Reverse(DocAddress::new(segment_ord, doc)),
            };
            if heap.len() < k {
                heap.push(Reverse(hit));
            } else if let Some(mut worst) = heap.peek_mut() {
                if hit > worst.0 {
                    *worst = Reverse(hit);
                }
            }
            threshold = floor(&heap) / most;
            threshold
        })?;
    }
    let mut hits: Vec<Hit> = heap.into_iter().map(|Reverse(h)| h).collect();
    hits.sort_unstable_by(|a, b| b.cmp(a));
    Ok(hits.into_iter().map(|h| (h.score, h.addr.0)).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tantivy::collector::TopDocs;
    use tantivy::query::{BooleanQuery, Occur, TermQuery};
    use tantivy::schema::IndexRecordOption;
    use tantivy::Term;

    use super::super::terms_and::TermsAnd;
    use super::super::test_texts::{segments, words, xorshift};
    use super::*;

    /// Over several segments with deletes, single words, unions and conjunctions (ours and
    /// tantivy's) give the hits `TopDocs` gives, at several k, ties included.
    #[test]
    fn equals_top_docs_across_segments() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let words = words(30);
        let (searcher, text) = segments(5, 3000, (2, "w29"), |i| {
            // Some documents are copies, so that scores tie.
            let copy = i % 7 == 0;
            let len = if copy { 4 } else { 2 + next() % 25 };
            let body: Vec<&str> = (0..len)
                .map(|j| {
                    let r = if copy { j * 3 } else { next() % 1000 };
                    words[((r * r) / 30_000) as usize % words.len()].as_str()
                })
                .collect();
            body.join(" ")
        });
        let tq = |w: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(text, w),
                IndexRecordOption::WithFreqs,
            ))
        };
        let all = |occur: Occur, ws: &[&str]| -> BooleanQuery {
            BooleanQuery::new(ws.iter().map(|w| (occur, tq(w))).collect())
        };
        let and = all(Occur::Must, &["w0", "w3"]);
        let queries: Vec<Box<dyn Query>> = vec![
            tq("w0"),
            tq("w9"),
            Box::new(all(Occur::Should, &["w1", "w7"])),
            Box::new(and.clone()),
            Box::new(TermsAnd::of(&and).unwrap()),
            Box::new(TermsAnd::of(&all(Occur::Must, &["w0", "w1", "w2"])).unwrap()),
        ];
        let mut checked = 0;
        for q in &queries {
            for k in [1, 10, 21, 40, 500] {
                let want = searcher
                    .search(q.as_ref(), &TopDocs::with_limit(k))
                    .unwrap();
                let got = top_k(&searcher, q.as_ref(), k, None).unwrap();
                assert_eq!(got, want, "{q:?} k={k}");
                checked += got.len();
            }
        }
        assert!(checked > 2000, "the queries match something: {checked}");
        assert!(top_k(&searcher, queries[0].as_ref(), 0, None)
            .unwrap()
            .is_empty());
    }
}
