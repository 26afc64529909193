//! The search index (tantivy): one writer task, checkpoints committed with the documents.
//!
//! Documents (`kind` tells them apart):
//! - `entry`: one per (feed, key): `id = feed/hex(key)`, feed, key, seq, version, seenAt,
//!   sortAt, type, tags, text (BM25), the value as stored JSON, and the time buckets of
//!   sortAt ([`time_buckets`]: the feed's windows as terms);
//! - `cp`: one per feed, `id = cp:feed`: the feed's ingest checkpoint `(version, fork)` in the
//!   `seq` and `version` fields.
//!
//! A checkpoint travels in the same commit as the entries it covers, so after a crash the
//! index and the checkpoints agree: nothing is lost, and re-ingesting from the checkpoint
//! upserts by id, so nothing is duplicated. The commit payload holds `{"schema": N}`; another
//! schema version wipes the index, which is then rebuilt from the blocks in the store.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde_json::{json, Value};
use tantivy::collector::DocSetCollector;
use tantivy::query::TermQuery;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value as _, FAST, INDEXED,
    STORED, STRING,
};
use tantivy::{Index as TIndex, IndexReader, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::api::Entry;
use crate::error::{Error, Result};
use crate::extract;
use crate::health::Health;

mod analyzer;
pub mod events;
#[cfg(test)]
mod feed_tests;
mod highlight;
#[cfg(test)]
mod judged_tests;
mod newest;
mod pinned;
mod prepare;
mod query;
mod search;
#[cfg(test)]
mod search_tests;
mod snapshot;
mod stem;
mod stored;
mod term_delete;
mod terms_and;
#[cfg(test)]
mod test_texts;
mod time_buckets;
mod tolerant;
mod top_k;
mod writer;
pub use query::entry_id;
pub use search::{SearchOptions, SearchSort};
pub use top_k::Recency;
use writer::WriterTask;

/// Bump to rebuild every index from the stored blocks. 4: checkpoint documents carry a
/// sortAt and a tiebreak (full columns, see the writer), and stored documents are in
/// [`DOCSTORE_BLOCK`] blocks. 5: text is folded, CJK bigrams and stems ([`analyzer`]).
/// 6: words as written, Han/Hangul unigrams, Hindi stems, ё. 7: no stems of words of one or
/// two letters, the language detected from 128 characters.
pub const SCHEMA_VERSION: u64 = 7;
/// Largest page of results.
pub const MAX_LIMIT: usize = 100;

#[derive(Clone, Copy)]
struct Fields {
    kind: Field,
    id: Field,
    feed: Field,
    key: Field,
    seq: Field,
    version: Field,
    seen_at: Field,
    sort_at: Field,
    typ: Field,
    tag: Field,
    text: Field,
    value: Field,
    /// The [`time_buckets`] of sortAt.
    time: Field,
    /// The feed's order among equal sortAt ([`newest::tiebreak`] of the id).
    tiebreak: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        kind: b.add_text_field("kind", STRING),
        id: b.add_text_field("id", STRING | STORED),
        feed: b.add_text_field("feed", STRING | STORED),
        key: b.add_text_field("key", STORED),
        seq: b.add_u64_field("seq", STORED),
        version: b.add_u64_field("version", STORED),
        seen_at: b.add_i64_field("seen_at", STORED),
        sort_at: b.add_i64_field("sort_at", INDEXED | STORED | FAST),
        typ: b.add_text_field("type", STRING | STORED),
        tag: b.add_text_field("tag", STRING | STORED),
        text: b.add_text_field(
            "text",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(analyzer::TOKENIZER)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        ),
        value: b.add_text_field("value", STORED),
        time: b.add_u64_field("time_bucket", INDEXED),
        tiebreak: b.add_u64_field("tiebreak", FAST),
    };
    (b.build(), f)
}

/// An entry to index.
#[derive(Debug, Clone)]
pub struct EntryDoc {
    /// Feed key, z-base-32.
    pub feed: String,
    /// Entry key bytes.
    pub key: Vec<u8>,
    /// Block that wrote it.
    pub seq: u64,
    /// Bee version that first contained it (seq + 1).
    pub version: u64,
    /// When we saw it (µs).
    pub seen_at: i64,
    /// Extracted fields.
    pub extracted: extract::Extracted,
    /// The value as JSON text.
    pub value: String,
    /// The extracted text's terms, analyzed (see [`EntryDoc::new`]).
    pub analyzed: String,
}

