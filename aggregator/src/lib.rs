//! apiary-aggregator: follow Hyperbees and serve them as one searchable feed over HTTP.
//!
//! The `apiary-aggregator` binary is [`run`] over a parsed [`Cli`]. The parts it is made of
//! are here, so they can be tested and driven in one process where a process is not the
//! point: [`Config`] (the config file and the flags over it), [`Aggregator`] (the follow list,
//! the feed tasks, the index, replication and the DHT), [`router`] (the HTTP API) and
//! [`serve`] (all of it behind its listeners until a signal).
//!
//! ```no_run
//! # async fn example() -> apiary_aggregator::Result<()> {
//! use apiary_aggregator::{Aggregator, Config};
//!
//! // An aggregator on its own data directory, without the DHT.
//! let cfg = Config {
//!     data_dir: "/tmp/apiary-example".into(),
//!     dht: false,
//!     ..Config::default()
//! };
//! let agg = Aggregator::open(cfg).await?;
//! // Its HTTP API; the handlers read the client's address, so serve it with
//! // `into_make_service_with_connect_info::<std::net::SocketAddr>()`.
//! let app = apiary_aggregator::router(agg.clone());
//! # drop(app);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_core::replicate::{Replica, Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_core::Key;
use tokio::sync::Semaphore;
use tracing::Instrument;

mod api;
mod backup;
mod cli;
mod cluster;
mod config;
mod discovery;
mod error;
mod extract;
mod first_pass;
mod follow;
mod health;
mod http;
mod index;
mod ingest;
mod lock;
mod metrics;
mod openapi;
mod page;
mod peers;
mod priority;
mod retention;
mod serve;
mod state;
mod verify;

pub use cli::{Cli, Command};
pub use cluster::{ClusterConfig, Role};
pub use config::{Backfill, BackfillSetting, Config, FollowConfig, LogFormat, Retention};
pub use error::{Code, Error, Result};
pub use http::router;
pub use serve::serve;

use crate::discovery::Discovery;
use crate::health::Health;
use crate::index::Index;
use crate::peers::PeerPool;
use crate::state::State;

/// The `apiary-aggregator` process: the configuration from `cli`, the logs, then the server
/// (or the subcommand). Returns the exit code: 0, 2 for what the user must fix (the
/// configuration, a refused request), 1 otherwise.
pub fn run(cli: Cli) -> ExitCode {
    if let Some(Command::Verify { bundle, key }) = &cli.command {
        return verify::run(bundle, key);
    }
    let cfg = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    cli::init_logs(&cfg);
    // The HTTP API's runtime first, at the process's priority; then ingest's, lower, and
    // the main thread, which opens the store and the index (priority.rs).
    let low = priority::ingest_priority(cfg.ingest_nice);
    let runtimes = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("apiary-http")
        .build()
        .and_then(|http| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .on_thread_start(move || priority::set_this_thread(low))
                .build()?;
            Ok((http, rt))
        });
    let (http_rt, rt) = match runtimes {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    priority::set_this_thread(low);
    let res = match cli.command {
        Some(Command::Backup { dir }) => rt.block_on(backup::request(&cfg, &dir)),
        Some(Command::Verify { .. }) => Ok(()),
        None => rt.block_on(serve::serve_on(cfg, Some(http_rt.handle().clone()))),
    };
    // Tasks still running (open HTTP streams, the bridge's pipes) must not hold up the exit.
    http_rt.shutdown_timeout(Duration::from_secs(5));
    rt.shutdown_timeout(Duration::from_secs(5));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// A followed feed's ingest task, and its replica.
struct FeedTask {
    task: tokio::task::JoinHandle<()>,
    replica: Arc<Replica>,
}

/// Process-wide counters for /metrics.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Log entries turned into index ops.
    pub entries_ingested: AtomicU64,
    /// Block payloads dropped once indexed (`retention = "index-only"`).
    pub blocks_dropped: AtomicU64,
    /// Ingest errors.
    pub ingest_errors: AtomicU64,
}

/// The aggregator: the followed feeds and their ingest tasks, replication (known addresses,
/// publishers that dial in, the DHT), the index, and the health of the write path.
///
/// [`Aggregator::open`] resumes every follow of its data directory; following, unfollowing
/// and a feed's status are in `follow.rs`, a feed's ingest loop in `ingest.rs`.
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
    /// Cluster mode: the NATS side (`None`: one process on its own).
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    /// The open file limit and the gates of our listeners (for /metrics), once serving.
    net: Mutex<(
        Option<apiary_net::fdlimit::FdLimit>,
        Vec<Arc<apiary_net::gate::Gate>>,
    )>,
    /// The runtime of ingest (the one it was opened on): the feeds' tasks start there also
    /// when a follow comes from the HTTP API, whose runtime has the higher priority
    /// (`priority.rs`).
    rt: tokio::runtime::Handle,
    /// Held while the data directory is ours.
    _lock: lock::DirLock,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aggregator")
    }
}

impl Aggregator {
    /// Opens the data directory and resumes every persisted follow.
    pub async fn open(cfg: Config) -> Result<Arc<Self>> {
        cfg.validate()?;
        // Before anything in it is opened: another aggregator on it is `Error::Locked`.
        let lock = lock::lock(&cfg.data_dir)?;
        let db = sled::Config::new()
            .path(cfg.data_dir.join("state"))
            .cache_capacity(cfg.state_cache_mb as u64 * 1024 * 1024)
            .open()?;
        // Index-only: block payloads in spool files, deleted whole once indexed (sled keeps
        // the space of what is removed from it).
        let store = match cfg.retention {
            Retention::Replica => Store::from_db(db.clone())?,
            Retention::IndexOnly => Store::with_spool(db.clone(), cfg.data_dir.join("spool"))?,
        };
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
            ReplicatorOptions {
                replica: apiary_core::replicate::ReplicaOptions {
                    serve_blocks: cfg.reshare,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        let cluster = if cfg.cluster.enabled {
            let id = Key::from_bytes(apiary_core::crypto::KeyPair::from_seed(&seed).public_key());
            Some(cluster::Cluster::connect(&cfg.cluster, &id).await?)
        } else {
            None
        };
        let discovery = Discovery::start(&cfg, seed, rep.clone());
        let backfill = cfg.backfill()?;
        let rt = tokio::runtime::Handle::current();
        let agg = Arc::new(Aggregator {
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_ingest.max(1))),
            pool: PeerPool::new(rep.clone(), rt.clone()),
            rt,
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
            cluster,
            net: Mutex::new((None, Vec::new())),
            _lock: lock,
        });
        for f in agg.cfg.follow.clone() {
            let key = Key::parse(&f.key)?;
            agg.follow(key, f.peers).await?;
        }
        match &agg.cluster {
            // Feeds start as this node's shards are leased (cluster/shards.rs).
            Some(c) => c.start(Arc::downgrade(&agg)),
            None => {
                for (key, f) in agg.state.follows()? {
                    agg.start(key, &f.peers)?;
                }
            }
        }
        if agg.cfg.retention == Retention::IndexOnly {
            tokio::spawn(
                retention::drop_indexed_blocks(Arc::downgrade(&agg))
                    .instrument(tracing::info_span!("retention")),
            );
        }
        tokio::spawn(
            crate::health::watch_disk_and_store(
                Arc::downgrade(&agg),
                agg.cfg.data_dir.clone(),
                agg.cfg.min_free_disk_mb,
            )
            .instrument(tracing::info_span!("health")),
        );
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
        *l = (apiary_core::tid::now_micros() as i64).max(*l + 1);
        *l
    }
}
