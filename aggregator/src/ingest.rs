//! A feed's task: brings the index up to the bee's newest version, in log order, from the
//! feed's committed checkpoint, then follows live appends.
//!
//! Per step: prefetch a chunk of blocks in parallel, turn each log entry into an index op
//! (put = upsert by (feed, key), del = delete; only the last op of a key in the chunk is
//! kept), and send the chunk with its checkpoint to the index writer in one batch. A new fork
//! (the author truncated) purges the feed's entries and starts again from scratch. A slow or
//! dead peer only stalls its own feed. Nothing is fetched or indexed while the write path is
//! degraded; after ops were dropped (a new health epoch) the feed goes back to its committed
//! checkpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use apiary_core::bee::{Bee, OpKind};
use apiary_core::replicate::Replica;
use apiary_core::Key;
use serde_json::Value;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::config::Backfill;
use crate::error::{Error, Result};
use crate::extract;
use crate::first_pass::FirstPass;
use crate::index::{EntryDoc, IndexOp};
use crate::Aggregator;

const CHUNK: u64 = 4096;
/// Block requests in flight per range (a chunk and its prefetch: twice this per feed).
/// JS hypercore servers spend more CPU per block the more requests wait on them (measured:
/// 3.8 s per 100k blocks at 64 in flight, 4.9 s at 512, 7.6 s at 1024); ours is at 95% of
/// its best from 128 on.
const RANGE_PARALLEL: usize = 64;

impl Aggregator {
    fn record_error(&self, key: &Key, e: &Error) {
        self.metrics.ingest_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(feed = %key, "ingest: {e}");
        let _ = self.state.update_counters(key, |c| {
            c.errors += 1;
            c.last_error = Some(e.to_string());
        });
    }

