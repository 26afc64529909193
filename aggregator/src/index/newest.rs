//! The newest documents of a query by `sort_at`, with each segment's `sort_at` column opened
//! once, not once per query.
//!
//! Opening a fast-field column reads its header. For `sort_at` (values in ingest order, not
//! sorted) tantivy picks the blockwise-linear codec, whose header is one block description per
//! 512 documents, all decoded into a vector: ~16k of them for a segment of 8M documents. The
//! feed asked `TopDocs::order_by_fast_field`, which opens the column of every segment for every
//! search, and a page is a few searches (time windows, growing fetches): at 10M entries that
//! was a quarter of a feed page's CPU, growing with the index. Here a tantivy [`Warmer`]
//! opens the column of each new segment when a commit is loaded (on the writer's side, not a
//! reader's), and forgets it once no searcher holds that segment.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::RwLock;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{
    DocAddress, DocId, Score, Searcher, SearcherGeneration, SegmentId, SegmentOrdinal,
    SegmentReader, Warmer,
};

const FIELD: &str = "sort_at";

/// The `sort_at` column of each live segment.
#[derive(Default)]
pub(super) struct SortColumns {
    by_segment: RwLock<HashMap<SegmentId, Column<i64>>>,
}

impl SortColumns {
    /// The column of this segment: the warmed one, or opened now (a segment the warmer has
    /// not seen, e.g. if warming failed) and kept.
    fn column(&self, r: &SegmentReader) -> tantivy::Result<Column<i64>> {
        let id = r.segment_id();
        if let Some(c) = self
            .by_segment
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(c.clone());
        }
        let c = r.fast_fields().i64(FIELD)?;
        self.by_segment
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, c.clone());
        Ok(c)
    }
}

impl Warmer for SortColumns {
    fn warm(&self, searcher: &Searcher) -> tantivy::Result<()> {
        for r in searcher.segment_readers() {
            // A failure here would fail the commit's reload; the read path opens it instead.
            if let Err(e) = self.column(r) {
                tracing::warn!("opening the sort_at column of a segment: {e}");
            }
        }
        Ok(())
    }

    fn garbage_collect(&self, live: &[&SearcherGeneration]) {
        let keep: HashSet<SegmentId> = live
            .iter()
            .flat_map(|g| g.segments().keys().copied())
            .collect();
        self.by_segment
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| keep.contains(id));
    }
}

/// Collects the `limit` matches with the largest `sort_at`, newest first (documents
/// without one are left out). Among equal times, which are kept is unspecified.
pub(super) struct Newest<'a> {
    pub limit: usize,
    pub columns: &'a SortColumns,
}

impl Collector for Newest<'_> {
    type Fruit = Vec<(i64, DocAddress)>;
    type Child = SegmentNewest;

    fn for_segment(&self, ord: SegmentOrdinal, r: &SegmentReader) -> tantivy::Result<Self::Child> {
        Ok(SegmentNewest {
            ord,
            column: self.columns.column(r)?,
            limit: self.limit,
            heap: BinaryHeap::with_capacity(self.limit.min(4096) + 1),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        let mut all: Vec<(i64, DocAddress)> = fruits.into_iter().flatten().collect();
        all.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        all.truncate(self.limit);
        Ok(all)
    }
}

pub(super) struct SegmentNewest {
    ord: SegmentOrdinal,
    column: Column<i64>,
    limit: usize,
    /// The newest so far, oldest on top.
    heap: BinaryHeap<Reverse<(i64, Reverse<DocId>)>>,
}

impl SegmentCollector for SegmentNewest {
    type Fruit = Vec<(i64, DocAddress)>;

    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(t) = self.column.first(doc) else {
            return;
        };
        if self.heap.len() < self.limit {
            self.heap.push(Reverse((t, Reverse(doc))));
        } else if let Some(mut top) = self.heap.peek_mut() {
            if t > top.0 .0 {
                *top = Reverse((t, Reverse(doc)));
            }
        }
    }

    fn harvest(self) -> Self::Fruit {
        let ord = self.ord;
        self.heap
            .into_iter()
            .map(|Reverse((t, Reverse(doc)))| (t, DocAddress::new(ord, doc)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Weak};
    use std::time::{Duration, Instant};

    use tantivy::schema::{Schema, FAST, INDEXED};
    use tantivy::{doc, Index, IndexWriter, ReloadPolicy, TantivyDocument};

    use super::*;

    /// The newest across segments, as a sort of everything gives; and once segments are
    /// merged away, their columns are forgotten.
    #[test]
    fn newest_across_segments_and_merged_segments_are_forgotten() {
        let mut b = Schema::builder();
        let t = b.add_i64_field(FIELD, INDEXED | FAST);
        let index = Index::create_in_ram(b.build());
        let columns = Arc::new(SortColumns::default());
        let warmer: Arc<dyn Warmer> = columns.clone();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .warmers(vec![Arc::downgrade(&warmer) as Weak<dyn Warmer>])
            .try_into()
            .unwrap();
        let mut w: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(1, 15_000_000).unwrap();
        let mut all = Vec::new();
        for commit in 0..4i64 {
            for i in 0..50i64 {
                let v = (i * 7919 + commit * 31) % 97 - 40; // ties and negatives
                all.push(v);
                w.add_document(doc!(t => v)).unwrap();
            }
            w.commit().unwrap();
        }
        reader.reload().unwrap();
        let searcher = reader.searcher();
        assert_eq!(searcher.segment_readers().len(), 4);
        assert_eq!(
            columns.by_segment.read().unwrap().len(),
            4,
            "warmed on reload"
        );
        let got = searcher
            .search(
                &tantivy::query::AllQuery,
                &Newest {
                    limit: 30,
                    columns: &columns,
                },
            )
            .unwrap();
        all.sort_unstable_by(|a, b| b.cmp(a));
        let times: Vec<i64> = got.iter().map(|(v, _)| *v).collect();
        assert_eq!(times, all[..30]);

        let ids = index.searchable_segment_ids().unwrap();
        w.merge(&ids).wait().unwrap();
        w.wait_merging_threads().unwrap();
        drop(searcher);
        reader.reload().unwrap();
        let live: HashSet<SegmentId> = reader
            .searcher()
            .segment_readers()
            .iter()
            .map(|r| r.segment_id())
            .collect();
        assert_eq!(live.len(), 1);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let held: HashSet<SegmentId> =
                columns.by_segment.read().unwrap().keys().copied().collect();
            if held == live {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still held: {held:?}, live: {live:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
