//! `retention = "index-only"`: drops the payloads of blocks whose entries are committed.
//!
//! Ordering is what keeps it crash-safe: a block is dropped only below a feed's committed
//! checkpoint, which moves after the index commit that holds the block's entries is durable
//! (tantivy syncs its meta before `commit` returns), and on the fork the checkpoint is of.
//! A crash before the commit leaves the blocks in place for the re-read from the last
//! checkpoint; a crash after it needs none of them again.
//!
//! In cluster mode a follower's feeds are committed once their links are stored in the entry
//! log (replicated, acknowledged): blocks are dropped below the chain's published tip, which
//! is also where the feed resumes, here or on the node its shard moves to.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use apiary_core::replicate::Replica;
use apiary_core::Key;

use crate::Aggregator;

/// How often the committed checkpoints are looked at.
const EVERY: Duration = Duration::from_millis(250);

/// Runs while the aggregator lives: after each commit, drops every feed's blocks below its
/// committed checkpoint.
pub(crate) async fn drop_indexed_blocks(agg: Weak<Aggregator>) {
    let mut seen_generation = u64::MAX;
    // Per feed, the checkpoint up to which blocks were dropped (a restart starts over: a
    // pass over pages already dropped reads no page).
    let mut done: HashMap<Key, (u64, u64)> = HashMap::new();
    loop {
        tokio::time::sleep(EVERY).await;
        let Some(agg) = agg.upgrade() else { return };
        let generation = match &agg.cluster {
            Some(c) => c.published_generation(),
            None => agg.index.generation(),
        };
        if generation == seen_generation {
            continue;
        }
        seen_generation = generation;
        let feeds = agg.replicas();
        // Unfollowed feeds are forgotten.
        done.retain(|k, _| feeds.iter().any(|(f, _)| f == k));
        for (key, replica) in feeds {
            drop_feed(&agg, &key, &replica, &mut done).await;
        }
    }
}

/// Drops the blocks of `key` below its committed checkpoint, unless done already.
async fn drop_feed(
    agg: &Arc<Aggregator>,
    key: &Key,
    replica: &Arc<Replica>,
    done: &mut HashMap<Key, (u64, u64)>,
) {
    let cp = match &agg.cluster {
        Some(c) => c.published(&key.to_z32()),
        None => agg.index.checkpoint(&key.to_z32()),
    };
    if cp.version == 0 || cp.fork != replica.fork() || done.get(key) == Some(&(cp.fork, cp.version))
    {
        return;
    }
    let r = replica.clone();
    match tokio::task::spawn_blocking(move || r.drop_blocks(cp.version)).await {
        Ok(Ok(n)) => {
            done.insert(*key, (cp.fork, cp.version));
            agg.metrics
                .blocks_dropped
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(feed = %key, below = cp.version, dropped = n, "dropped indexed blocks");
        }
        Ok(Err(e)) => tracing::warn!(feed = %key, "dropping indexed blocks: {e}"),
        Err(e) => tracing::warn!(feed = %key, "dropping indexed blocks: {e}"),
    }
}

/// After a proof fetched blocks the store had dropped: drops them again (index-only). A
/// cluster node that does not run the feed (its proof replica, see
/// `Aggregator::proof_replica`) ingests nothing from it and drops every block it fetched.
pub(crate) async fn drop_again(agg: &Arc<Aggregator>, key: &Key, replica: &Arc<Replica>) {
    if let Some(running) = agg.replica(key) {
        drop_feed(agg, key, &running, &mut HashMap::new()).await;
        return;
    }
    let r = replica.clone();
    let below = r.length();
    match tokio::task::spawn_blocking(move || r.drop_blocks(below)).await {
        Ok(Ok(n)) => {
            agg.metrics
                .blocks_dropped
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Err(e)) => tracing::warn!(feed = %key, "dropping a proof's blocks: {e}"),
        Err(e) => tracing::warn!(feed = %key, "dropping a proof's blocks: {e}"),
    }
}