    /// Where a feed's ingest starts: its committed checkpoint in the index, or in cluster
    /// mode the end of its chain in the entry log (asked until NATS answers).
    async fn resume_point(&self, feed: &str) -> crate::index::Checkpoint {
        let Some(c) = &self.cluster else {
            return self.index.checkpoint(feed);
        };
        let mut wait = Duration::from_millis(250);
        loop {
            match c.resume(feed).await {
                Ok(cp) => return cp,
                Err(e) => {
                    tracing::warn!(%feed, "reading the end of its chain: {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    pub(crate) async fn run_feed(self: Arc<Self>, replica: Arc<Replica>) {
        let key = *replica.key();
        let feed = key.to_z32();
        let mut backoff = Duration::from_millis(500);
        let bee = Bee::with_cache(replica.clone(), 64);
        // What we have sent to the index (committed or about to be), in `epoch`.
        let mut cp = self.resume_point(&feed).await;
        let mut epoch = self.health.epoch();
        let mut head = replica.subscribe();
        let mut reindex = ReindexLimit::default();
        // The keys of the current first pass, kept when it is cut short (an error, a pause
        // of the write path): the index then holds only keys it put, so a new start from the
        // committed checkpoint still knows which puts are inserts. `None`: decided at the
        // next start.
        let mut fresh: Option<FirstPass> = None;
        loop {
            // Nothing is fetched or indexed while the write path is degraded.
            while self.health.is_degraded() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if self.health.epoch() != epoch {
                // Ops not committed were dropped: start again from what is committed.
                epoch = self.health.epoch();
                cp = self.resume_point(&feed).await;
                tracing::info!(%feed, version = cp.version, "re-reading from the committed checkpoint");
            }
            head.borrow_and_update();
            // An author who truncates again and again makes us purge and re-read the whole
            // feed each time: after the first, reindexing waits, longer each time.
            let new_fork = cp.version > 0 && replica.fork() != cp.fork;
            if new_fork {
                let wait = reindex.wait();
                if !wait.is_zero() {
                    tracing::info!(%feed, "truncated again: reindexing in {} s", wait.as_secs());
                    tokio::time::sleep(wait).await;
                    continue;
                }
                reindex.started();
            }
            match self
                .ingest_until_caught_up(&replica, &bee, &mut cp, &mut fresh, epoch, new_fork)
                .await
            {
                Ok(()) => {
                    backoff = Duration::from_millis(500);
                    let caught_up =
                        replica.length() <= cp.version.max(1) && replica.fork() == cp.fork;
                    if caught_up && self.health.epoch() == epoch {
                        // The first pass is over. Caught up: wait for a new length (or check
                        // again now and then).
                        fresh = None;
                        // Without a peer (a channel the remote closed, or an open that lost a
                        // race), open the feed again on its known addresses, and look soon.
                        let wait = if replica.peers().is_empty() {
                            self.pool.reopen(&key);
                            Duration::from_secs(2)
                        } else {
                            Duration::from_secs(30)
                        };
                        let _ = tokio::time::timeout(wait, head.changed()).await;
                    }
                }
                Err(e) => {
                    self.record_error(&key, &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    if self.cluster.is_some() {
                        // A link may have been refused (another writer moved the chain)
                        // or lost: go on from where the chain really ends. NATS errors
                        // pass (an election takes seconds): retry sooner than for a peer.
                        cp = self.resume_point(&feed).await;
                        fresh = None;
                        backoff = backoff.min(Duration::from_secs(2));
                    }
                }
            }
        }
    }

    /// Ingests from checkpoint `cp` to the current length, moving `cp` along.
    async fn ingest_until_caught_up(
        &self,
        replica: &Arc<Replica>,
        bee: &Bee,
        cp: &mut crate::index::Checkpoint,
        fresh: &mut Option<FirstPass>,
        epoch: u64,
        mut may_reindex: bool,
    ) -> Result<()> {
        let key = *replica.key();
        let feed = key.to_z32();
        if replica.length() == 0 {
            replica.update(Duration::from_secs(10)).await?;
        }
        // Stopped with the feed (unfollow aborts the task, dropping this).
        let mut _prefetch: Option<AbortOnDropHandle<()>> = None;
        // On a feed's first pass the index holds none of its entries: keys seen so far in
        // this pass are the only ones a put may replace or a del remove.
        let fresh = fresh.get_or_insert_with(|| FirstPass::new(cp.version == 0, replica.length()));
        loop {
            if self.health.is_degraded() || self.health.epoch() != epoch {
                return Ok(()); // the caller pauses, or goes back to the committed checkpoint
            }
            let length = replica.length();
            let fork = replica.fork();
            if length == 0 {
                return Ok(());
            }
            let mut ops = Vec::new();
            if cp.version > 0 && fork != cp.fork {
                if !may_reindex {
                    return Ok(()); // the caller decides when (see ReindexLimit)
                }
                may_reindex = false;
                tracing::info!(%feed, fork, "feed was truncated by its author: reindexing it");
                ops.push(IndexOp::Purge { feed: feed.clone() });
                *cp = crate::index::Checkpoint { version: 0, fork };
                *fresh = FirstPass::new(true, length);
            }
            if cp.version == 0 {
                bee.header()
                    .await
                    .map_err(|e| Error::BadRequest(format!("not a hyperbee: {e}")))?;
            }
            let start = match (cp.version, self.backfill) {
                (0, Backfill::All) => 1,
                (0, Backfill::Last(n)) => length.saturating_sub(n).max(1),
                (v, _) => v,
            };
            if start >= length && ops.is_empty() {
                return Ok(());
            }
            let end = length.min(start + CHUNK);
            // The prefetch of this chunk first: asking again for blocks it has in flight
            // would have the peer serve them twice.
            if let Some(p) = _prefetch.take() {
                let _ = p.await;
            }
            // Fetch first, without a permit: a slow or dead peer must not hold up other feeds.
            replica.download_range(start, end, RANGE_PARALLEL).await?;
            // Fetch the next chunk while this one is indexed (blocks already held cost nothing).
            let next_end = length.min(end + CHUNK);
            if next_end > end {
                let r = replica.clone();
                _prefetch = Some(AbortOnDropHandle::new(tokio::spawn(
                    async move {
                        let _ = r.download_range(end, next_end, RANGE_PARALLEL).await;
                    }
                    .in_current_span(),
                )));
            }
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| Error::Unavailable("shutting down".into()))?;
            let mut skipped_large = 0;
            let mut skipped_json = 0;
            for seq in start..end {
                let h = bee.history_entry(seq).await?;
                let key = h.entry.key;
                let delete = |ops: &mut Vec<IndexOp>, key: Vec<u8>| {
                    if fresh.may_be_indexed(&key) {
                        ops.push(IndexOp::Delete {
                            feed: feed.clone(),
                            key,
                        });
                    }
                };
                match h.kind {
                    OpKind::Del => delete(&mut ops, key),
                    OpKind::Put => {
                        let raw = h.entry.value.unwrap_or_default();
                        if raw.len() > self.cfg.max_value_bytes {
                            skipped_large += 1;
                            delete(&mut ops, key);
                            continue;
                        }
                        let value: Value = match serde_json::from_slice(&raw) {
                            Ok(v) => v,
                            Err(_) if raw.is_empty() => Value::Null,
                            Err(_) => {
                                skipped_json += 1;
                                delete(&mut ops, key);
                                continue;
                            }
                        };
                        // The author's JSON text as it is (it parsed, so it is UTF-8):
                        // writing the value out again cost more than parsing it.
                        let text = match String::from_utf8(raw) {
                            Ok(t) if !t.is_empty() => t,
                            _ => value.to_string(),
                        };
                        let replace = fresh.put(&key);
                        // A cluster follower only publishes: indexers analyze.
                        let doc = Box::new(if self.cluster.is_some() {
                            EntryDoc::unanalyzed(feed.clone(), key, seq, self.seen_now(), text)
                        } else {
                            let extracted = extract::extract(&value);
                            EntryDoc::new(feed.clone(), key, seq, self.seen_now(), extracted, text)
                        });
                        ops.push(if replace {
                            IndexOp::Upsert(doc)
                        } else {
                            IndexOp::Insert(doc)
                        });
                    }
                }
            }
            let mut ops = last_op_per_key(ops);
            ops.push(IndexOp::Checkpoint {
                feed: feed.clone(),
                version: end,
                fork,
            });
            self.metrics
                .entries_ingested
                .fetch_add(end - start, Ordering::Relaxed);
            match &self.cluster {
                Some(c) => c.publish(&feed, ops).await?,
                None => self.index.submit(ops, end == length, epoch).await?,
            }
            if skipped_large + skipped_json > 0 {
                self.state.update_counters(&key, |c| {
                    c.skipped_too_large += skipped_large;
                    c.skipped_not_json += skipped_json;
                })?;
            }
            *cp = crate::index::Checkpoint { version: end, fork };
        }
    }
}

/// When a feed may be purged and re-read after its author truncated it: the first time at
/// once, then after a gap that doubles (10 s up to 15 min) while truncations keep coming, and
/// is forgotten after a calm spell.
#[derive(Debug, Default)]
struct ReindexLimit {
    last: Option<std::time::Instant>,
    gap: Duration,
}

impl ReindexLimit {
    const FIRST: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(15 * 60);

    /// How long until a reindex may start.
    fn wait(&self) -> Duration {
        match self.last {
            Some(t) => self.gap.saturating_sub(t.elapsed()),
            None => Duration::ZERO,
        }
    }

    fn started(&mut self) {
        self.gap = match self.last {
            Some(t) if t.elapsed() < self.gap.max(Self::FIRST) * 4 => {
                (self.gap * 2).clamp(Self::FIRST, Self::MAX)
            }
            _ => Self::FIRST,
        };
        self.last = Some(std::time::Instant::now());
    }
}

/// The ops of a chunk with only the last one of each key (a put made an upsert when the key
/// had an op before it in the chunk: the index may hold the key from an earlier chunk).
///
/// A chunk's ops are applied and committed together, so the earlier ops of a key are never
/// seen. Sending them cost more than their number suggests: tantivy checks every delete
/// against every document of its term added earlier in the segment, so a bee that puts one
/// key over and over (an author claiming 2^53 identical blocks, tests/tests/huge_claim.rs)
/// made each commit quadratic in the chunk; the writer every feed shares fell behind, its
/// queue filled with that feed's batches, and other feeds' new entries waited behind them
/// (18 s and growing after 45 s).
fn last_op_per_key(ops: Vec<IndexOp>) -> Vec<IndexOp> {
    fn key_of(op: &IndexOp) -> Option<&[u8]> {
        match op {
            IndexOp::Upsert(e) | IndexOp::Insert(e) => Some(&e.key),
            IndexOp::Delete { key, .. } => Some(key),
            IndexOp::Checkpoint { .. } | IndexOp::Purge { .. } => None,
        }
    }
    // Ops of each key: (in the chunk, seen so far).
    let mut count: std::collections::HashMap<Vec<u8>, (usize, usize)> = Default::default();
    for k in ops.iter().filter_map(key_of) {
        count.entry(k.to_vec()).or_default().0 += 1;
    }
    if count.values().all(|c| c.0 == 1) {
        return ops;
    }
    ops.into_iter()
        .filter_map(|op| {
            let Some((total, seen)) = key_of(&op).and_then(|k| count.get_mut(k)) else {
                return Some(op);
            };
            *seen += 1;
            match op {
                _ if *seen < *total => None,
                IndexOp::Insert(e) if *total > 1 => Some(IndexOp::Upsert(e)),
                op => Some(op),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, seq: u64, insert: bool) -> IndexOp {
        let doc = Box::new(EntryDoc::new(
            "f".into(),
            key.as_bytes().to_vec(),
            seq,
            0,
            extract::extract(&Value::Null),
            "null".into(),
        ));
        if insert {
            IndexOp::Insert(doc)
        } else {
            IndexOp::Upsert(doc)
        }
    }

    fn del(key: &str) -> IndexOp {
        IndexOp::Delete {
            feed: "f".into(),
            key: key.as_bytes().to_vec(),
        }
    }

    /// (kind, key, seq) of each op.
    fn shape(ops: &[IndexOp]) -> Vec<(&'static str, String, u64)> {
        ops.iter()
            .map(|op| match op {
                IndexOp::Upsert(e) => ("upsert", String::from_utf8_lossy(&e.key).into(), e.seq),
                IndexOp::Insert(e) => ("insert", String::from_utf8_lossy(&e.key).into(), e.seq),
                IndexOp::Delete { key, .. } => ("delete", String::from_utf8_lossy(key).into(), 0),
                IndexOp::Purge { .. } => ("purge", String::new(), 0),
                IndexOp::Checkpoint { .. } => ("checkpoint", String::new(), 0),
            })
            .collect()
    }

    #[test]
    fn reindexing_waits_longer_while_truncations_keep_coming() {
        let mut limit = ReindexLimit::default();
        assert_eq!(limit.wait(), Duration::ZERO);
        let mut gaps = Vec::new();
        for _ in 0..9 {
            limit.started();
            gaps.push(limit.gap.as_secs());
            assert!(limit.wait() > limit.gap - Duration::from_secs(5));
            assert!(limit.wait() <= limit.gap);
        }
        assert_eq!(gaps, [10, 20, 40, 80, 160, 320, 640, 900, 900]);
        // After a calm spell (four gaps without a truncation), back to the first gap.
        limit.last = std::time::Instant::now().checked_sub(ReindexLimit::MAX * 4);
        if limit.last.is_some() {
            assert_eq!(limit.wait(), Duration::ZERO);
            limit.started();
            assert_eq!(limit.gap, ReindexLimit::FIRST);
        }
    }

    #[test]
    fn only_the_last_op_of_a_key_is_kept() {
        let ops = vec![
            IndexOp::Purge { feed: "f".into() },
            put("a", 1, true),
            put("b", 2, true),
            put("a", 3, false),
            del("b"),
            del("c"),
            put("c", 6, true),
            put("d", 7, true),
        ];
        assert_eq!(
            shape(&last_op_per_key(ops)),
            vec![
                ("purge", String::new(), 0),
                ("upsert", "a".into(), 3),
                ("delete", "b".into(), 0),
                // Deleted, then put again: the put must replace what an earlier chunk indexed.
                ("upsert", "c".into(), 6),
                ("insert", "d".into(), 7),
            ]
        );
        let distinct = vec![put("a", 1, true), del("b"), put("c", 3, false)];
        assert_eq!(shape(&last_op_per_key(distinct.clone())), shape(&distinct));
    }
}
