//! apiary-swarm: discovery on the hyperswarm DHT, through the official JS `hyperswarm` run
//! as a supervised Node.js child (no Rust HyperDHT is usable: see
//! `shared/protocol/DHT-BRIDGE.md`).
//!
//! Each connection hyperswarm makes arrives as a [`DhtSession`] holding the same
//! [`FramedSession`](apiary_core::wire::FramedSession) a TCP connection yields, so
//! replication does not know which carrier it runs on. Noise ends in the child; it reports
//! the remote key, the handshake hash and who initiated, which is what hypercore's
//! capabilities are bound to.
//!
//! The child is installed on first use (`npm ci` of a pinned lockfile into a cache
//! directory), restarted with backoff when it dies (every topic is joined again with the same
//! key pair; its sessions end and come back), and its stderr goes to our logs. Without
//! Node.js ≥ 20 and npm, [`Swarm::start`] still returns: the swarm stays
//! [`State::Unavailable`], says so once, and everything else goes on.
//!
//! ```no_run
//! # async fn run() {
//! use apiary_swarm::{JoinMode, Swarm, SwarmOptions};
//! use apiary_core::Key;
//!
//! let key: Key = "hyper://tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy".parse().unwrap();
//! let opts = SwarmOptions::new([7u8; 32], std::env::temp_dir());
//! let (swarm, mut sessions) = Swarm::start(opts);
//! swarm.join(key.discovery_key(), JoinMode::CLIENT);
//! while let Some(s) = sessions.recv().await {
//!     println!("found {:?} via the DHT", s.session.info);
//!     // replicator.attach(s.session) ...
//! }
//! # }
//! ```

mod bridge;
mod error;
pub mod frame;
pub mod install;
mod session;

pub use error::{Error, Result};
pub use session::{DhtSession, WINDOW};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use apiary_core::crypto::KeyPair;
use apiary_core::DiscoveryKey;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

/// How often a topic whose announce or lookup reached no DHT node is looked up again.
const RETRY_UNREACHED: Duration = Duration::from_secs(10);

/// How to run the swarm.
#[derive(Clone)]
#[non_exhaustive]
pub struct SwarmOptions {
    /// Seed of the DHT key pair (the same Ed25519 pair as our Noise identity).
    pub seed: [u8; 32],
    /// Bootstrap nodes as `host:port`; `None` uses hyperswarm's public list.
    pub bootstrap: Option<Vec<String>>,
    /// Where bridges are installed (one directory per bridge version).
    pub cache_dir: PathBuf,
    /// The `node` command.
    pub node: String,
    /// The `npm` command.
    pub npm: String,
    /// Run this bridge script instead of the installed one (development, and tests that
    /// play a hostile bridge). Nothing is installed then.
    pub script: Option<PathBuf>,
}

impl std::fmt::Debug for SwarmOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmOptions")
            .field("bootstrap", &self.bootstrap)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl SwarmOptions {
    /// Options with the public bootstrap list, `node` and `npm` from `PATH`.
    pub fn new(seed: [u8; 32], cache_dir: PathBuf) -> Self {
        SwarmOptions {
            seed,
            bootstrap: None,
            cache_dir,
            node: "node".into(),
            npm: "npm".into(),
            script: None,
        }
    }

    /// Runs `script` as the bridge (see [`SwarmOptions::script`]).
    pub fn with_script(mut self, script: PathBuf) -> Self {
        self.script = Some(script);
        self
    }

    /// Uses these bootstrap nodes (`host:port`) instead of the public list.
    pub fn with_bootstrap(mut self, nodes: Vec<String>) -> Self {
        self.bootstrap = Some(nodes);
        self
    }
}

/// Checks a bootstrap node given as `host:port` (a name or an address, a port from 1 to
/// 65535); the error says what is wrong, for a config or flag message.
pub fn check_bootstrap(node: &str) -> std::result::Result<(), String> {
    let ok = node.len() <= 255
        && node.rsplit_once(':').is_some_and(|(h, port)| {
            !h.is_empty()
                && !h.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|n| n > 0)
        });
    if ok {
        Ok(())
    } else {
        Err(format!("bootstrap node {node:?} is not host:port"))
    }
}

