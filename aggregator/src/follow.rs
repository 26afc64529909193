//! The aggregator: the follow list (persisted in sled), one task per followed feed (its
//! ingest loop is in `ingest.rs`), replication through known addresses (`peers.rs`), the DHT
//! (`discovery.rs`) and publishers that dial in, and each feed's status.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_core::replicate::{Replica, Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_core::Key;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::config::{Backfill, Config};
use crate::discovery::Discovery;
use crate::error::{Error, Result};
use crate::extract;
use crate::health::Health;
use crate::index::{Index, IndexOp};
use crate::peers::PeerPool;
use crate::state::{Follow, State};

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
    pub(crate) cfg: Config,
    pub(crate) rep: Replicator,
    pub(crate) state: State,
    /// The search index.
    pub(crate) index: Arc<Index>,
    /// Whether ingest can write (reads are served regardless).
    pub(crate) health: Arc<Health>,
    pool: Arc<PeerPool>,
    /// Peers found by key on the DHT.
    pub(crate) discovery: Discovery,
    feeds: Mutex<HashMap<Key, FeedTask>>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) backfill: Backfill,
    last_seen: Mutex<i64>,
    /// Counters.
    pub(crate) metrics: Metrics,
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
        tokio::spawn(crate::health::watch_disk_and_store(
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
    pub(crate) fn seen_now(&self) -> i64 {
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
            added_at: extract::format_time(now_micros()),
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
