//! Following feeds: one task per feed that brings the index up to the bee's newest version,
//! in log order, from the feed's committed checkpoint, then follows live appends.
//!
//! Per step: prefetch a chunk of blocks in parallel, turn each log entry into an index op
//! (put = upsert by (feed, key), del = delete), and send the chunk with its checkpoint to the
//! index writer in one batch. A new fork (the author truncated) purges the feed's entries and
//! starts again from scratch. A slow or dead peer only stalls its own feed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_core::bee::{Bee, OpKind};
use apiary_core::replicate::{Replica, Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_core::Key;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::config::{Backfill, Config};
use crate::discovery::Discovery;
use crate::error::{Error, Result};
use crate::health::Health;
use crate::index::{EntryDoc, Index, IndexOp};
use crate::ingest;
use crate::peers::PeerPool;
use crate::state::{Follow, State};

const CHUNK: u64 = 4096;
/// Block requests in flight per range (a chunk and its prefetch: twice this per feed).
/// JS hypercore servers spend more CPU per block the more requests wait on them (measured:
/// 3.8 s per 100k blocks at 64 in flight, 4.9 s at 512, 7.6 s at 1024); ours is at 95% of
/// its best from 128 on.
const RANGE_PARALLEL: usize = 64;

struct FeedTask {
    task: tokio::task::JoinHandle<()>,
    replica: Arc<Replica>,
}

/// Process-wide counters for /metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Log entries turned into index ops.
    pub entries_ingested: AtomicU64,
    /// Ingest errors.
    pub ingest_errors: AtomicU64,
}