/// Which side of a topic to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinMode {
    /// Announce ourselves under the topic (others find us).
    pub server: bool,
    /// Look the topic up and connect to whoever announced it.
    pub client: bool,
}

impl JoinMode {
    /// Look up only (an aggregator following a bee).
    pub const CLIENT: JoinMode = JoinMode {
        server: false,
        client: true,
    };
    /// Announce only (a publisher serving a bee).
    pub const SERVER: JoinMode = JoinMode {
        server: true,
        client: false,
    };
}

/// Where the swarm is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Installing the bridge or starting the child.
    Starting,
    /// The child runs.
    Running,
    /// The child died; it is restarted after a backoff.
    Restarting,
    /// The DHT cannot run here (the reason says why); nothing is retried.
    Unavailable(String),
    /// Shut down.
    Stopped,
}

/// A snapshot of the swarm for status pages and metrics.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SwarmStats {
    /// Where it is.
    pub state: State,
    /// Our DHT public key.
    pub public_key: [u8; 32],
    /// Times the child was restarted.
    pub restarts: u64,
    /// Sessions handed over since start.
    pub sessions: u64,
    /// Topics joined.
    pub topics: usize,
    /// The child's process id.
    pub pid: Option<u32>,
    /// The child's own counters (`lookups`, `announces`, `connections`, `open`, `peers`,
    /// `firewalled`, `rss`, …), when it answered in time.
    pub bridge: Option<Value>,
}

#[derive(Debug, Default)]
struct Counters {
    restarts: AtomicU64,
    sessions: AtomicU64,
}

#[derive(Debug)]
struct Live {
    state: State,
    link: Option<mpsc::UnboundedSender<Vec<u8>>>,
    pid: Option<u32>,
    topics: HashMap<DiscoveryKey, JoinMode>,
    peers: Vec<[u8; 32]>,
    stats_waiting: HashMap<u64, oneshot::Sender<Value>>,
    next_stats: u64,
    bootstrapped: Option<Value>,
    /// Topics whose first announce/lookup by the current child reached the DHT.
    flushed: std::collections::HashSet<DiscoveryKey>,
    /// Topics whose announce/lookup reached no DHT node, each with the number of the loop
    /// that retries it every 10 s (a loop whose number is gone stops).
    unreached: HashMap<DiscoveryKey, u64>,
    next_retry_loop: u64,
}

