//! The indexer role: the entry log into the local index.
//!
//! An ordered consumer (ephemeral, no acks: our checkpoint is the truth) starts after the
//! stream sequence committed with the index (`~stream`), and the links it delivers become
//! index ops, in stream order, with that sequence as the last op of each batch. So a crash
//! between two commits re-reads exactly what was not committed, like a feed task after a
//! kill -9. A link already covered by the feed's committed checkpoint (the same fork, `to`
//! not beyond it) is skipped; a failed commit (a new health epoch) or a stalled consumer
//! starts a new one from the committed sequence. A tombstone (`end`, an unfollow) purges the
//! feed in stream order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use serde_json::Value;
use tokio_stream::StreamExt;

use super::log::{self, Link, OpKind};
use super::{Cluster, STREAM_CHECKPOINT};
use crate::extract;
use crate::index::{Checkpoint, EntryDoc, IndexOp};
use crate::Aggregator;

/// Ops gathered into one batch for the writer at most.
const BATCH_OPS: usize = 8192;

/// Runs until the aggregator is gone.
pub async fn run(c: Arc<Cluster>, agg: Weak<Aggregator>) {
    loop {
        let Some(a) = agg.upgrade() else { return };
        if let Err(e) = consume(&c, &a).await {
            tracing::warn!("entry log: {e}");
        }
        drop(a);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One consumer's life: from the committed sequence until an error or a new health epoch.
async fn consume(c: &Cluster, agg: &Arc<Aggregator>) -> crate::Result<()> {
    while agg.health.is_degraded() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let epoch = agg.health.epoch();
    // What an earlier consumer sent is committed first: the checkpoint below must cover it
    // (else its links would be applied twice, and an insert would double an entry).
    agg.index.submit_and_wait(Vec::new()).await?;
    let start = agg.index.checkpoint(STREAM_CHECKPOINT).version + 1;
    let unavailable = |e: &dyn std::fmt::Display| crate::Error::Unavailable(e.to_string());
    let consumer = c
        .stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{}.>", c.prefix()),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    tracing::info!(from = start, "consuming the entry log");
    // Each feed's version as of the ops sent (committed or about to be).
    let mut applied: HashMap<String, Checkpoint> = HashMap::new();
    let mut last_info = tokio::time::Instant::now();
    let mut delivered = start.saturating_sub(1);
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        if agg.health.epoch() != epoch || agg.health.is_degraded() {
            return Ok(()); // start again from what is committed
        }
        if last_info.elapsed() > Duration::from_secs(2) {
            last_info = tokio::time::Instant::now();
            if let Ok(info) = c.stream.get_info().await {
                c.metrics
                    .stream_last
                    .store(info.state.last_sequence, Ordering::Relaxed);
            }
        }
        let first = match tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
            Err(_) => {
                // The stream has more than we got, and nothing came for a while (a consumer
                // left behind by a leader change): start a new one.
                let last = c.metrics.stream_last.load(Ordering::Relaxed);
                if last > delivered && quiet_since.elapsed() > Duration::from_secs(3) {
                    tracing::info!(delivered, last, "the consumer stalled: starting again");
                    return Ok(());
                }
                continue;
            }
            Ok(None) => return Ok(()),
            Ok(Some(m)) => m.map_err(|e| unavailable(&e))?,
        };
        let mut ops = Vec::new();
        let mut m = first;
        let (last, pending) = loop {
            let info = m.info().map_err(|e| unavailable(&e))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            c.metrics
                .stream_last
                .fetch_max(seq + pending, Ordering::Relaxed);
            match log::decode(&m.payload) {
                Ok(link) => apply(c, agg, link, &mut applied, &mut ops),
                Err(e) => tracing::warn!(seq, "entry log: skipping a message: {e}"),
            }
            if pending == 0 || ops.len() >= BATCH_OPS {
                break (seq, pending);
            }
            // More is waiting: take it into this batch.
            m = match tokio::time::timeout(Duration::from_millis(50), messages.next()).await {
                Ok(Some(m)) => m.map_err(|e| unavailable(&e))?,
                _ => break (seq, pending),
            };
        };
        ops.push(IndexOp::Checkpoint {
            feed: STREAM_CHECKPOINT.into(),
            version: last,
            fork: 0,
        });
        agg.index.submit(ops, pending == 0, epoch).await?;
        delivered = last;
        quiet_since = tokio::time::Instant::now();
    }
}

/// The index ops of one link, unless it is already applied or its feed was unfollowed.
fn apply(
    c: &Cluster,
    agg: &Aggregator,
    link: Link,
    applied: &mut HashMap<String, Checkpoint>,
    ops: &mut Vec<IndexOp>,
) {
    let cur = applied
        .entry(link.feed.clone())
        .or_insert_with(|| agg.index.checkpoint(&link.feed));
    if link.end {
        // Unfollowed: its entries go; a later chain starts from nothing.
        ops.push(IndexOp::Purge {
            feed: link.feed.clone(),
        });
        *cur = Checkpoint::default();
        c.metrics.links_applied.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let known = cur.version > 0;
    if known && link.fork < cur.fork {
        return; // a fork the feed has left
    }
    if known && link.fork == cur.fork && link.to <= cur.version && !link.purge {
        return; // already applied
    }
    if link.purge || (known && link.fork != cur.fork) {
        ops.push(IndexOp::Purge {
            feed: link.feed.clone(),
        });
    }
    for op in link.ops {
        let key = match log::key_bytes(&op) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(feed = %link.feed, "entry log: {e}");
                continue;
            }
        };
        match (op.op, op.value) {
            (OpKind::Del, _) | (_, None) => ops.push(IndexOp::Delete {
                feed: link.feed.clone(),
                key,
            }),
            (kind, Some(raw)) => {
                let text = raw.get().to_owned();
                let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let doc = Box::new(EntryDoc::new(
                    link.feed.clone(),
                    key,
                    op.seq,
                    op.seen,
                    extract::extract(&value),
                    text,
                ));
                ops.push(if kind == OpKind::Insert {
                    IndexOp::Insert(doc)
                } else {
                    IndexOp::Upsert(doc)
                });
            }
        }
    }
    ops.push(IndexOp::Checkpoint {
        feed: link.feed.clone(),
        version: link.to,
        fork: link.fork,
    });
    *cur = Checkpoint {
        version: link.to,
        fork: link.fork,
    };
    c.metrics.links_applied.fetch_add(1, Ordering::Relaxed);
}
