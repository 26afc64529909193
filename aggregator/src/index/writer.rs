//! The index writer task: applies batches of ops, commits them with their checkpoints, and
//! survives a failed commit (a full disk, no file descriptors, an I/O error): it rolls back to
//! the last commit, reports the index degraded, drops the ops of the old epoch (their feeds
//! re-read from their committed checkpoints, so nothing is lost or doubled), and tries again
//! with backoff until a commit goes through. When the rollback fails too (tantivy then has
//! dropped the writer's directory lock and cannot roll back again) or tantivy panics, the
//! writer is dropped and a fresh one is opened on the last commit before the next try.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use tantivy::{doc, Index as TIndex, IndexReader, IndexWriter, TantivyDocument, Term};
use tokio::sync::{mpsc, oneshot};

use super::prepare::{Ready, ReadyOp};
use super::{entry_id, payload, Checkpoint, Fields, IndexOp, WRITER_QUEUE};
use crate::health::Health;

pub(super) struct WriterTask {
    /// `None` after a failed rollback: opened again from `index` before the next commit.
    writer: Option<IndexWriter<TantivyDocument>>,
    index: TIndex,
    /// The writer's memory budget, for opening it again.
    memory_bytes: usize,
    f: Fields,
    reader: IndexReader,
    committed: Arc<Mutex<HashMap<String, Checkpoint>>>,
    /// Moves on after every commit's reload: cached reads of an older one are stale.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// The newest sortAt seen (by the first stage), given to checkpoint documents.
    newest: Arc<std::sync::atomic::AtomicI64>,
    pending_cp: HashMap<String, Option<Checkpoint>>,
    waiters: Vec<oneshot::Sender<()>>,
    dirty: bool,
    every: Duration,
    /// Entry changes applied since the last commit.
    pending: usize,
    /// A batch since the last commit asked for the short interval.
    urgent: bool,
    health: Arc<Health>,
    /// Held by a backup while it copies the last commit: no commit meanwhile.
    gate: Arc<Mutex<()>>,
    /// See [`Index::commit_seconds`](super::Index::commit_seconds).
    commit_seconds: Histogram,
}

/// Past this many changes since the last commit the writer is in a bulk ingest: it commits
/// every [`BULK_EVERY`] instead of every `commit_interval_ms`. A commit per 50 ms made ~60
/// small segments per 100k entries (one per indexing thread per commit), and merging them
/// back cost more than the indexing; live posts stay below this and keep the short interval.
const BULK_CHANGES: usize = 2000;
/// Commit interval of a bulk ingest.
const BULK_EVERY: Duration = Duration::from_secs(1);

/// The longest wait between tries of a failed commit.
const RETRY_MAX: Duration = Duration::from_secs(30);

