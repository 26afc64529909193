//! A conjunction of words that skips the blocks of postings which cannot make the top
//! (block-max AND).
//!
//! tantivy 0.22 prunes top-k searches with block-max WAND only for a single term and for
//! unions of terms. An intersection (`a AND b`, what a search box with two words asks here)
//! is scored document by document: every document holding both words is scored, so the cost
//! of two common words grows with the data. At 10M entries the two-word searches of the
//! reference set were the slowest ones (profile: 42% in postings seeks, 16% in scoring).
//!
//! [`TermsAnd`] matches and scores exactly as the `BooleanQuery` of `Must` term clauses it
//! replaces (same documents, same BM25 sum in the same order). Only the top-k path
//! ([`Weight::for_each_pruning`], used by `TopDocs`) differs: postings are read in windows
//! that end where the first of the terms' current blocks ends; when the sum of the terms'
//! block-max scores over a window cannot beat the current k-th score, the whole window is
//! skipped without reading its documents one by one. The block-max scores are tantivy's
//! (the same bounds its own block-max WAND trusts).

use tantivy::fieldnorm::FieldNormReader;
use tantivy::postings::BlockSegmentPostings;
use tantivy::query::{
    Bm25Weight, BooleanQuery, EnableScoring, Explanation, Occur, Query, TermQuery, Weight,
};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocId, Score, SegmentReader, Term, TERMINATED};

/// All of these terms (two or more, of one field, as the query parser makes them).
#[derive(Clone, Debug)]
pub struct TermsAnd {
    terms: Vec<TermQuery>,
    /// tantivy's own conjunction of the same terms: matching, counting, explaining.
    plain: BooleanQuery,
}

