//! The index writer's first stage: turns each batch's entries into documents and publishes
//! them to live subscribers, then hands the batch on to the writer task (`writer.rs`).
//!
//! A stage of its own so that a live event never waits for a commit. The writer task is
//! blocked while it commits (≈ 10 ms for a handful of entries, over 100 ms now and then:
//! fsyncs, the meta file, merges being scheduled); when events were published there, one
//! in five waited behind a commit, which set the stream's p90 (≈ 10 ms) and its tail. Here
//! they go out as soon as the batch is verified and made a document, while the previous
//! commit runs. Order is kept: one FIFO from the feeds through this stage to the writer.
//!
//! An event means what it meant before: the entry was verified and handed to the index. A
//! commit that then fails rolls back what it held (the index is degraded and the feeds read
//! again from their committed checkpoints), as it did for entries already applied.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use tantivy::{doc, TantivyDocument, Term};
use tokio::sync::{mpsc, oneshot};

use super::events::Events;
use super::stored::doc_entry;
use super::{entry_id, Batch, EntryDoc, Fields, IndexOp};
use crate::extract;
use crate::health::Health;

/// One change, ready for the writer.
pub(super) enum ReadyOp {
    /// An entry's document; `replace`: the id of an older document of (feed, key) to delete
    /// first.
    Entry {
        doc: TantivyDocument,
        replace: Option<Term>,
    },
    /// A delete, a checkpoint or a purge, as it came.
    Other(IndexOp),
}

/// A batch, ready for the writer.
pub(super) struct Ready {
    pub ops: Vec<ReadyOp>,
    pub done: Option<oneshot::Sender<()>>,
    /// See [`Batch::caught_up`].
    pub caught_up: bool,
    /// See [`Batch::epoch`].
    pub epoch: u64,
}

/// The first stage (see the module docs).
pub(super) struct Preparer {
    pub f: Fields,
    pub events: Arc<Events>,
    pub upserts: Arc<AtomicU64>,
    /// The newest sortAt seen (the writer gives it to checkpoint documents).
    pub newest: Arc<AtomicI64>,
    pub health: Arc<Health>,
}

impl Preparer {
    /// Runs until the feeds' side of `rx` is gone; then dropping `tx` lets the writer make
    /// its last commit.
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Batch>, tx: mpsc::Sender<Ready>) {
        while let Some(b) = rx.recv().await {
            // A batch of an older epoch (or any while the index is failed) is dropped here,
            // before its events go out: its feed reads again from its committed checkpoint.
            if b.epoch != self.health.epoch() || self.health.index_failed() {
                continue;
            }
            let ready = self.prepare(b);
            if tx.send(ready).await.is_err() {
                return;
            }
        }
    }

    fn prepare(&self, b: Batch) -> Ready {
        let ops = b
            .ops
            .into_iter()
            .map(|op| match op {
                IndexOp::Upsert(e) => self.entry(*e, true),
                IndexOp::Insert(e) => self.entry(*e, false),
                other => ReadyOp::Other(other),
            })
            .collect();
        Ready {
            ops,
            done: b.done,
            caught_up: b.caught_up,
            epoch: b.epoch,
        }
    }

    /// An entry's document, published to live subscribers now.
    fn entry(&self, e: EntryDoc, replace: bool) -> ReadyOp {
        let f = self.f;
        let id = entry_id(&e.feed, &e.key);
        let replace = replace.then(|| Term::from_field_text(f.id, &id));
        let sort_at = extract::sort_at(e.extracted.created_at, e.seen_at);
        let tiebreak = super::newest::tiebreak(&id);
        let mut d = doc!(
            f.kind => "entry",
            f.tiebreak => tiebreak,
            f.id => id,
            f.feed => e.feed,
            f.key => String::from_utf8_lossy(&e.key).into_owned(),
            f.seq => e.seq,
            f.version => e.version,
            f.seen_at => e.seen_at,
            f.sort_at => sort_at,
            f.value => e.value,
        );
        d.add_text(f.text, e.analyzed);
        if let Some(t) = &e.extracted.kind {
            d.add_text(f.typ, t);
        }
        for t in &e.extracted.tags {
            d.add_text(f.tag, t);
        }
        for t in super::time_buckets::terms_of(sort_at) {
            d.add_u64(f.time, t);
        }
        if self.events.wanted() {
            self.events.publish(doc_entry(&f, &d));
        } else {
            self.events.skip();
        }
        self.upserts.fetch_add(1, Ordering::Relaxed);
        self.newest.fetch_max(sort_at, Ordering::Relaxed);
        ReadyOp::Entry { doc: d, replace }
    }
}
