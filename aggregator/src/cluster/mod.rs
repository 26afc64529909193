//! Cluster mode (`[cluster]`, off by default): several aggregator processes over a NATS
//! JetStream cluster.
//!
//! ```text
//! follows bucket (KV) ──watch──► every node: its follow list (mirrored into `state`)
//! members bucket (KV, TTL) ◄─ each follower's heartbeat
//! leases bucket (KV, TTL)  ◄─ each follower's shards (rendezvous hashing over live members)
//!
//! follower: feed task per followed feed of its shards ─► entry log (stream, one chain per feed)
//! indexer:  entry log ─► ordered consumer ─► index writer (stream sequence committed with it)
//! ```
//!
//! - [`log`]: the stream's message format and each feed's chain (exactly once by
//!   construction: a link is stored only after the one its writer read).
//! - [`shards`]: membership, leases, which feeds this node follows.
//! - [`indexer`]: the stream into the local index; its checkpoint is the stream sequence,
//!   committed in the same tantivy commit as the entries (the `~stream` checkpoint).
//!
//! The follow list lives in the `follows` bucket: `POST /v1/feeds` on any node writes it,
//! `DELETE` removes the key and ends the feed's chain with a tombstone (indexers purge the
//! feed when they reach it); every node applies both through its watch.

pub mod indexer;
pub mod log;
pub mod shards;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use serde::Deserialize;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::Aggregator;

/// The pseudo-feed under which an indexer's stream sequence is committed.
pub const STREAM_CHECKPOINT: &str = "~stream";

/// A node's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Replicates the feeds of its shards and publishes their ops to the entry log.
    Follower,
    /// Consumes the entry log into its index and serves reads.
    Indexer,
}

/// `[cluster]` in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Cluster mode on.
    pub enabled: bool,
    /// NATS server URLs (any of the cluster's nodes).
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster (empty: from the node's identity key).
    pub node: String,
    /// Roles of this node.
    pub roles: Vec<Role>,
    /// Prefix of the stream, its subjects and the KV buckets (`[a-z0-9_-]`).
    pub name: String,
    /// Replicas of the stream and buckets (the NATS cluster's size, at most 5).
    pub replicas: usize,
    /// Virtual shards the feeds hash to.
    pub shards: u32,
    /// A follower that stops renewing loses its leases after this long.
    pub lease_ttl_ms: u64,
    /// How long the entry log keeps links, in hours (0: for ever). A late indexer builds its
    /// replica from the stream, so this bounds how late it may join.
    pub log_max_age_hours: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            nats: vec!["nats://127.0.0.1:4222".into()],
            node: String::new(),
            roles: vec![Role::Follower, Role::Indexer],
            name: "apiary".into(),
            replicas: 3,
            shards: 64,
            lease_ttl_ms: 6000,
            log_max_age_hours: 0,
        }
    }
}

impl ClusterConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let bad = |m: &str| Err(Error::Config(format!("cluster: {m}")));
        if self.nats.is_empty() {
            return bad("nats must list at least one server");
        }
        if self.roles.is_empty() {
            return bad("roles must name follower, indexer or both");
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 32
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if !name_ok(&self.name) {
            return bad("name must be 1 to 32 of a-z, 0-9, - and _");
        }
        if !self.node.is_empty() && !name_ok(&self.node) {
            return bad("node must be 1 to 32 of a-z, 0-9, - and _");
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("replicas must be from 1 to 5");
        }
        if !(1..=4096).contains(&self.shards) {
            return bad("shards must be from 1 to 4096");
        }
        if self.lease_ttl_ms < 1000 {
            return bad("lease_ttl_ms must be at least 1000");
        }
        Ok(())
    }

    fn has(&self, r: Role) -> bool {
        self.roles.contains(&r)
    }
}

/// Counters of the cluster, for /metrics.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// Shards this node took or gave up.
    pub lease_moves: AtomicU64,
    /// Shards held now.
    pub shards_held: AtomicU64,
    /// Links this node published.
    pub links_published: AtomicU64,
    /// Links this node's indexer applied.
    pub links_applied: AtomicU64,
    /// The stream's last sequence, as last seen.
    pub stream_last: AtomicU64,
}

/// The cluster handle of a node.
pub struct Cluster {
    /// Configuration.
    pub cfg: ClusterConfig,
    /// This node's name.
    pub node: String,
    js: jetstream::Context,
    stream: stream::Stream,
    follows: kv::Store,
    members: kv::Store,
    leases: kv::Store,
    /// Each feed's chain as this node's feed task last knew it.
    tips: Mutex<HashMap<String, log::Tip>>,
    /// Members → when their heartbeat was last seen.
    seen: Mutex<HashMap<String, std::time::Instant>>,
    /// Shards this node holds → the revision of its lease.
    held: Mutex<HashMap<u32, u64>>,
    /// Shard → the node holding it, as last seen in the leases bucket.
    holders: Mutex<HashMap<u32, String>>,
    /// Counters.
    pub metrics: ClusterMetrics,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({})", self.node)
    }
}

