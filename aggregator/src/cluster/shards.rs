//! Who follows what: the follow list's watch, membership, shard leases.
//!
//! Feeds hash to `shards` virtual shards. Each follower puts a heartbeat in the members
//! bucket (entries expire after `lease_ttl_ms`), and for every shard ranks the live members
//! by rendezvous hashing; the first is the one that should hold it. It takes the shard's
//! lease (a create in the leases bucket, whose entries expire after `lease_ttl_ms` too) and
//! renews it every third of that, by revision. A member that dies stops renewing: its
//! leases expire and the next in each shard's ranking takes them; a member that joins gets
//! the shards it now ranks first for, given up by their holders (feeds stopped first, then
//! the lease deleted). A feed task started on a shard resumes from the end of the feed's
//! chain in the entry log, so a move loses and repeats nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use apiary_core::Key;
use async_nats::jetstream::kv::{self, Operation};
use tokio_stream::StreamExt;
use tracing::Instrument;

use super::{lock, Cluster};
use crate::state::Follow;
use crate::Aggregator;

/// The shard of a feed.
pub fn shard_of(key: &Key, shards: u32) -> u32 {
    let b = key.as_bytes();
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    (u64::from_le_bytes(x) % u64::from(shards.max(1))) as u32
}

/// The rendezvous score of a node for a shard (FNV-1a, then a SplitMix64 finish).
fn score(node: &str, shard: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain(shard.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The live member that should hold `shard`.
pub fn owner(shard: u32, live: &[String]) -> Option<&String> {
    live.iter().max_by_key(|n| (score(n, shard), n.as_str()))
}

fn lease_key(shard: u32) -> String {
    format!("shard-{shard}")
}

/// The node's cluster tasks; returns when the aggregator is gone.
pub async fn run(c: Arc<Cluster>, agg: Weak<Aggregator>) {
    // The follow list first: feeds are started and links indexed only once it is known.
    loop {
        match load_follows(&c, &agg).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!("reading the follow list: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if agg.strong_count() == 0 {
            return;
        }
    }
    tokio::spawn(watch_follows(c.clone(), agg.clone()).in_current_span());
    tokio::spawn(watch_leases(c.clone()).in_current_span());
    if c.is_indexer() {
        tokio::spawn(super::indexer::run(c.clone(), agg.clone()).in_current_span());
    }
    if c.is_follower() {
        follow_shards(c, agg).await;
    }
}

fn parse_key(k: &str) -> Option<Key> {
    Key::parse(k).ok()
}

/// Mirrors the bucket into the local follow list (feeds gone from it are dropped here).
async fn load_follows(c: &Cluster, agg: &Weak<Aggregator>) -> crate::Result<()> {
    let unavailable = |e: &dyn std::fmt::Display| {
        crate::Error::Unavailable(format!("cluster: the follow list: {e}"))
    };
    let mut keys = c.follows.keys().await.map_err(|e| unavailable(&e))?;
    let mut listed = HashMap::new();
    while let Some(k) = keys.next().await {
        let k = k.map_err(|e| unavailable(&e))?;
        let Some(v) = c.follows.get(&k).await.map_err(|e| unavailable(&e))? else {
            continue;
        };
        match (parse_key(&k), serde_json::from_slice::<Follow>(&v)) {
            (Some(key), Ok(f)) => {
                listed.insert(key, f);
            }
            _ => tracing::warn!("follow list: ignoring a malformed entry {k:?}"),
        }
    }
    let Some(agg) = agg.upgrade() else {
        return Ok(());
    };
    for (key, _) in agg.state.follows()? {
        if !listed.contains_key(&key) {
            agg.drop_cluster_feed(&key).await;
        }
    }
    for (key, f) in listed {
        agg.state.put_follow(&key, &f)?;
    }
    Ok(())
}

/// Applies every later change of the follow list.
async fn watch_follows(c: Arc<Cluster>, agg: Weak<Aggregator>) {
    loop {
        let mut w = watch_from_start(&c.follows, "the follow list").await;
        while let Some(e) = w.next().await {
            let Ok(e) = e else { break };
            let Some(agg) = agg.upgrade() else { return };
            let Some(key) = parse_key(&e.key) else {
                continue;
            };
            match e.operation {
                Operation::Put => {
                    let Ok(f) = serde_json::from_slice::<Follow>(&e.value) else {
                        tracing::warn!("follow list: ignoring a malformed entry {:?}", e.key);
                        continue;
                    };
                    if let Err(err) = agg.state.put_follow(&key, &f) {
                        tracing::warn!("follow list: {err}");
                    }
                    // This feed only: a full reconcile per event read the whole follow
                    // list each time (quadratic while the watch replays its history).
                    // Running here: its peers may have grown; new in a held shard: start.
                    let running = agg.replica(&key).is_some();
                    if running || (c.is_follower() && holds(&c, &key)) {
                        if let Err(err) = agg.start(key, &f.peers) {
                            tracing::warn!(feed = %key, "starting, or adding peers: {err}");
                        }
                    }
                }
                Operation::Delete | Operation::Purge => {
                    agg.drop_cluster_feed(&key).await;
                }
            }
        }
        if agg.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A watch of every key of `bucket`, from each key's current value on; asked again every
/// second until NATS answers.
async fn watch_from_start(bucket: &kv::Store, what: &str) -> kv::Watch {
    loop {
        match bucket.watch_with_history(">").await {
            Ok(w) => return w,
            Err(e) => {
                tracing::warn!("watching {what}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Keeps `holders` (shard → node) as the leases bucket says.
async fn watch_leases(c: Arc<Cluster>) {
    loop {
        let mut w = watch_from_start(&c.leases, "the leases").await;
        while let Some(Ok(e)) = w.next().await {
            let Some(shard) = e
                .key
                .strip_prefix("shard-")
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let mut h = lock(&c.holders);
            match e.operation {
                Operation::Put => {
                    h.insert(shard, String::from_utf8_lossy(&e.value).into_owned());
                }
                Operation::Delete | Operation::Purge => {
                    h.remove(&shard);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The shards this node holds, with the revision of each lease.
fn held_shards(c: &Cluster) -> HashSet<u32> {
    lock(&c.held).keys().copied().collect()
}

/// Whether this node holds the lease of the shard of `key`.
fn holds(c: &Cluster, key: &Key) -> bool {
    lock(&c.held).contains_key(&shard_of(key, c.cfg.shards))
}

/// Starts the feeds of held shards, stops the others.
fn reconcile(c: &Cluster, agg: &Arc<Aggregator>) {
    if !c.is_follower() {
        return;
    }
    let held = held_shards(c);
    let follows = match agg.state.follows() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("follow list: {e}");
            return;
        }
    };
    for (key, f) in follows {
        if held.contains(&shard_of(&key, c.cfg.shards)) {
            if agg.replica(&key).is_some() {
                continue; // running (new peers are added by the follow's own event)
            }
            if let Err(e) = agg.start(key, &f.peers) {
                tracing::warn!(feed = %key, "starting: {e}");
            }
        } else {
            agg.stop_feed(&key);
        }
    }
}

/// The follower's loop: heartbeat, leases, feeds.
async fn follow_shards(c: Arc<Cluster>, agg: Weak<Aggregator>) {
    let tick = Duration::from_millis(c.cfg.lease_ttl_ms / 3);
    tokio::spawn(watch_members(c.clone()).in_current_span());
    let roles = serde_json::json!({"roles": c.cfg.roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect::<Vec<_>>()});
    // Leases only from the second beat on: by then the members' heartbeats are seen, so a
    // node starting does not take every free shard only to give most of them up.
    let mut first = true;
    let mut tick_no: u64 = 0;
    loop {
        let Some(a) = agg.upgrade() else { return };
        if let Err(e) = c
            .members
            .put(&c.node, roles.to_string().into_bytes().into())
            .await
        {
            tracing::warn!("heartbeat: {e}");
        }
        if !first {
            let live = live_members(&c);
            // The whole follow list is walked when the held shards change, and every 15th
            // tick anyway (a start that failed is tried again).
            leases_tick(&c, &a, &live, tick_no % 15 == 0).await;
            tick_no += 1;
        }
        first = false;
        drop(a);
        tokio::time::sleep(tick).await;
    }
}

/// Keeps `seen` (member → when its heartbeat was last seen). Entries expire in the bucket
/// without a marker, so liveness is judged here: a member is live while its last heartbeat
/// is younger than the TTL. (Listing the bucket's keys each tick made a consumer each time;
/// with a NATS node down those requests timed out for minutes.)
async fn watch_members(c: Arc<Cluster>) {
    loop {
        let mut w = watch_from_start(&c.members, "the members").await;
        while let Some(Ok(e)) = w.next().await {
            let mut seen = lock(&c.seen);
            match e.operation {
                Operation::Put => {
                    seen.insert(e.key.clone(), std::time::Instant::now());
                }
                Operation::Delete | Operation::Purge => {
                    seen.remove(&e.key);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The members whose heartbeat is younger than the TTL, and this node.
fn live_members(c: &Cluster) -> Vec<String> {
    let ttl = Duration::from_millis(c.cfg.lease_ttl_ms);
    let mut live: Vec<String> = lock(&c.seen)
        .iter()
        .filter(|(_, t)| t.elapsed() < ttl)
        .map(|(n, _)| n.clone())
        .collect();
    if !live.contains(&c.node) {
        live.push(c.node.clone());
    }
    live
}

/// Whether the lease of `shard` is ours in the bucket (e.g. renewed, but the answer was
/// lost in a leader election; or ours before a restart): its revision if so.
async fn our_lease(c: &Cluster, shard: u32) -> Option<u64> {
    match c.leases.entry(lease_key(shard)).await {
        Ok(Some(e)) if e.operation == Operation::Put && e.value.as_ref() == c.node.as_bytes() => {
            Some(e.revision)
        }
        _ => None,
    }
}

async fn leases_tick(c: &Arc<Cluster>, agg: &Arc<Aggregator>, live: &[String], sweep: bool) {
    let before = held_shards(c);
    // Every shard at once, each bounded by a third of the TTL: a NATS node in an election
    // must not make one tick outlast the leases it renews.
    let budget = Duration::from_millis(c.cfg.lease_ttl_ms / 3);
    let mut tasks = tokio::task::JoinSet::new();
    for shard in 0..c.cfg.shards {
        let want = owner(shard, live).is_some_and(|o| o == &c.node);
        let rev = lock(&c.held).get(&shard).copied();
        if want || rev.is_some() {
            let c = c.clone();
            tasks.spawn(async move {
                let r = tokio::time::timeout(budget, lease_step(&c, shard, want, rev)).await;
                (shard, rev, r.unwrap_or(Step::TimedOut))
            });
        }
    }
    let mut release = Vec::new();
    while let Some(Ok((shard, rev, step))) = tasks.join_next().await {
        let mut held = lock(&c.held);
        match step {
            Step::Holds(r) => {
                if rev.is_none() {
                    tracing::info!(shard, "took the lease");
                    c.metrics.lease_moves.fetch_add(1, Ordering::Relaxed);
                }
                held.insert(shard, r);
            }
            Step::Lost(e) => {
                tracing::warn!(shard, "lost the lease: {e}");
                held.remove(&shard);
                c.metrics.lease_moves.fetch_add(1, Ordering::Relaxed);
            }
            Step::Release(r) => {
                held.remove(&shard);
                release.push((shard, r));
            }
            // Kept as it was: tried again at the next tick (the lease may expire meanwhile;
            // then the update fails and the shard is given up).
            Step::TimedOut | Step::Nothing => {}
        }
    }
    // Feeds of shards given up stop before their leases go, so the next holder starts
    // after them (the chain would refuse an interleaving anyway).
    if sweep || held_shards(c) != before {
        reconcile(c, agg);
    }
    for (shard, rev) in release {
        tracing::info!(shard, "giving up the lease");
        let _ = tokio::time::timeout(
            budget,
            c.leases.delete_expect_revision(lease_key(shard), Some(rev)),
        )
        .await;
        c.metrics.lease_moves.fetch_add(1, Ordering::Relaxed);
    }
    let n = lock(&c.held).len();
    c.metrics.shards_held.store(n as u64, Ordering::Relaxed);
}

/// What a tick did to one shard's lease.
enum Step {
    /// Held, at this revision.
    Holds(u64),
    /// Was ours, is not any more.
    Lost(String),
    /// Ours, to give up (another member ranks first now).
    Release(u64),
    /// NATS did not answer in time.
    TimedOut,
    /// Not ours, not wanted.
    Nothing,
}

async fn lease_step(c: &Cluster, shard: u32, want: bool, rev: Option<u64>) -> Step {
    let key = lease_key(shard);
    let value: bytes::Bytes = c.node.as_bytes().to_vec().into();
    match (want, rev) {
        (true, Some(rev)) => match c.leases.update(&key, value, rev).await {
            Ok(rev) => Step::Holds(rev),
            Err(e) => match our_lease(c, shard).await {
                Some(rev) => Step::Holds(rev),
                None => Step::Lost(e.to_string()),
            },
        },
        (true, None) => match c.leases.create(&key, value).await {
            Ok(rev) => Step::Holds(rev),
            Err(_) => our_lease(c, shard).await.map_or(Step::Nothing, Step::Holds),
        },
        (false, Some(rev)) => Step::Release(rev),
        (false, None) => Step::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_shards_of_the_member_that_left() {
        let three: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let two: Vec<String> = ["a", "c"].iter().map(|s| s.to_string()).collect();
        let mut per_node: HashMap<String, u32> = HashMap::new();
        for shard in 0..64 {
            let before = owner(shard, &three).cloned().unwrap_or_default();
            let after = owner(shard, &two).cloned().unwrap_or_default();
            *per_node.entry(before.clone()).or_default() += 1;
            if before != "b" {
                assert_eq!(before, after, "shard {shard} moved without need");
            } else {
                assert_ne!(after, "b");
            }
        }
        // Spread over all three (64 shards: each gets some).
        assert_eq!(per_node.len(), 3, "{per_node:?}");
        assert!(per_node.values().all(|&n| n >= 10), "{per_node:?}");
    }

    #[test]
    fn a_feed_always_hashes_to_the_same_shard() {
        let k = Key::from_bytes([7; 32]);
        assert_eq!(shard_of(&k, 64), shard_of(&k, 64));
        assert!(shard_of(&k, 64) < 64);
        assert_eq!(shard_of(&k, 1), 0);
    }
}
