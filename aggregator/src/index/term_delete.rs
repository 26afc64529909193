//! A delete by term that costs the writer ~100 bytes instead of ~1.2 KB while it waits.
//!
//! tantivy 0.22's `IndexWriter::delete_term` wraps the term in a `TermQuery` and keeps its
//! weight in the delete queue: a `TermWeight` with a BM25 weight, whose table of 256 scores
//! alone is 1 KiB. A delete stays queued until every segment has applied it, and a merge
//! holds the deletes made while it runs (it applies them to the merged segment at its end).
//! When every put of an ingest is an upsert (a feed read again after a pause or a restart),
//! a 10M-entry ingest queued ~30k deletes a second through merges of up to two minutes:
//! anonymous memory climbed by 2.2 GB, then fell back at the merge's end.
//!
//! [`TermDelete`] matches the same documents (the term's postings) and keeps only the term.

use tantivy::query::{EmptyScorer, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocId, Score, SegmentReader, TantivyError, Term};

/// The documents holding a term, to delete them.
#[derive(Clone, Debug)]
pub(super) struct TermDelete(pub Term);

impl Query for TermDelete {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(TermDeleteWeight(self.0.clone())))
    }
}

struct TermDeleteWeight(Term);

impl Weight for TermDeleteWeight {
    fn scorer(&self, reader: &SegmentReader, _boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let postings = reader
            .inverted_index(self.0.field())?
            .read_postings(&self.0, IndexRecordOption::Basic)?;
        Ok(match postings {
            Some(p) => Box::new(tantivy::query::ConstScorer::new(p, 1.0)),
            None => Box::new(EmptyScorer),
        })
    }

    fn explain(&self, _: &SegmentReader, _: DocId) -> tantivy::Result<Explanation> {
        Err(TantivyError::InvalidArgument(
            "a delete has no score to explain".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tantivy::collector::Count;
    use tantivy::query::AllQuery;
    use tantivy::schema::{Schema, STRING};
    use tantivy::{doc, Index, IndexWriter};

    use super::*;

    /// Deletes exactly the documents of the term, in committed segments and in the one being
    /// written, and only those added before the delete.
    #[test]
    fn deletes_the_documents_of_the_term_added_before_it() {
        let mut schema = Schema::builder();
        let id = schema.add_text_field("id", STRING);
        let index = Index::create_in_ram(schema.build());
        let mut w: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for i in 0..300 {
            w.add_document(doc!(id => format!("k{}", i % 100))).unwrap();
        }
        w.commit().unwrap();
        for i in 0..50 {
            w.add_document(doc!(id => format!("k{i}"))).unwrap();
        }
        for k in ["k1", "k2", "absent"] {
            w.delete_query(Box::new(TermDelete(Term::from_field_text(id, k))))
                .unwrap();
        }
        // Added after the delete: stays.
        w.add_document(doc!(id => "k1")).unwrap();
        w.commit().unwrap();
        let reader = index.reader().unwrap();
        reader.reload().unwrap();
        let s = reader.searcher();
        let count = |k: &str| {
            let q = tantivy::query::TermQuery::new(
                Term::from_field_text(id, k),
                IndexRecordOption::Basic,
            );
            s.search(&q, &Count).unwrap()
        };
        assert_eq!(count("k1"), 1);
        assert_eq!(count("k2"), 0);
        assert_eq!(count("k3"), 4);
        assert_eq!(count("k60"), 3);
        assert_eq!(s.search(&AllQuery, &Count).unwrap(), 351 - 8);
    }
}