impl Cluster {
    /// Connects to NATS and makes sure the stream and buckets exist.
    pub async fn connect(cfg: &ClusterConfig, identity: &apiary_core::Key) -> Result<Arc<Self>> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            Error::Unavailable(format!("cluster: {what}: {e}"))
        };
        let node = if cfg.node.is_empty() {
            format!("agg-{}", &identity.to_hex()[..12])
        } else {
            cfg.node.clone()
        };
        let client = async_nats::ConnectOptions::new()
            .name(format!("apiary-aggregator {node}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(cfg.nats.clone())
            .await
            .map_err(|e| unavailable("connecting to NATS", &e))?;
        let js = jetstream::new(client);
        let name = &cfg.name;
        let retry = |n: u32| Duration::from_millis(250 * u64::from(n.min(20)));
        // The meta leader may still be elected when we start: try for a while.
        let mut attempt = 0;
        let stream = loop {
            let max_age = Duration::from_secs(cfg.log_max_age_hours * 3600);
            let r = js
                .get_or_create_stream(stream::Config {
                    name: format!("{name}-entries"),
                    subjects: vec![format!("{name}.entries.>")],
                    num_replicas: cfg.replicas,
                    storage: stream::StorageType::File,
                    max_age,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(s) => break s,
                Err(e) if attempt < 60 => {
                    tracing::info!("cluster: the entry log is not ready yet: {e}");
                    attempt += 1;
                    tokio::time::sleep(retry(attempt)).await;
                }
                Err(e) => return Err(unavailable("the entry log", &e)),
            }
        };
        let ttl = Duration::from_millis(cfg.lease_ttl_ms);
        let follows = bucket(&js, format!("{name}-follows"), cfg.replicas, None).await?;
        let members = bucket(&js, format!("{name}-members"), cfg.replicas, Some(ttl)).await?;
        let leases = bucket(&js, format!("{name}-leases"), cfg.replicas, Some(ttl)).await?;
        Ok(Arc::new(Cluster {
            cfg: cfg.clone(),
            node,
            js,
            stream,
            follows,
            members,
            leases,
            tips: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
            metrics: ClusterMetrics::default(),
        }))
    }

    /// Starts this node's tasks: the follow list's watch, then membership and leases
    /// (followers) and the consumer (indexers).
    pub fn start(self: &Arc<Self>, agg: Weak<Aggregator>) {
        let me = self.clone();
        tokio::spawn(
            async move {
                shards::run(me, agg).await;
            }
            .instrument(tracing::info_span!("cluster", node = %self.node)),
        );
    }

    /// Whether this node publishes feeds.
    pub fn is_follower(&self) -> bool {
        self.cfg.has(Role::Follower)
    }

    /// Whether this node indexes the entry log.
    pub fn is_indexer(&self) -> bool {
        self.cfg.has(Role::Indexer)
    }

    /// The subject prefix of the entry log.
    fn prefix(&self) -> String {
        format!("{}.entries", self.cfg.name)
    }

    /// The checkpoint a feed task resumes from: the end of the feed's chain.
    pub async fn resume(&self, feed: &str) -> Result<crate::index::Checkpoint> {
        let tip = log::tip(&self.stream, &self.prefix(), feed).await?;
        lock(&self.tips).insert(feed.to_owned(), tip);
        Ok(tip.cp)
    }

    /// Publishes one ingest step of a feed after the chain's end its task last read.
    pub async fn publish(&self, feed: &str, ops: Vec<crate::index::IndexOp>) -> Result<()> {
        let mut tip = lock(&self.tips).get(feed).copied().unwrap_or_default();
        let stored = &self.metrics.links_published;
        let r = log::publish(&self.js, &self.prefix(), feed, &mut tip, ops, stored).await;
        lock(&self.tips).insert(feed.to_owned(), tip);
        r
    }

    /// Where the entry log holds a feed up to, as this node's feed task last published it
    /// (every link up to there is stored, replicated, and never needs the blocks again): what
    /// `retention = "index-only"` drops blocks below on a follower.
    pub fn published(&self, feed: &str) -> crate::index::Checkpoint {
        lock(&self.tips).get(feed).map(|t| t.cp).unwrap_or_default()
    }

    /// Moves on with every link this node stores.
    pub fn published_generation(&self) -> u64 {
        self.metrics
            .links_published
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds a feed to the follow list (or its peers to a followed one).
    pub async fn follow(&self, feed: &str, f: &crate::state::Follow) -> Result<()> {
        let body = serde_json::to_vec(f).map_err(|e| Error::Internal(e.to_string()))?;
        self.follows
            .put(feed, body.into())
            .await
            .map_err(|e| Error::Unavailable(format!("cluster: writing the follow list: {e}")))?;
        Ok(())
    }

    /// Removes a feed from the follow list and ends its chain in the entry log with a
    /// tombstone: indexers purge the feed when they reach it, in stream order (a purge of
    /// the stream itself would move the running consumers of NATS 2.9 past links of other
    /// feeds), and a later follow starts a new chain after it.
    pub async fn unfollow(&self, feed: &str) -> Result<()> {
        self.follows
            .delete(feed)
            .await
            .map_err(|e| Error::Unavailable(format!("cluster: writing the follow list: {e}")))?;
        log::end(&self.js, &self.prefix(), feed).await
    }

    /// The node holding the shard of a feed, as last seen, and the shard.
    pub fn holder(&self, key: &apiary_core::Key) -> (u32, Option<String>) {
        let shard = shards::shard_of(key, self.cfg.shards);
        let h = lock(&self.holders).get(&shard).cloned();
        (shard, h)
    }
}

/// A mutex's guard, also after a panic elsewhere poisoned it (the maps it guards stay
/// consistent: every writer replaces whole entries).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A KV bucket, made if missing. Its stream is made here with the KV conventions (one
/// value per key, rollups, direct gets, discard new): the client's own `create_key_value`
/// first asks for the account's limits in a form NATS 2.9 does not answer with.
async fn bucket(
    js: &jetstream::Context,
    name: String,
    replicas: usize,
    ttl: Option<Duration>,
) -> Result<kv::Store> {
    let failed =
        |e: &dyn std::fmt::Display| Error::Unavailable(format!("cluster: bucket {name}: {e}"));
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl.unwrap_or_default(),
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| failed(&e))?;
    js.get_key_value(&name).await.map_err(|e| failed(&e))
}