impl EntryDoc {
    /// An entry, its text analyzed here: in the caller's task (each feed's ingest task), so
    /// that feeds analyze in parallel before the single index writer.
    pub fn new(
        feed: String,
        key: Vec<u8>,
        seq: u64,
        seen_at: i64,
        extracted: extract::Extracted,
        value: String,
    ) -> EntryDoc {
        let analyzed = analyzer::analyzed_text(&extracted.text, extracted.lang.as_deref());
        EntryDoc {
            feed,
            key,
            seq,
            version: seq + 1,
            seen_at,
            extracted,
            value,
            analyzed,
        }
    }

    /// An entry to be published to the cluster's entry log, not indexed here: no text
    /// extracted or analyzed (the indexers do that).
    pub fn unanalyzed(feed: String, key: Vec<u8>, seq: u64, seen_at: i64, value: String) -> Self {
        EntryDoc {
            feed,
            key,
            seq,
            version: seq + 1,
            seen_at,
            extracted: Default::default(),
            value,
            analyzed: String::new(),
        }
    }
}

/// One change to the index.
#[derive(Debug, Clone)]
pub enum IndexOp {
    /// Insert or replace the entry of (feed, key).
    Upsert(Box<EntryDoc>),
    /// Insert the entry of (feed, key), which the caller knows is not indexed (a feed's
    /// first pass): saves the delete, which tantivy pays for at every commit.
    Insert(Box<EntryDoc>),
    /// Remove the entry of (feed, key).
    Delete {
        /// Feed z32.
        feed: String,
        /// Key bytes.
        key: Vec<u8>,
    },
    /// The feed is ingested up to `version` at `fork`.
    Checkpoint {
        /// Feed z32.
        feed: String,
        /// Blocks processed.
        version: u64,
        /// Fork they belong to.
        fork: u64,
    },
    /// Remove everything of a feed (entries and checkpoint).
    Purge {
        /// Feed z32.
        feed: String,
    },
}

struct Batch {
    ops: Vec<IndexOp>,
    done: Option<oneshot::Sender<()>>,
    /// Someone waits for these ops: commit them after the short interval.
    caught_up: bool,
    /// The [`Health::epoch`] the ops were made in: a batch of an older epoch is dropped,
    /// since its feed re-reads from its committed checkpoint.
    epoch: u64,
}

/// Batches that may wait for the index writer (see `Index::open`).
const WRITER_QUEUE: usize = 8;

/// Filters shared by the feed, search and stream endpoints.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Feed z32.
    pub feed: Option<String>,
    /// `type` of the value.
    pub typ: Option<String>,
    /// A tag.
    pub tag: Option<String>,
    /// sortAt ≥ this (µs).
    pub since: Option<i64>,
    /// sortAt < this (µs).
    pub until: Option<i64>,
}

impl Filters {
    /// Whether an entry passes the feed, type and tag filters (for the live stream, which
    /// has no time window).
    pub fn matches(&self, e: &Entry) -> bool {
        self.feed.as_deref().is_none_or(|f| e.feed == f)
            && self
                .typ
                .as_deref()
                .is_none_or(|t| e.typ.as_deref() == Some(t))
            && self.tag.as_ref().is_none_or(|t| e.tags.contains(t))
    }
}

/// A page of results and the cursor of the next one.
#[derive(Debug)]
pub struct Page {
    /// The entries.
    pub entries: Vec<Entry>,
    /// Opaque cursor of the next page.
    pub cursor: Option<String>,
}

/// A committed checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Blocks processed (the bee version reached).
    pub version: u64,
    /// Fork.
    pub fork: u64,
}