/// State shared by the handle and the supervisor.
#[derive(Debug)]
pub(crate) struct Shared {
    live: Mutex<Live>,
    /// Bumped when `flushed` grows, to wake [`Swarm::flushed`].
    flushes: watch::Sender<u64>,
    stats: Counters,
    public_key: [u8; 32],
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, v: Value) {
        if let Some(l) = &self.live().link {
            let _ = l.send(bridge::control_frame(&v));
        }
    }

    /// A child is up: from now on commands go to it; every topic and peer is joined again.
    fn attach(&self, link: mpsc::UnboundedSender<Vec<u8>>, pid: Option<u32>) {
        let mut l = self.live();
        for (topic, mode) in &l.topics {
            let _ = link.send(bridge::control_frame(&join_cmd(topic, *mode)));
        }
        for key in &l.peers {
            let _ = link.send(bridge::control_frame(
                &json!({"op": "joinPeer", "key": hex::encode(key)}),
            ));
        }
        l.link = Some(link);
        l.pid = pid;
        l.state = State::Running;
    }

    fn detach(&self) {
        let mut l = self.live();
        l.link = None;
        l.pid = None;
        l.stats_waiting.clear();
        l.flushed.clear();
        l.unreached.clear();
    }

    /// A join's first announce or lookup reached no node: look it up again every 10 s until one
    /// does, so a DHT that comes up later is used (hyperswarm itself waits ~10 minutes). The
    /// loop does not wait for each retry's answer: a retry that fails, or never settles, in
    /// the child must not end the retries (seen in CI: "Too few nodes responded").
    fn set_unreached(self: &Arc<Self>, topic: DiscoveryKey) {
        let number = {
            let mut l = self.live();
            if l.unreached.contains_key(&topic) {
                return;
            }
            l.next_retry_loop += 1;
            let n = l.next_retry_loop;
            l.unreached.insert(topic, n);
            n
        };
        tracing::warn!(
            topic = %hex::encode(topic.as_bytes()),
            "an announce or lookup reached no DHT node; trying again every 10 s"
        );
        let me = Arc::downgrade(self);
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(RETRY_UNREACHED).await;
                    let Some(me) = me.upgrade() else { return };
                    let l = me.live();
                    // Reached, left, or the child restarted (it joins every topic again).
                    if l.unreached.get(&topic) != Some(&number) || !l.topics.contains_key(&topic) {
                        return;
                    }
                    if let Some(link) = &l.link {
                        let _ = link.send(bridge::control_frame(&json!({
                            "op": "refresh", "topic": hex::encode(topic.as_bytes())
                        })));
                    }
                }
            }
            .in_current_span(),
        );
    }

    fn set_flushed(&self, topic: DiscoveryKey) {
        let mut l = self.live();
        if l.unreached.remove(&topic).is_some() {
            tracing::info!(topic = %hex::encode(topic.as_bytes()), "the DHT is reached now");
        }
        let new = l.flushed.insert(topic);
        drop(l);
        if new {
            self.flushes.send_modify(|n| *n += 1);
        }
    }

    fn set_state(&self, s: State) {
        self.live().state = s;
    }

    fn set_bootstrapped(&self, v: &Value) {
        self.live().bootstrapped = Some(v.clone());
    }

    fn answer_stats(&self, v: &Value) {
        let id = v["id"].as_u64().unwrap_or(u64::MAX);
        if let Some(tx) = self.live().stats_waiting.remove(&id) {
            let _ = tx.send(v.clone());
        }
    }
}

fn join_cmd(topic: &DiscoveryKey, mode: JoinMode) -> Value {
    json!({"op": "join", "topic": hex::encode(topic.as_bytes()), "server": mode.server, "client": mode.client})
}

/// The handle on the swarm. Cheap to clone; the child stops when [`Swarm::shutdown`] is
/// called (or the process exits: the child leaves when its stdin closes).
#[derive(Debug, Clone)]
pub struct Swarm {
    shared: Arc<Shared>,
}

