//! The feed's order, newest first: `sort_at` descending, then [`tiebreak`] ascending, then the
//! id; and the newest documents of a query in that order, read from two fast-field columns
//! opened once per segment.
//!
//! Opening a fast-field column reads its header. For `sort_at` (values in ingest order, not
//! sorted) tantivy picks the blockwise-linear codec, whose header is one block description per
//! 512 documents, all decoded into a vector: ~16k of them for a segment of 8M documents. The
//! feed asked `TopDocs::order_by_fast_field`, which opens the column of every segment for every
//! search, and a page is a few searches (time windows, growing fetches): at 10M entries that
//! was a quarter of a feed page's CPU, growing with the index. Here a tantivy [`Warmer`]
//! opens the columns of each new segment when a commit is loaded (on the writer's side, not a
//! reader's), and forgets them once no searcher holds that segment.
//!
//! Why a tiebreak: entries often share a `sort_at` (a batch of posts stamped the same
//! `createdAt`, or many bees posting on one clock). Ordering ties by id needs each tied row's
//! id, and that came from its stored document: a docstore block decompressed per row (half a
//! feed page's CPU at 10M entries, where each time is shared by 100 rows). The tiebreak is a
//! fast field, so only the rows of the page are read. It is a hash of the id, not the id
//! itself, to stay 8 bytes; two ids with equal `(sort_at, tiebreak)` are ordered by id (their
//! documents are read), and a BLAKE2b tiebreak leaves authors no cheap way to make many.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::RwLock;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{
    DocAddress, DocId, Score, Searcher, SearcherGeneration, SegmentId, SegmentOrdinal,
    SegmentReader, Warmer,
};

/// The tiebreak of an entry id: the first 8 bytes of a BLAKE2b-256 of it, big-endian. Stored
/// in the index: changing it needs a [`SCHEMA_VERSION`](super::SCHEMA_VERSION) bump.
pub fn tiebreak(id: &str) -> u64 {
    let h = apiary_core::crypto::hash(&[b"apiary feed tiebreak\0", id.as_bytes()]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    let t = u64::from_be_bytes(b);
    // Unit tests keep 2 bits, so that equal keys (a collision: 1 in 2^64 in use) are common
    // enough for the feed oracle (`feed_tests`) to page through them.
    if cfg!(test) {
        t >> 62
    } else {
        t
    }
}

/// The place of a row in the feed: greater comes first (newer, then smaller tiebreak).
pub(super) type Key = (i64, Reverse<u64>);

/// The key of a row: `sort_at` and [`tiebreak`].
pub(super) fn key(sort_at: i64, tiebreak: u64) -> Key {
    (sort_at, Reverse(tiebreak))
}

/// One segment's columns of the feed's order.
#[derive(Clone)]
struct OrderColumns {
    sort_at: Column<i64>,
    tiebreak: Column<u64>,
}

/// The order columns of each live segment.
#[derive(Default)]
pub(super) struct SortColumns {
    by_segment: RwLock<HashMap<SegmentId, OrderColumns>>,
}

impl SortColumns {
    /// The columns of this segment: the warmed ones, or opened now (a segment the warmer has
    /// not seen, e.g. if warming failed) and kept.
    fn column(&self, r: &SegmentReader) -> tantivy::Result<OrderColumns> {
        let id = r.segment_id();
        if let Some(c) = self
            .by_segment
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(c.clone());
        }
        let c = OrderColumns {
            sort_at: r.fast_fields().i64("sort_at")?,
            tiebreak: r.fast_fields().u64("tiebreak")?,
        };
        self.by_segment
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, c.clone());
        Ok(c)
    }
}

impl SortColumns {
    /// The sortAt column of this segment.
    pub(super) fn sort_at(&self, r: &SegmentReader) -> tantivy::Result<Column<i64>> {
        Ok(self.column(r)?.sort_at)
    }
}

impl Warmer for SortColumns {
    fn warm(&self, searcher: &Searcher) -> tantivy::Result<()> {
        for r in searcher.segment_readers() {
            // A failure here would fail the commit's reload; the read path opens it instead.
            if let Err(e) = self.column(r) {
                tracing::warn!("opening the feed order columns of a segment: {e}");
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

/// Collects the first `limit` matches in the feed's order, with their keys (documents without
/// a `sort_at` are left out). Among equal keys, which are kept is unspecified.
pub(super) struct Newest<'a> {
    pub limit: usize,
    pub columns: &'a SortColumns,
}

impl Collector for Newest<'_> {
    type Fruit = Vec<(Key, DocAddress)>;
    type Child = SegmentNewest;

    fn for_segment(&self, ord: SegmentOrdinal, r: &SegmentReader) -> tantivy::Result<Self::Child> {
        Ok(SegmentNewest {
            ord,
            columns: self.columns.column(r)?,
            limit: self.limit,
            heap: BinaryHeap::with_capacity(self.limit.min(4096) + 1),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        let mut all: Vec<(Key, DocAddress)> = fruits.into_iter().flatten().collect();
        all.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        all.truncate(self.limit);
        Ok(all)
    }
}

pub(super) struct SegmentNewest {
    ord: SegmentOrdinal,
    columns: OrderColumns,
    limit: usize,
    /// The first so far, the last of them on top.
    heap: BinaryHeap<Reverse<(Key, Reverse<DocId>)>>,
}

impl SegmentCollector for SegmentNewest {
    type Fruit = Vec<(Key, DocAddress)>;

    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(t) = self.columns.sort_at.first(doc) else {
            return;
        };
        // Most matches of a window are older than the page: those need no tiebreak read.
        if self.heap.len() >= self.limit && self.heap.peek().is_some_and(|top| t < top.0 .0 .0) {
            return;
        }
        let t = key(t, self.columns.tiebreak.first(doc).unwrap_or(0));
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
        let t = b.add_i64_field("sort_at", INDEXED | FAST);
        let tb = b.add_u64_field("tiebreak", FAST);
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
                all.push(key(v, (i % 3) as u64));
                w.add_document(doc!(t => v, tb => (i % 3) as u64)).unwrap();
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
        let times: Vec<Key> = got.iter().map(|(k, _)| *k).collect();
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