impl WriterTask {
    /// Opens the index's writer (one indexing thread, `memory_bytes` of budget) and, on a
    /// new index, commits the schema payload so the next open knows the format.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        index: TIndex,
        memory_bytes: usize,
        f: Fields,
        reader: IndexReader,
        committed: Arc<Mutex<HashMap<String, Checkpoint>>>,
        generation: Arc<std::sync::atomic::AtomicU64>,
        newest: Arc<std::sync::atomic::AtomicI64>,
        health: Arc<Health>,
        every: Duration,
        gate: Arc<Mutex<()>>,
        commit_seconds: Histogram,
    ) -> tantivy::Result<Self> {
        let mut writer = index.writer_with_num_threads(1, memory_bytes)?;
        if index.load_metas()?.payload.is_none() {
            let mut p = writer.prepare_commit()?;
            p.set_payload(&payload());
            p.commit()?;
        }
        Ok(WriterTask {
            writer: Some(writer),
            index,
            memory_bytes,
            f,
            reader,
            committed,
            generation,
            newest,
            pending_cp: HashMap::new(),
            waiters: Vec::new(),
            dirty: false,
            every,
            pending: 0,
            urgent: false,
            health,
            gate,
            commit_seconds,
        })
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Ready>) {
        let mut last = Instant::now();
        let mut retry = Duration::from_secs(1);
        loop {
            if self.health.index_failed() {
                // Degraded: ops of the old epoch are dropped (their feeds start again from
                // their committed checkpoints); an empty commit tells when writing works.
                let wake = tokio::time::sleep(retry);
                tokio::pin!(wake);
                loop {
                    tokio::select! {
                        b = rx.recv() => match b {
                            Some(b) => self.take_if_current(b),
                            None => return,
                        },
                        _ = &mut wake => break,
                    }
                }
                if tokio::task::block_in_place(|| self.commit()) {
                    tracing::info!("the index commits again: ingest resumes");
                    retry = Duration::from_secs(1);
                } else {
                    retry = (retry * 2).min(RETRY_MAX);
                }
                last = Instant::now();
                continue;
            }
            let wait = self.interval().saturating_sub(last.elapsed());
            let got = if self.dirty {
                tokio::time::timeout(wait, rx.recv()).await.ok()
            } else {
                Some(rx.recv().await)
            };
            match got {
                Some(Some(b)) => {
                    // tantivy's add_document blocks while its indexing thread is busy: not
                    // on a worker that replication needs.
                    tokio::task::block_in_place(|| {
                        self.take_if_current(b);
                        // Take what else is queued, so one commit covers it; at most a
                        // queue's worth: while feeds fill the queue faster than tantivy
                        // indexes, "until it is empty" never came, and neither did a commit
                        // (a 10M-entry ingest made no commit in 5 minutes, holding every
                        // uncommitted delete, checkpoint and waiter until the end).
                        for _ in 0..WRITER_QUEUE {
                            match rx.try_recv() {
                                Ok(b) => self.take_if_current(b),
                                Err(_) => break,
                            }
                        }
                    });
                }
                Some(None) => {
                    tokio::task::block_in_place(|| self.commit());
                    return;
                }
                None => {}
            }
            if self.dirty && last.elapsed() >= self.interval() {
                tokio::task::block_in_place(|| self.commit());
                last = Instant::now();
            }
        }
    }

    /// Applies a batch made in the current epoch; drops an older one (and its waiter).
    fn take_if_current(&mut self, b: Ready) {
        if b.epoch == self.health.epoch() && !self.health.index_failed() {
            self.apply(b);
        }
    }

    fn apply(&mut self, b: Ready) {
        let f = self.f;
        self.pending += b.ops.len();
        self.urgent |= b.caught_up;
        for op in b.ops {
            match op {
                ReadyOp::Entry { doc, replace } => {
                    if let Some(t) = replace {
                        self.delete(t);
                    }
                    self.add(doc);
                }
                // The first stage made these documents (`ReadyOp::Entry`).
                ReadyOp::Other(IndexOp::Upsert(_) | IndexOp::Insert(_)) => {}
                ReadyOp::Other(IndexOp::Delete { feed, key }) => {
                    self.delete(Term::from_field_text(f.id, &entry_id(&feed, &key)));
                }
                ReadyOp::Other(IndexOp::Checkpoint {
                    feed,
                    version,
                    fork,
                }) => {
                    let id = format!("cp:{feed}");
                    self.delete(Term::from_field_text(f.id, &id));
                    // A sortAt and a tiebreak on every document keep those columns full: a
                    // row's value is then read directly, not through a rank lookup in an
                    // optional column's index (3/4 of a feed page's CPU). The newest sortAt keeps
                    // the column's blocks narrow; no feed query matches a `cp` document.
                    let sort_at = self.newest.load(std::sync::atomic::Ordering::Relaxed);
                    let d = doc!(
                        f.kind => "cp",
                        f.id => id,
                        f.feed => feed.clone(),
                        f.seq => version,
                        f.version => fork,
                        f.sort_at => sort_at,
                        f.tiebreak => 0u64,
                    );
                    self.add(d);
                    self.pending_cp
                        .insert(feed, Some(Checkpoint { version, fork }));
                }
                ReadyOp::Other(IndexOp::Purge { feed }) => {
                    self.delete(Term::from_field_text(f.feed, &feed));
                    self.pending_cp.insert(feed, None);
                }
            }
        }
        if let Some(w) = b.done {
            self.waiters.push(w);
        }
        self.dirty = true;
    }

    /// How long after the last commit the next one is due.
    fn interval(&self) -> Duration {
        if self.pending >= BULK_CHANGES && !self.urgent {
            BULK_EVERY.max(self.every)
        } else {
            self.every
        }
    }

    /// Queues a delete; a no-op while the writer is dropped (then the index is degraded and
    /// no batch is applied).
    fn delete(&mut self, t: Term) {
        if let Some(w) = &mut self.writer {
            // Not `delete_term`: see `term_delete` for what its queued weight cost.
            if let Err(e) = w.delete_query(Box::new(super::term_delete::TermDelete(t))) {
                tracing::error!("index delete failed: {e}");
            }
        }
    }

    fn add(&mut self, d: TantivyDocument) {
        if let Some(w) = &mut self.writer {
            if let Err(e) = w.add_document(d) {
                tracing::error!("index add failed: {e}");
            }
        }
    }

    /// Commits what was applied; `false` if the commit failed (then everything since the
    /// last commit is rolled back and the index is degraded until a commit succeeds).
    fn commit(&mut self) -> bool {
        let t0 = Instant::now();
        let gate = self.gate.clone();
        let _no_backup_running = gate.lock().unwrap_or_else(|p| p.into_inner());
        // tantivy panics on some states after I/O errors (a rollback that failed cannot be
        // tried again): a panic is a failed commit, not a dead task.
        let res = self.writer_or_reopen().and_then(|w| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                w.prepare_commit().and_then(|mut p| {
                    p.set_payload(&payload());
                    p.commit()
                })
            }))
            .map_err(|_| "the index writer panicked".to_owned())?
            .map_err(|e| e.to_string())
        });
        if let Err(e) = res {
            tracing::error!("index commit failed: {e}; rolling back to the last commit, ingest pauses and the commit is retried");
            self.roll_back();
            self.pending_cp.clear();
            self.waiters.clear(); // their callers get an error
            self.dirty = false;
            self.pending = 0;
            self.urgent = false;
            self.health
                .index_failed_with(format!("index commit failed: {e}"));
            return false;
        }
        if self.health.index_failed() {
            self.health.index_recovered();
        }
        let t1 = Instant::now();
        if let Err(e) = self.reader.reload() {
            tracing::error!("index reload failed: {e}");
        }
        self.commit_seconds.observe(t0.elapsed().as_secs_f64());
        tracing::debug!(
            commit_ms = (t1 - t0).as_secs_f64() * 1e3,
            reload_ms = t1.elapsed().as_secs_f64() * 1e3,
            changes = self.pending,
            "index commit"
        );
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        {
            let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
            for (feed, cp) in self.pending_cp.drain() {
                match cp {
                    Some(cp) => c.insert(feed, cp),
                    None => c.remove(&feed),
                };
            }
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
        self.dirty = false;
        self.pending = 0;
        self.urgent = false;
        true
    }

    /// The writer, opened again on the last commit if a failed rollback dropped it.
    fn writer_or_reopen(&mut self) -> Result<&mut IndexWriter<TantivyDocument>, String> {
        if self.writer.is_none() {
            let w = self
                .index
                .writer_with_num_threads(1, self.memory_bytes)
                .map_err(|e| format!("reopening the index writer: {e}"))?;
            tracing::info!("the index writer is open again on the last commit");
            self.writer = Some(w);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| "no index writer".to_owned())
    }

    /// Drops everything since the last commit. If tantivy cannot roll back (it has then let
    /// go of its directory lock and would panic on the next try), the writer is dropped and
    /// the next commit opens a new one on the last commit: the same state a rollback gives.
    fn roll_back(&mut self) {
        let Some(w) = &mut self.writer else { return };
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.rollback()));
        let failed = match res {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "it panicked".to_owned(),
        };
        tracing::error!(
            "index rollback failed: {failed}; the writer is opened again before the next commit"
        );
        self.writer = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::EntryDoc;
    use super::super::Index;
    use super::*;
    use crate::extract::Extracted;

    fn batch(feed: usize, n: usize) -> Vec<IndexOp> {
        (0..n)
            .map(|i| {
                IndexOp::Insert(Box::new(EntryDoc::new(
                    format!("f{feed}"),
                    format!("k{i}").into_bytes(),
                    i as u64,
                    i as i64,
                    Extracted {
                        text: format!("words of entry {i} in feed {feed}"),
                        kind: None,
                        tags: Vec::new(),
                        created_at: None,
                        lang: None,
                    },
                    "{}".into(),
                )))
            })
            .collect()
    }

    /// Feeds that keep the writer's queue full still get their work committed as they go:
    /// the writer once took batches "until the queue is empty", which never came.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_queue_kept_full_is_still_committed_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let health = Arc::new(crate::health::Health::default());
        let index =
            Arc::new(Index::open(dir.path(), 15, Duration::from_millis(5), health).unwrap());
        let start = index.generation();
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let index = index.clone();
                tokio::spawn(async move {
                    for _ in 0..60 {
                        // caught_up: the short interval (5 ms), not the bulk one.
                        index.submit(batch(p, 200), true, 0).await.unwrap();
                    }
                })
            })
            .collect();
        for p in producers {
            p.await.unwrap();
        }
        // Read before the writer can drain what the producers left queued.
        let while_full = index.generation() - start;
        assert!(
            while_full >= 3,
            "{while_full} commits while the queue was kept full"
        );
    }

    async fn next(
        rx: &mut tokio::sync::broadcast::Receiver<Arc<crate::index::events::LiveEvent>>,
    ) -> Result<String, tokio::time::error::Elapsed> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .map(|e| e.unwrap().entry.feed.clone())
    }

    /// A live event goes out while a commit is under way: it used to wait behind it (one in
    /// five events waited ≈ 10 ms, some over 100 ms). A backup's pause holds the commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_event_does_not_wait_for_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let health = Arc::new(crate::health::Health::default());
        let index =
            Arc::new(Index::open(dir.path(), 15, Duration::from_millis(5), health).unwrap());
        let mut sub = index.events().subscribe(None);
        let paused = tokio::task::block_in_place(|| index.pause_commits());
        index.submit(batch(1, 1), true, 0).await.unwrap();
        assert_eq!(next(&mut sub.rx).await.unwrap(), "f1");
        // The writer is now due to commit (5 ms) and waits for the pause, in its commit.
        tokio::time::sleep(Duration::from_millis(100)).await;
        index.submit(batch(2, 1), true, 0).await.unwrap();
        assert_eq!(
            next(&mut sub.rx).await.ok().as_deref(),
            Some("f2"),
            "the event waited for the commit"
        );
        let before = index.generation();
        drop(paused);
        index.submit_and_wait(batch(3, 1)).await.unwrap();
        assert!(index.generation() > before);
        assert_eq!(index.entry_count(), 3);
    }
}