impl Swarm {
    /// Starts the supervisor (it installs the bridge if needed, in the background) and
    /// returns at once. Sessions arrive on the receiver for as long as the swarm runs.
    pub fn start(opts: SwarmOptions) -> (Swarm, mpsc::UnboundedReceiver<DhtSession>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            live: Mutex::new(Live {
                state: State::Starting,
                link: None,
                pid: None,
                topics: HashMap::new(),
                peers: Vec::new(),
                stats_waiting: HashMap::new(),
                next_stats: 1,
                bootstrapped: None,
                flushed: Default::default(),
                unreached: Default::default(),
                next_retry_loop: 0,
            }),
            flushes: watch::channel(0).0,
            stats: Counters::default(),
            public_key: KeyPair::from_seed(&opts.seed).public_key(),
            shutdown: watch::channel(false).0,
        });
        tokio::spawn(supervise(shared.clone(), opts, tx).instrument(tracing::info_span!("swarm")));
        (Swarm { shared }, rx)
    }

    /// Our DHT public key (what peers see, and what `joinPeer` dials).
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.public_key
    }

    /// Joins a topic (kept across restarts of the child). Joining again changes the mode.
    pub fn join(&self, topic: DiscoveryKey, mode: JoinMode) {
        let mut l = self.shared.live();
        l.topics.insert(topic, mode);
        if let Some(link) = &l.link {
            let _ = link.send(bridge::control_frame(&join_cmd(&topic, mode)));
        }
    }

    /// Looks a joined topic up again now, e.g. for a bee with no peer yet (hyperswarm's own
    /// refresh comes every ~10 minutes).
    pub fn refresh(&self, topic: &DiscoveryKey) {
        if self.shared.live().topics.contains_key(topic) {
            self.shared
                .send(json!({"op": "refresh", "topic": hex::encode(topic.as_bytes())}));
        }
    }

    /// Resolves once the running child's first announce (or lookup) of `topic` reached the
    /// DHT: from then on a peer looking the topic up finds us.
    pub async fn flushed(&self, topic: &DiscoveryKey) {
        let mut rx = self.shared.flushes.subscribe();
        loop {
            if self.shared.live().flushed.contains(topic) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Leaves a topic; its connections stay (other topics may use them).
    pub fn leave(&self, topic: &DiscoveryKey) {
        if self.shared.live().topics.remove(topic).is_some() {
            self.shared
                .send(json!({"op": "leave", "topic": hex::encode(topic.as_bytes())}));
        }
    }

    /// Keeps a connection to the peer with this public key (found through the DHT by key).
    pub fn join_peer(&self, public_key: [u8; 32]) {
        let mut l = self.shared.live();
        if !l.peers.contains(&public_key) {
            l.peers.push(public_key);
        }
        if let Some(link) = &l.link {
            let _ = link.send(bridge::control_frame(
                &json!({"op": "joinPeer", "key": hex::encode(public_key)}),
            ));
        }
    }

    /// Where the swarm is.
    pub fn state(&self) -> State {
        self.shared.live().state.clone()
    }

    /// A snapshot; the child's counters are asked for with a short timeout.
    pub async fn stats(&self) -> SwarmStats {
        let waiting = {
            let mut l = self.shared.live();
            match l.link.clone() {
                Some(link) => {
                    let id = l.next_stats;
                    l.next_stats += 1;
                    let (tx, rx) = oneshot::channel();
                    l.stats_waiting.insert(id, tx);
                    let _ = link.send(bridge::control_frame(&json!({"op": "stats", "id": id})));
                    Some(rx)
                }
                None => None,
            }
        };
        let bridge = match waiting {
            Some(rx) => tokio::time::timeout(Duration::from_secs(1), rx)
                .await
                .ok()
                .and_then(|r| r.ok()),
            None => None,
        };
        let l = self.shared.live();
        SwarmStats {
            state: l.state.clone(),
            public_key: self.shared.public_key,
            restarts: self.shared.stats.restarts.load(Ordering::Relaxed),
            sessions: self.shared.stats.sessions.load(Ordering::Relaxed),
            topics: l.topics.len(),
            pid: l.pid,
            bridge,
        }
    }

    /// Leaves the DHT and stops the child (waits a few seconds at most).
    pub async fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
        let mut rx = self.shared.shutdown.subscribe();
        // The supervisor sets Stopped when done; poll the state briefly.
        for _ in 0..50 {
            if matches!(self.state(), State::Stopped | State::Unavailable(_)) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }
}

async fn supervise(
    shared: Arc<Shared>,
    opts: SwarmOptions,
    sessions: mpsc::UnboundedSender<DhtSession>,
) {
    let script = match prepare(&opts).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("{e}; running without the DHT (direct peers and dial-in still work)");
            eprintln!(
                "warning: {e}; running without the DHT (direct peers and dial-in still work)"
            );
            shared.set_state(State::Unavailable(e.to_string()));
            return;
        }
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        if *shared.shutdown.borrow() {
            break;
        }
        let started = tokio::time::Instant::now();
        match bridge::run(&shared, &script, &opts, &sessions).await {
            bridge::Ended::Shutdown => break,
            bridge::Ended::Failed(why) => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(
                    "the DHT bridge stopped ({why}); restarting it in {:.1} s",
                    backoff.as_secs_f64()
                );
                shared.set_state(State::Restarting);
                shared.stats.restarts.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut stop = shared.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    shared.set_state(State::Stopped);
}

/// Resolves once shutdown was asked for.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard wait_for returns must not live across the caller's awaits.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

async fn prepare(opts: &SwarmOptions) -> Result<PathBuf> {
    if let Some(s) = &opts.script {
        return Ok(s.clone());
    }
    install::check_node(&opts.node, &opts.npm).await?;
    install::ensure_installed(&opts.cache_dir, &opts.npm).await
}
