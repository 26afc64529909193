//! Discovery by key alone: every followed bee's discovery key is joined on the hyperswarm DHT
//! as a client (apiary-swarm runs the official hyperswarm in a child process), and every
//! connection hyperswarm makes replicates like a TCP one. The channels opened on a DHT
//! connection are those of the followed bees the remote was found under; the remote may open
//! more itself (a publisher announces all its bees), and a follow added later is opened on
//! every live connection by the follow code.
//!
//! hyperswarm looks a topic up again only every ~10 minutes; a bee whose author comes online
//! after the follow would wait that long. So bees with no peer are looked up again after
//! 15 s, then at doubling intervals up to 10 minutes, and from the start once they lose all
//! peers; at most 5 such lookups a second (each costs the bridge ~0.45 ms of CPU).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use apiary_core::replicate::{Connection, Replicator};
use apiary_core::{DiscoveryKey, Key};
use apiary_swarm::{DhtSession, JoinMode, State, Swarm, SwarmOptions, SwarmStats};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Config;

/// The DHT side of the aggregator (absent when `dht = false`).
#[derive(Debug)]
pub struct Discovery {
    swarm: Option<Swarm>,
}

impl Discovery {
    /// Starts the swarm (installing its bridge on first use) unless the config turns it off.
    pub fn start(cfg: &Config, seed: [u8; 32], rep: Replicator) -> Discovery {
        if !cfg.dht {
            return Discovery { swarm: None };
        }
        let cache = cfg
            .bridge_dir
            .clone()
            .unwrap_or_else(|| apiary_swarm::install::default_cache_dir(&cfg.data_dir));
        let mut opts = SwarmOptions::new(seed, cache);
        if !cfg.bootstrap.is_empty() {
            opts = opts.with_bootstrap(cfg.bootstrap.clone());
        }
        let (swarm, mut rx) = Swarm::start(opts);
        let r = rep.clone();
        // DHT sessions' connection tasks (and their "conn" spans) start in this one's span.
        tokio::spawn(
            async move {
                while let Some(s) = rx.recv().await {
                    replicate(&r, s);
                }
            }
            .instrument(tracing::info_span!("discovery")),
        );
        tokio::spawn(
            refresh_peerless(swarm.clone(), rep).instrument(tracing::info_span!("discovery")),
        );
        Discovery { swarm: Some(swarm) }
    }

    /// Looks the bee up on the DHT from now on (also after bridge restarts).
    pub fn join(&self, key: &Key) {
        if let Some(s) = &self.swarm {
            s.join(key.discovery_key(), JoinMode::CLIENT);
        }
    }

    /// Stops looking the bee up.
    pub fn leave(&self, key: &Key) {
        if let Some(s) = &self.swarm {
            s.leave(&key.discovery_key());
        }
    }

    /// A snapshot, or `None` when the DHT is off.
    pub async fn stats(&self) -> Option<SwarmStats> {
        match &self.swarm {
            Some(s) => Some(s.stats().await),
            None => None,
        }
    }

    /// `off`, `starting`, `running`, `restarting`, `unavailable: …` or `stopped`.
    pub fn state(&self) -> String {
        match self.swarm.as_ref().map(Swarm::state) {
            None => "off".into(),
            Some(State::Starting) => "starting".into(),
            Some(State::Running) => "running".into(),
            Some(State::Restarting) => "restarting".into(),
            Some(State::Unavailable(why)) => format!("unavailable: {why}"),
            Some(_) => "stopped".into(),
        }
    }

    /// Leaves the DHT.
    pub async fn shutdown(&self) {
        if let Some(s) = &self.swarm {
            s.shutdown().await;
        }
    }
}

/// Looks up again, with backoff, the bees that have no peer; at most [`PER_TICK`] a
/// second, the most overdue first, so 1000 peerless bees do not make 1000 lookups at once.
async fn refresh_peerless(swarm: Swarm, rep: Replicator) {
    const FIRST: Duration = Duration::from_secs(15);
    const MAX: Duration = Duration::from_secs(600);
    const PER_TICK: usize = 5;
    let mut next: HashMap<DiscoveryKey, (Instant, Duration)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if matches!(swarm.state(), State::Stopped | State::Unavailable(_)) {
            return;
        }
        let now = Instant::now();
        let mut seen = HashSet::new();
        let mut due = Vec::new();
        for r in rep.replicas() {
            let dk = *r.discovery_key();
            seen.insert(dk);
            if !r.peers().is_empty() {
                next.remove(&dk);
                continue;
            }
            let (at, _) = next.entry(dk).or_insert((now + FIRST, FIRST));
            if now >= *at {
                due.push((*at, dk));
            }
        }
        due.sort();
        for (_, dk) in due.into_iter().take(PER_TICK) {
            if let Some((at, every)) = next.get_mut(&dk) {
                swarm.refresh(&dk);
                *every = (*every * 2).min(MAX);
                *at = now + *every;
            }
        }
        next.retain(|dk, _| seen.contains(dk));
    }
}

/// Replicates over a DHT session: channels for the followed bees it was found under now,
/// and for those it is found under later.
fn replicate(rep: &Replicator, s: DhtSession) {
    let DhtSession {
        session,
        topics,
        mut more_topics,
        ..
    } = s;
    let conn = rep.attach(session);
    let rep = rep.clone();
    tokio::spawn(
        async move {
            for t in &topics {
                open(&rep, &conn, t).await;
            }
            while let Some(t) = more_topics.recv().await {
                open(&rep, &conn, &t).await;
            }
        }
        .in_current_span(),
    );
}

async fn open(rep: &Replicator, conn: &Connection, topic: &DiscoveryKey) {
    if let Some(r) = rep.find(topic) {
        let _ = conn.open(&r).await;
    }
}