impl TermsAnd {
    /// The conjunction, when `q` is one of two or more words and nothing else (the
    /// `BooleanQuery` of `Must` term clauses the query parser makes of `a b`).
    pub fn of(q: &dyn Query) -> Option<Self> {
        let b = q.downcast_ref::<BooleanQuery>()?;
        let terms = b
            .clauses()
            .iter()
            .map(|(occur, q)| match occur {
                Occur::Must => q.downcast_ref::<TermQuery>().cloned(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        (terms.len() >= 2).then(|| Self {
            terms,
            plain: b.clone(),
        })
    }
}

impl Query for TermsAnd {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let plain = self.plain.weight(enable_scoring)?;
        // The BM25 weight of each term as its TermQuery computes it, so scores are equal.
        let bm25 = match enable_scoring {
            EnableScoring::Enabled {
                statistics_provider,
                ..
            } => Some(
                self.terms
                    .iter()
                    .map(|t| {
                        let w = Bm25Weight::for_terms(statistics_provider, &[t.term().clone()])?;
                        Ok((t.term().clone(), w))
                    })
                    .collect::<tantivy::Result<Vec<_>>>()?,
            ),
            EnableScoring::Disabled { .. } => None,
        };
        Ok(Box::new(TermsAndWeight { plain, bm25 }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        for t in &self.terms {
            t.query_terms(visitor);
        }
    }
}

struct TermsAndWeight {
    /// Everything but the top-k path: matching, counting, explaining.
    plain: Box<dyn Weight>,
    /// Each term with its BM25 weight, when scoring.
    bm25: Option<Vec<(Term, Bm25Weight)>>,
}

impl Weight for TermsAndWeight {
    fn scorer(
        &self,
        reader: &SegmentReader,
        boost: Score,
    ) -> tantivy::Result<Box<dyn tantivy::query::Scorer>> {
        self.plain.scorer(reader, boost)
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.plain.explain(reader, doc)
    }

    fn count(&self, reader: &SegmentReader) -> tantivy::Result<u32> {
        self.plain.count(reader)
    }

    fn for_each_pruning(
        &self,
        threshold: Score,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(DocId, Score) -> Score,
    ) -> tantivy::Result<()> {
        let Some(bm25) = &self.bm25 else {
            return self.plain.for_each_pruning(threshold, reader, callback);
        };
        let mut cursors = Vec::with_capacity(bm25.len());
        for (term, weight) in bm25 {
            let field = term.field();
            let with_freqs = reader
                .schema()
                .get_field_entry(field)
                .field_type()
                .get_index_record_option()
                .is_some_and(IndexRecordOption::has_freq);
            if !with_freqs {
                // No block maxima without term frequencies: tantivy's own way.
                return self.plain.for_each_pruning(threshold, reader, callback);
            }
            let Some(postings) = reader
                .inverted_index(field)?
                .read_block_postings(term, IndexRecordOption::WithFreqs)?
            else {
                return Ok(()); // a term this segment lacks: nothing matches
            };
            let fieldnorms = reader
                .fieldnorms_readers()
                .get_field(field)?
                .unwrap_or_else(|| FieldNormReader::constant(reader.max_doc(), 1));
            cursors.push(Cursor::new(postings, fieldnorms, weight.clone()));
        }
        block_max_and(cursors, threshold, callback);
        Ok(())
    }
}

/// One term's postings, a block at a time.
struct Cursor {
    postings: BlockSegmentPostings,
    /// The place of `doc` in the loaded block.
    at: usize,
    /// The current document, or `TERMINATED`.
    doc: DocId,
    fieldnorms: FieldNormReader,
    bm25: Bm25Weight,
}

impl Cursor {
    fn new(postings: BlockSegmentPostings, fieldnorms: FieldNormReader, bm25: Bm25Weight) -> Self {
        let doc = postings.docs().first().copied().unwrap_or(TERMINATED);
        Cursor {
            postings,
            at: 0,
            doc,
            fieldnorms,
            bm25,
        }
    }

    /// Moves to the first document at or after `target`; `TERMINATED` past the end. Sets
    /// `moved` when another block was loaded.
    fn seek(&mut self, target: DocId, moved: &mut bool) -> DocId {
        if self.doc >= target {
            return self.doc;
        }
        if self
            .postings
            .docs()
            .last()
            .is_none_or(|&last| last < target)
        {
            // The block that may hold `target` (the skip list); past the end, an empty or
            // last block whose documents are all smaller.
            self.postings.seek(target);
            self.at = 0;
            *moved = true;
        }
        let docs = self.postings.docs();
        let rest = docs.get(self.at..).unwrap_or(&[]);
        // Mostly the next document or one a few steps on: look there before bisecting.
        self.at += match rest.iter().take(4).position(|&d| d >= target) {
            Some(i) => i,
            None => rest.partition_point(|&d| d < target),
        };
        self.doc = docs.get(self.at).copied().unwrap_or(TERMINATED);
        self.doc
    }

    /// The last document of the loaded block: the cursor's postings up to there are in it.
    fn block_end(&self) -> DocId {
        self.postings.docs().last().copied().unwrap_or(TERMINATED)
    }

    /// No document of the loaded block scores more (tantivy's block-max score).
    fn block_max(&mut self) -> Score {
        self.postings.block_max_score(&self.fieldnorms, &self.bm25)
    }

    fn score(&self) -> Score {
        let tf = self.postings.freqs().get(self.at).copied().unwrap_or(1);
        self.bm25.score(self.fieldnorms.fieldnorm_id(self.doc), tf)
    }

    fn doc_freq(&self) -> u32 {
        self.postings.doc_freq()
    }
}

/// Where the terms' loaded blocks overlap, and what no document there can score more than.
#[derive(Clone, Copy)]
struct Window {
    /// The first end of the terms' loaded blocks.
    upto: DocId,
    /// The sum of the terms' block maxima.
    bound: Score,
    /// The same without the lead's.
    others: Score,
}

/// A per-document bound is summed in another order than the score it bounds: it only prunes
/// when it is below the threshold by more than rounding could make up.
const SLACK: Score = 1.0 - 1e-5;

/// Calls `callback` with every document all `terms` hold whose score beats the threshold
/// (which the callback returns anew), skipping windows whose block-max bound does not.
fn block_max_and(
    mut terms: Vec<Cursor>,
    mut threshold: Score,
    callback: &mut dyn FnMut(DocId, Score) -> Score,
) {
    // Rarest first, as tantivy's intersection orders them, and sums their scores the same
    // way (the first two, plus the sum of the others) so that scores are equal to the bit.
    terms.sort_by_key(Cursor::doc_freq);
    let Some(lead) = terms.first() else {
        return;
    };
    let mut doc = lead.doc;
    // The current window: up to the first end of the terms' loaded blocks, the sum of their
    // block maxima, and that sum without the lead's; kept until a term loads another block
    // or `doc` passes its end.
    let mut window: Option<Window> = None;
    while doc != TERMINATED {
        // Inside a window that may beat the threshold, the lead alone first: its own score
        // plus the others' block maxima bounds the document. Most of the lead's documents
        // fail that, and then the others are neither moved nor scored.
        if let (Some(w), Some(lead)) = (window, terms.first_mut()) {
            if doc <= w.upto {
                let mut moved = false;
                let d = lead.seek(doc, &mut moved);
                if d == TERMINATED {
                    return;
                }
                if moved {
                    window = None; // the lead is in another block: a new window
                } else if d <= w.upto && lead.score() + w.others <= threshold * SLACK {
                    doc = d + 1;
                    continue;
                }
                doc = d;
            }
        }
        // Every term at its first document at or after `doc`.
        let mut candidate = doc;
        let mut moved = false;
        for t in terms.iter_mut() {
            let d = t.seek(doc, &mut moved);
            if d == TERMINATED {
                return;
            }
            candidate = candidate.max(d);
        }
        // Each term's postings from `doc` to the end of its loaded block are in that block,
        // so no document up to the first block end scores more than the sum of block maxima.
        let w = match window {
            Some(w) if !moved && doc <= w.upto => w,
            _ => {
                let mut w = Window {
                    upto: TERMINATED,
                    bound: 0.0,
                    others: 0.0,
                };
                for (i, t) in terms.iter_mut().enumerate() {
                    w.upto = w.upto.min(t.block_end());
                    let max = t.block_max();
                    w.bound += max;
                    if i > 0 {
                        w.others += max;
                    }
                }
                window = Some(w);
                w
            }
        };
        if w.bound <= threshold {
            if w.upto >= TERMINATED - 1 {
                return;
            }
            doc = w.upto + 1;
            continue;
        }
        if candidate > doc {
            doc = candidate;
            continue;
        }
        let mut scores = terms.iter().map(Cursor::score);
        let first_two = scores.next().unwrap_or(0.0) + scores.next().unwrap_or(0.0);
        let score = first_two + scores.sum::<Score>();
        if score > threshold {
            threshold = callback(doc, score);
        }
        doc += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tantivy::collector::TopDocs;
    use tantivy::query::{BooleanQuery, Occur};
    use tantivy::schema::IndexRecordOption;

    use super::super::test_texts::{segments, words, xorshift};
    use super::*;

    /// On random texts over a small Zipf-like vocabulary, in several segments with deletes,
    /// the top k of `TermsAnd` equals the top k of tantivy's own conjunction, for pairs and
    /// triples of common and rare words, at several k and offsets.
    #[test]
    fn top_k_equals_the_plain_conjunction() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let words = words(40);
        let (searcher, text) = segments(3, 6000, (1, "w39"), |_| {
            let len = 3 + next() % 30;
            let body: Vec<&str> = (0..len)
                .map(|_| {
                    // Skewed: small word numbers are common.
                    let r = next() % 1000;
                    words[((r * r) / 25_000) as usize % words.len()].as_str()
                })
                .collect();
            body.join(" ")
        });
        let tq =
            |w: &str| TermQuery::new(Term::from_field_text(text, w), IndexRecordOption::WithFreqs);
        let mut checked = 0;
        for q in [
            &["w0", "w1"][..],
            &["w0", "w2", "w3"],
            &["w1", "w20"],
            &["w30", "w0"],
            &["w5", "w6"],
            &["w0", "w38"],
        ] {
            let plain = BooleanQuery::new(
                q.iter()
                    .map(|w| (Occur::Must, Box::new(tq(w)) as Box<dyn Query>))
                    .collect(),
            );
            let ours = TermsAnd::of(&plain).unwrap();
            for (k, offset) in [(1, 0), (10, 0), (21, 0), (21, 20), (200, 0)] {
                let top = TopDocs::with_limit(k).and_offset(offset);
                let want = searcher.search(&plain, &top).unwrap();
                let got = searcher.search(&ours, &top).unwrap();
                assert_eq!(got, want, "{q:?} k={k} offset={offset}");
                checked += want.len();
            }
            let count = tantivy::collector::Count;
            assert_eq!(
                searcher.search(&ours, &count).unwrap(),
                searcher.search(&plain, &count).unwrap()
            );
        }
        assert!(checked > 500, "the queries match something: {checked}");
    }
}