/// The index: reads from any task, writes through the writer task.
pub struct Index {
    index: TIndex,
    reader: IndexReader,
    f: Fields,
    tx: mpsc::Sender<Batch>,
    committed: Arc<Mutex<HashMap<String, Checkpoint>>>,
    events: Arc<events::Events>,
    /// Moves on after every commit (see [`Index::generation`]).
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// Entries upserted since start (for metrics).
    pub upserts: Arc<std::sync::atomic::AtomicU64>,
    /// The newest sortAt indexed (µs): where the feed's time windows start.
    newest: Arc<std::sync::atomic::AtomicI64>,
    health: Arc<Health>,
    /// Taken by every commit; a backup holds it to keep the last commit still.
    gate: Arc<Mutex<()>>,
    /// The index directory.
    dir: std::path::PathBuf,
    /// Each live segment's `sort_at` column, opened once (kept by the reader's warmer).
    sort_columns: Arc<newest::SortColumns>,
    /// The searchers later pages of a search read (see `pinned`).
    pinned: Arc<pinned::Pinned>,
    /// Seconds from a commit's start until its entries are searchable (the commit and the
    /// reader's reload): what sets publish → found by search. On `/metrics`.
    pub commit_seconds: Histogram,
}

/// Buckets of [`Index::commit_seconds`]: 1 ms to about 16 s, doubling.
fn commit_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 15)
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Index")
    }
}

/// The size of a block of stored documents, before compression. Reading one document
/// decompresses its whole block: tantivy's default of 16 KiB held ~40 entries, so a page of 20
/// hits decompressed ~320 KiB (with its zeroed buffers and copies, a fifth of a feed page's
/// CPU when the blocks are not cached). Smaller blocks compress a little worse.
const DOCSTORE_BLOCK: usize = 4096;

/// A new, empty index with our settings.
fn create(dir: &Path, schema: Schema) -> tantivy::Result<TIndex> {
    TIndex::builder()
        .schema(schema)
        .settings(tantivy::IndexSettings {
            docstore_blocksize: DOCSTORE_BLOCK,
            ..Default::default()
        })
        .create_in_dir(dir)
}

fn payload() -> String {
    json!({"schema": SCHEMA_VERSION}).to_string()
}