/// The aggregator: follows, replication, index.
pub struct Aggregator {
    /// Configuration.
    pub cfg: Config,
    rep: Replicator,
    state: State,
    /// The search index.
    pub index: Arc<Index>,
    /// Whether ingest can write (reads are served regardless).
    pub health: Arc<Health>,
    pool: Arc<PeerPool>,
    /// Peers found by key on the DHT.
    pub discovery: Discovery,
    feeds: Mutex<HashMap<Key, FeedTask>>,
    permits: Arc<Semaphore>,
    backfill: Backfill,
    last_seen: Mutex<i64>,
    /// Counters.
    pub metrics: Metrics,
    /// The open file limit and the gates of our listeners (for /metrics), once serving.
    net: Mutex<(
        Option<apiary_net::fdlimit::FdLimit>,
        Vec<Arc<apiary_net::gate::Gate>>,
    )>,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aggregator")
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Aggregator {
    /// Opens the data directory and resumes every persisted follow.
    pub async fn open(cfg: Config) -> Result<Arc<Self>> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)?;
        let db = sled::Config::new()
            .path(cfg.data_dir.join("state"))
            .cache_capacity(128 * 1024 * 1024)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.to_string().contains("lock")
                        || io.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    Error::Config(format!(
                        "the data directory {} is in use by another apiary-aggregator",
                        cfg.data_dir.display()
                    ))
                }
                e => Error::Store(e),
            })?;
        let store = Store::from_db(db.clone())?;
        let state = State::open(&db)?;
        let health = Arc::new(Health::default());
        let index = Index::open(
            &cfg.data_dir.join("index"),
            cfg.index_memory_mb,
            Duration::from_millis(cfg.commit_interval_ms),
            health.clone(),
        )?;
        // One identity for TCP and the DHT, stable across restarts.
        let seed = state.identity_seed()?;
        let rep = Replicator::with_identity(
            store,
            apiary_core::crypto::KeyPair::from_seed(&seed),
            ReplicatorOptions::default(),
        );
        let discovery = Discovery::start(&cfg, seed, rep.clone());
        let backfill = cfg.backfill()?;
        let agg = Arc::new(Aggregator {
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_ingest.max(1))),
            pool: PeerPool::new(rep.clone()),
            discovery,
            cfg,
            rep,
            state,
            index,
            health,
            feeds: Mutex::new(HashMap::new()),
            backfill,
            last_seen: Mutex::new(0),
            metrics: Metrics::default(),
            net: Mutex::new((None, Vec::new())),
        });
        for f in agg.cfg.follow.clone() {
            let key = Key::parse(&f.key)?;
            agg.follow(key, f.peers).await?;
        }
        for (key, f) in agg.state.follows()? {
            agg.start(key, &f.peers)?;
        }
        tokio::spawn(watch_disk_and_store(
            Arc::downgrade(&agg),
            agg.cfg.data_dir.clone(),
            agg.cfg.min_free_disk_mb,
        ));
        Ok(agg)
    }

    /// Records the open file limit and the listeners' gates, for /metrics.
    pub fn set_net(
        &self,
        fd: apiary_net::fdlimit::FdLimit,
        gates: Vec<Arc<apiary_net::gate::Gate>>,
    ) {
        *self.net.lock().unwrap_or_else(|p| p.into_inner()) = (Some(fd), gates);
    }

    /// The open file limit and the listeners' gates.
    pub fn net(
        &self,
    ) -> (
        Option<apiary_net::fdlimit::FdLimit>,
        Vec<Arc<apiary_net::gate::Gate>>,
    ) {
        self.net.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The replicator (for listening).
    pub fn replicator(&self) -> &Replicator {
        &self.rep
    }

    /// A strictly increasing "seen at" clock, so entries seen together still sort.
    fn seen_now(&self) -> i64 {
        let mut l = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        *l = now_micros().max(*l + 1);
        *l
    }

    /// Follows a feed (or adds peers to a followed one). Returns true if it is new.
    pub async fn follow(self: &Arc<Self>, key: Key, peers: Vec<String>) -> Result<bool> {
        for p in &peers {
            check_peer(p)?;
        }
        let mut f = self.state.follow(&key)?.unwrap_or_else(|| Follow {
            peers: Vec::new(),
            added_at: ingest::format_time(now_micros()),
        });
        for p in peers {
            if !f.peers.contains(&p) {
                f.peers.push(p);
            }
        }
        let new = self.state.put_follow(&key, &f)?;
        self.start(key, &f.peers)?;
        Ok(new)
    }

    fn start(self: &Arc<Self>, key: Key, peers: &[String]) -> Result<()> {
        let replica = self.rep.replica(key)?;
        for p in peers {
            self.pool.want(p, replica.clone());
        }
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if feeds.contains_key(&key) {
            return Ok(());
        }
        self.discovery.join(&key);
        // A peer already connected (a publisher that dialed in, a DHT peer found for another
        // bee) may hold this one too: ask it now rather than on its next connection.
        for c in self.rep.connections() {
            let r = replica.clone();
            tokio::spawn(async move { c.open(&r).await });
        }
        let me = self.clone();
        let r = replica.clone();
        let task = tokio::spawn(async move { me.run_feed(r).await });
        feeds.insert(key, FeedTask { task, replica });
        Ok(())
    }

    /// Unfollows a feed and purges everything of it: entries, checkpoint, blocks, state.
    pub async fn unfollow(&self, key: &Key) -> Result<bool> {
        let known = self.state.follow(key)?.is_some();
        if let Some(t) = self
            .feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
        {
            t.task.abort();
        }
        self.pool.unwant(key);
        self.discovery.leave(key);
        self.rep.remove(key).await;
        self.index
            .submit_and_wait(vec![IndexOp::Purge { feed: key.to_z32() }])
            .await?;
        self.rep.store().remove_core(key)?;
        self.state.remove(key)?;
        Ok(known)
    }

    /// Followed keys.
    pub fn followed(&self) -> Result<Vec<Key>> {
        Ok(self.state.follows()?.into_iter().map(|(k, _)| k).collect())
    }

    /// Status of one feed, or `None` if not followed.
    pub fn status(&self, key: &Key) -> Result<Option<Value>> {
        let Some(f) = self.state.follow(key)? else {
            return Ok(None);
        };
        let replica = self
            .feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|t| t.replica.clone());
        let z = key.to_z32();
        let cp = self.index.checkpoint(&z);
        let c = self.state.counters(key);
        let (length, fork, remote, blocks, bytes, links) = match &replica {
            Some(r) => (
                r.length(),
                r.fork(),
                r.remote_length(),
                r.stats.blocks.load(Ordering::Relaxed),
                r.stats.bytes.load(Ordering::Relaxed),
                r.peers(),
            ),
            None => (0, 0, 0, 0, 0, Vec::new()),
        };
        let connected: Vec<String> = links.iter().map(|p| p.label.clone()).collect();
        // Known addresses first (connected or not), then every other peer serving the feed,
        // each with how it was found.
        let mut peers: Vec<Value> = self
            .pool
            .peers_of(key)
            .into_iter()
            .map(|(a, up)| json!({"address": a, "via": "direct", "connected": up}))
            .collect();
        for l in &links {
            let known = l.origin == apiary_core::wire::Origin::Dialed
                && peers.iter().any(|p| p["address"] == l.label.as_str());
            if !known {
                peers.push(json!({
                    "address": l.label,
                    "via": l.origin.as_str(),
                    "connected": true,
                    "publicKey": hex::encode(l.remote_public_key),
                }));
            }
        }
        Ok(Some(json!({
            "key": z,
            "hex": key.to_hex(),
            "url": key.to_url(),
            "followedAt": f.added_at,
            "length": length,
            "remoteLength": remote.max(length),
            "fork": fork,
            "indexedVersion": cp.version,
            "lag": remote.max(length).saturating_sub(cp.version.max(1)),
            "peers": peers,
            "connectedPeers": connected,
            "blocksDownloaded": blocks,
            "bytesDownloaded": bytes,
            "skipped": {"tooLarge": c.skipped_too_large, "notJson": c.skipped_not_json},
            "errors": c.errors,
            "lastError": c.last_error,
        })))
    }

    fn record_error(&self, key: &Key, e: &Error) {
        self.metrics.ingest_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(feed = %key, "ingest: {e}");
        let _ = self.state.update_counters(key, |c| {
            c.errors += 1;
            c.last_error = Some(e.to_string());
        });
    }

    async fn run_feed(self: Arc<Self>, replica: Arc<Replica>) {
        let key = *replica.key();
        let feed = key.to_z32();
        let mut backoff = Duration::from_millis(500);
        let bee = Bee::with_cache(replica.clone(), 64);
        // What we have sent to the index (committed or about to be), in `epoch`.
        let mut cp = self.index.checkpoint(&feed);
        let mut epoch = self.health.epoch();
        let mut head = replica.subscribe();
        loop {
            // Nothing is fetched or indexed while the write path is degraded.
            while self.health.is_degraded() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if self.health.epoch() != epoch {
                // Ops not committed were dropped: start again from what is committed.
                epoch = self.health.epoch();
                cp = self.index.checkpoint(&feed);
                tracing::info!(%feed, version = cp.version, "re-reading from the committed checkpoint");
            }
            head.borrow_and_update();
            match self
                .ingest_until_caught_up(&replica, &bee, &mut cp, epoch)
                .await
            {
                Ok(()) => {
                    backoff = Duration::from_millis(500);
                    let caught_up =
                        replica.length() <= cp.version.max(1) && replica.fork() == cp.fork;
                    if caught_up && self.health.epoch() == epoch {
                        // Caught up: wait for a new length (or check again now and then).
                        let _ = tokio::time::timeout(Duration::from_secs(30), head.changed()).await;
                    }
                }
                Err(e) => {
                    self.record_error(&key, &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
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
        epoch: u64,
    ) -> Result<()> {
        let key = *replica.key();
        let feed = key.to_z32();
        if replica.length() == 0 {
            replica.update(Duration::from_secs(10)).await?;
        }
        // Stopped with the feed (unfollow aborts the task, dropping this).
        let mut _prefetch: Option<AbortOnDrop> = None;
        // On a feed's first pass the index holds none of its entries: keys seen so far in
        // this pass are the only ones a put may replace or a del remove.
        let mut fresh = FirstPass::new(cp.version == 0);
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
                tracing::info!(%feed, fork, "feed was truncated by its author: reindexing it");
                ops.push(IndexOp::Purge { feed: feed.clone() });
                *cp = crate::index::Checkpoint { version: 0, fork };
                fresh = FirstPass::new(true);
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
                p.join().await;
            }
            // Fetch first, without a permit: a slow or dead peer must not hold up other feeds.
            replica.download_range(start, end, RANGE_PARALLEL).await?;
            // Fetch the next chunk while this one is indexed (blocks already held cost nothing).
            let next_end = length.min(end + CHUNK);
            if next_end > end {
                let r = replica.clone();
                _prefetch = Some(AbortOnDrop(Some(tokio::spawn(async move {
                    let _ = r.download_range(end, next_end, RANGE_PARALLEL).await;
                }))));
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
                let mut delete = |ops: &mut Vec<IndexOp>, key: Vec<u8>| {
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
                        let extracted = ingest::extract(&value);
                        // The author's JSON text as it is (it parsed, so it is UTF-8):
                        // writing the value out again cost more than parsing it.
                        let text = match String::from_utf8(raw) {
                            Ok(t) if !t.is_empty() => t,
                            _ => value.to_string(),
                        };
                        let replace = fresh.put(&key);
                        let doc = Box::new(EntryDoc {
                            feed: feed.clone(),
                            key,
                            seq,
                            version: seq + 1,
                            seen_at: self.seen_now(),
                            extracted,
                            value: text,
                        });
                        ops.push(if replace {
                            IndexOp::Upsert(doc)
                        } else {
                            IndexOp::Insert(doc)
                        });
                    }
                }
            }
            ops.push(IndexOp::Checkpoint {
                feed: feed.clone(),
                version: end,
                fork,
            });
            self.metrics
                .entries_ingested
                .fetch_add(end - start, Ordering::Relaxed);
            self.index.submit(ops, end == length, epoch).await?;
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

/// Every 2 s: pauses ingest while the data directory has less than `min_free_mb` free (the
/// block store cannot recover from a failed write without a restart, so it must not reach
/// one), and ends the process, after a grace period for reads, when the store did fail.
async fn watch_disk_and_store(
    agg: std::sync::Weak<Aggregator>,
    dir: std::path::PathBuf,
    min_free_mb: u64,
) {
    const GRACE: Duration = Duration::from_secs(30);
    let mut store_failed_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Some(agg) = agg.upgrade() else { return };
        let free_mb = fs4::available_space(&dir).ok().map(|b| b / (1024 * 1024));
        agg.health.set(
            "disk",
            free_mb.filter(|f| *f < min_free_mb).map(|f| {
                format!(
                    "{f} MB free in {} (min_free_disk_mb = {min_free_mb}): ingest paused",
                    dir.display()
                )
            }),
        );
        if let Some(e) = agg.rep.store().write_error() {
            let at = *store_failed_at.get_or_insert_with(tokio::time::Instant::now);
            agg.health.set(
                "store",
                Some(format!("the block store failed to write ({e}); it needs a restart, which happens in {} s", GRACE.as_secs())),
            );
            if at.elapsed() >= GRACE {
                tracing::error!("the block store failed to write ({e}): exiting so that a restart reopens it; ingest resumes from the committed checkpoints");
                eprintln!("fatal: the block store failed to write ({e}); restart to reopen it");
                std::process::exit(75); // EX_TEMPFAIL: a restart fixes it
            }
        }
    }
}

/// Keys indexed so far in a feed's first pass (when the index holds nothing else of it).
/// Past [`FirstPass::MAX_KEYS`] it gives up and every put replaces, every del deletes.
struct FirstPass(Option<std::collections::HashSet<Vec<u8>>>);

impl FirstPass {
    const MAX_KEYS: usize = 1 << 20;

    fn new(first: bool) -> Self {
        FirstPass(first.then(Default::default))
    }

    /// A put of `key`: whether an older entry of it may be indexed.
    fn put(&mut self, key: &[u8]) -> bool {
        match &mut self.0 {
            Some(keys) if keys.len() < Self::MAX_KEYS => !keys.insert(key.to_vec()),
            Some(_) => {
                self.0 = None;
                true
            }
            None => true,
        }
    }

    /// A del of `key` (or a value not indexed): whether an entry of it may be indexed.
    fn may_be_indexed(&mut self, key: &[u8]) -> bool {
        match &mut self.0 {
            Some(keys) => keys.remove(key),
            None => true,
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    /// Waits for the task to end.
    async fn join(mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// A peer address must be `host:port`: a DNS name, an IPv4 address or a bracketed IPv6
/// address, and a port from 1 to 65535 (anything else would be dialed forever in vain).
pub fn check_peer(p: &str) -> Result<()> {
    let ok = p.len() <= 255
        && p.rsplit_once(':').is_some_and(|(h, port)| {
            let host_ok = match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => {
                    !h.is_empty()
                        && h.split('.').all(|label| {
                            !label.is_empty()
                                && label.len() <= 63
                                && !label.starts_with('-')
                                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        })
                }
            };
            host_ok && port.parse::<u16>().is_ok_and(|n| n > 0)
        });
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!("peer {p:?} is not host:port")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::check_peer;

    #[test]
    fn peers_are_host_and_port() {
        for ok in [
            "127.0.0.1:7702",
            "pub.example.org:1",
            "[::1]:7702",
            "localhost:65535",
        ] {
            assert!(check_peer(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "host",
            ":7702",
            "host:0",
            "host:70000",
            "<img src=x onerror=1>:9",
            "a b:1",
            "[nope]:1",
            "-bad.example:1",
            "a..b:1",
        ] {
            assert!(check_peer(bad).is_err(), "{bad}");
        }
    }
}