impl Index {
    /// Opens (or creates, or rebuilds after a schema change) the index in `dir` and starts
    /// its writer task.
    pub fn open(
        dir: &Path,
        memory_mb: usize,
        commit_every: Duration,
        health: Arc<Health>,
    ) -> Result<Arc<Index>> {
        let (schema, f) = schema();
        std::fs::create_dir_all(dir)?;
        let index = match TIndex::open_in_dir(dir) {
            Ok(i) => {
                let meta = i.load_metas()?;
                let version = meta
                    .payload
                    .as_deref()
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())
                    .and_then(|v| v["schema"].as_u64());
                if version == Some(SCHEMA_VERSION)
                    && i.schema() == schema
                    && i.settings().docstore_blocksize == DOCSTORE_BLOCK
                {
                    i
                } else {
                    tracing::warn!(
                        ?version,
                        "index schema changed: rebuilding the index from the stored blocks"
                    );
                    drop(i);
                    std::fs::remove_dir_all(dir)?;
                    std::fs::create_dir_all(dir)?;
                    create(dir, schema)?
                }
            }
            Err(_) => {
                // A directory without an index (new, or left half-made): start it afresh.
                std::fs::remove_dir_all(dir)?;
                std::fs::create_dir_all(dir)?;
                create(dir, schema)?
            }
        };
        analyzer::register(&index);
        let sort_columns = Arc::new(newest::SortColumns::default());
        let warmer: Arc<dyn tantivy::Warmer> = sort_columns.clone();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .warmers(vec![Arc::downgrade(&warmer)])
            .try_into()?;
        // Batches waiting for the single writer. Feeds do not wait for their batch to be
        // applied, so this bounds what ingest holds in memory: at 64, 100 feeds ingesting
        // at once queued up to 64 chunks of 4096 ops and RssAnon peaked at 1.5 GB (10M
        // entries). A few batches keep the writer busy; the feeds wait for room instead.
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let me = Arc::new(Index {
            index,
            reader,
            f,
            tx,
            committed: Arc::new(Mutex::new(HashMap::new())),
            events: Default::default(),
            generation: Default::default(),
            upserts: Default::default(),
            newest: Default::default(),
            health: health.clone(),
            gate: Arc::new(Mutex::new(())),
            dir: dir.to_path_buf(),
            sort_columns,
            pinned: Default::default(),
            commit_seconds: Histogram::new(commit_buckets()),
        });
        me.newest
            .store(me.load_newest()?, std::sync::atomic::Ordering::Relaxed);
        let loaded = me.load_checkpoints()?;
        *me.committed.lock().unwrap_or_else(|p| p.into_inner()) = loaded;
        let task = WriterTask::new(
            me.index.clone(),
            memory_mb * 1_000_000,
            f,
            me.reader.clone(),
            me.committed.clone(),
            me.generation.clone(),
            me.newest.clone(),
            health.clone(),
            commit_every,
            me.gate.clone(),
            me.commit_seconds.clone(),
        )?;
        // Two stages, so that live events never wait for a commit (see `prepare`).
        let (ready_tx, ready_rx) = mpsc::channel(WRITER_QUEUE);
        let first = prepare::Preparer {
            f,
            events: me.events.clone(),
            upserts: me.upserts.clone(),
            newest: me.newest.clone(),
            health,
        };
        tokio::spawn(
            first
                .run(rx, ready_tx)
                .instrument(tracing::info_span!("index_prepare")),
        );
        tokio::spawn(
            task.run(ready_rx)
                .instrument(tracing::info_span!("index_writer")),
        );
        Ok(me)
    }

    fn load_newest(&self) -> Result<i64> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.f.kind, "entry"),
            IndexRecordOption::Basic,
        );
        let top: Vec<(i64, tantivy::DocAddress)> = searcher.search(
            &q,
            &tantivy::collector::TopDocs::with_limit(1)
                .order_by_fast_field::<i64>("sort_at", tantivy::Order::Desc),
        )?;
        Ok(top.first().map(|t| t.0).unwrap_or(0))
    }

    fn load_checkpoints(&self) -> Result<HashMap<String, Checkpoint>> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.f.kind, "cp"),
            IndexRecordOption::Basic,
        );
        let docs = searcher.search(&q, &DocSetCollector)?;
        let mut out = HashMap::new();
        for addr in docs {
            let d: TantivyDocument = searcher.doc(addr)?;
            let feed = d
                .get_first(self.f.feed)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            let version = d
                .get_first(self.f.seq)
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            let fork = d
                .get_first(self.f.version)
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            out.insert(feed, Checkpoint { version, fork });
        }
        Ok(out)
    }

    /// The committed checkpoint of a feed.
    pub fn checkpoint(&self, feed: &str) -> Checkpoint {
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(feed)
            .copied()
            .unwrap_or_default()
    }

    /// Queues ops made in `epoch` (see [`Health::epoch`]); resolves once they are queued
    /// (backpressure), not committed. `caught_up`: these ops bring a feed up to date, so they
    /// are committed after the short interval even in a bulk ingest.
    pub async fn submit(&self, ops: Vec<IndexOp>, caught_up: bool, epoch: u64) -> Result<()> {
        self.tx
            .send(Batch {
                ops,
                done: None,
                caught_up,
                epoch,
            })
            .await
            .map_err(|_| Error::Unavailable("index writer stopped".into()))
    }

    /// Queues ops and waits until they are committed and searchable.
    pub async fn submit_and_wait(&self, ops: Vec<IndexOp>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Batch {
                ops,
                done: Some(tx),
                caught_up: true,
                epoch: self.health.epoch(),
            })
            .await
            .map_err(|_| Error::Unavailable("index writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("index writer stopped".into()))
    }

    /// The live stream's events (see [`events`]).
    pub fn events(&self) -> &Arc<events::Events> {
        &self.events
    }

    /// Counts the commits this process made visible: a read made at generation `g` holds
    /// while this is still `g` (read it before the read).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Number of indexed entries.
    pub fn entry_count(&self) -> u64 {
        let searcher = self.reader.searcher();
        let t = Term::from_field_text(self.f.kind, "entry");
        searcher.doc_freq(&t).unwrap_or(0)
    }
}
