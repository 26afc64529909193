//! Replication: the cores this process holds ([`Replica`]), the connections it has
//! ([`Connection`]) and the [`Replicator`] that ties them together. It runs on a
//! [`FramedSession`] and never on a socket: sockets are in [`crate::transport`] (and the DHT
//! in `apiary-swarm`); `connect`, `accept` and `listen` here only delegate to it.
//!
//! Dependencies run one way: the [`Replicator`] holds replicas and connections; a connection
//! (an actor: its task and the [`Connection`] handle) holds the replicas it has channels for,
//! and calls into them to serve and to report what peers say; a replica sees a connection
//! only as the [`Peer`] handle of a channel (requests, announcements, a verdict), which knows
//! nothing of replicas. Each side owns its state: the connection a peer's [`RemoteState`]
//! (published on a watch), the replica its head and its tally of peers (see [`Replica`] for
//! its locks).
//!
//! ```no_run
//! # async fn run() -> apiary_core::Result<()> {
//! use apiary_core::replicate::{Replicator, ReplicatorOptions};
//! use apiary_core::store::Store;
//! use std::time::Duration;
//!
//! let rep = Replicator::new(Store::temporary()?, ReplicatorOptions::default());
//! let key = "hyper://tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy".parse()?;
//! let core = rep.replica(key)?;
//! let conn = rep.connect("127.0.0.1:4000").await?;
//! conn.open(&core).await?;
//! let length = core.update(Duration::from_secs(5)).await?;
//! if length > 0 {
//!     let last = core.get(length - 1).await?; // fetched, verified, stored
//!     println!("{} bytes", last.len());
//! }
//! # Ok(()) }
//! ```

mod connection;
mod replica;

pub use connection::{Connection, Peer, RemoteState, PROTOCOL};
pub use replica::{HeadEvent, Replica, ReplicaOptions, ReplicaStats};

/// The former name of [`Peer`].
pub type PeerLink = Peer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tracing::Instrument;

use crate::crypto::KeyPair;
use crate::error::Result;
use crate::id::{DiscoveryKey, Key};
use crate::store::Store;
use crate::transport;
use crate::wire::FramedSession;

/// The cores a process shares, by discovery key (what remote opens name).
#[derive(Debug, Default)]
pub struct Registry {
    replicas: Mutex<HashMap<DiscoveryKey, Arc<Replica>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DiscoveryKey, Arc<Replica>>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The replica of a discovery key.
    pub fn get(&self, dk: &DiscoveryKey) -> Option<Arc<Replica>> {
        self.lock().get(dk).cloned()
    }
    /// Every replica.
    pub fn all(&self) -> Vec<Arc<Replica>> {
        self.lock().values().cloned().collect()
    }
}

/// How a replicator behaves.
#[derive(Debug, Clone, Default)]
pub struct ReplicatorOptions {
    /// Open a channel for every core on every connection (a publisher); otherwise channels are
    /// opened on request or when the remote opens one for a core we hold (an aggregator).
    pub announce_all: bool,
    /// Per-core tuning.
    pub replica: ReplicaOptions,
}

struct Inner {
    store: Store,
    registry: Arc<Registry>,
    identity: KeyPair,
    opts: ReplicatorOptions,
    connections: Mutex<Vec<Connection>>,
}

/// Holds cores and connections.
#[derive(Clone)]
pub struct Replicator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replicator({} cores)", self.inner.registry.lock().len())
    }
}

impl Replicator {
    /// A replicator over `store` with a fresh Noise identity.
    pub fn new(store: Store, opts: ReplicatorOptions) -> Self {
        Self::with_identity(store, KeyPair::generate(), opts)
    }

    /// A replicator with a given Noise identity (its public key is what peers see).
    pub fn with_identity(store: Store, identity: KeyPair, opts: ReplicatorOptions) -> Self {
        Replicator {
            inner: Arc::new(Inner {
                store,
                registry: Arc::new(Registry::default()),
                identity,
                opts,
                connections: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Our Noise public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.inner.identity.public_key()
    }

    /// The core of `key` (opened read-only from the store, created if new).
    pub fn replica(&self, key: Key) -> Result<Arc<Replica>> {
        self.register(key, None)
    }

    pub(crate) fn register(&self, key: Key, writer: Option<KeyPair>) -> Result<Arc<Replica>> {
        let dk = key.discovery_key();
        if let Some(r) = self.inner.registry.get(&dk) {
            if writer.is_none() || r.is_writable() {
                return Ok(r);
            }
        }
        let writable = writer.is_some();
        let core = self.inner.store.core(&key)?;
        let replica = Arc::new(Replica::open(
            key,
            core,
            self.inner.opts.replica.clone(),
            writer,
        )?);
        {
            // Opening takes I/O, so it runs unlocked; two callers may have raced here. The
            // first one registered wins: a second replica object for one core would split
            // its peers from its readers (a feed task waiting on a replica that no channel
            // feeds, silently).
            let mut m = self.inner.registry.lock();
            match m.get(&dk) {
                Some(r) if !writable || r.is_writable() => return Ok(r.clone()),
                _ => {
                    m.insert(dk, replica.clone());
                }
            }
        }
        if self.inner.opts.announce_all {
            for c in self.connections() {
                let r = replica.clone();
                tokio::spawn(async move { c.open(&r).await }.in_current_span());
            }
        }
        Ok(replica)
    }

    /// The core held under a discovery key (what a DHT topic or a remote open names).
    pub fn find(&self, dk: &DiscoveryKey) -> Option<Arc<Replica>> {
        self.inner.registry.get(dk)
    }

    /// Every core held.
    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        self.inner.registry.all()
    }

    /// Stops sharing a core: closes its channels and forgets it (the store keeps its data
    /// until [`Store::remove_core`]).
    pub async fn remove(&self, key: &Key) {
        let dk = key.discovery_key();
        self.inner.registry.lock().remove(&dk);
        for c in self.connections() {
            c.close_core(dk).await;
        }
    }

    /// Live connections.
    pub fn connections(&self) -> Vec<Connection> {
        let mut c = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.retain(|c| !c.is_closed());
        c.clone()
    }

    /// Runs replication over an established session.
    pub fn attach(&self, session: FramedSession) -> Connection {
        let announce = if self.inner.opts.announce_all {
            self.inner.registry.all()
        } else {
            Vec::new()
        };
        let conn = connection::spawn(session, self.inner.registry.clone(), announce);
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn.clone());
        conn
    }

    /// Dials `addr` over TCP, runs the Noise handshake as initiator, and starts replicating
    /// ([`transport::dial`], then [`Replicator::attach`]).
    pub async fn connect(&self, addr: &str) -> Result<Connection> {
        let session = transport::dial(addr, &self.inner.identity).await?;
        Ok(self.attach(session))
    }

    /// Runs the Noise handshake as responder on an accepted socket and starts replicating.
    /// (Binaries accept through `apiary-net`'s gated listener and call this.)
    pub async fn accept(&self, sock: TcpStream, label: String) -> Result<Connection> {
        let session = transport::accept(sock, &self.inner.identity, label).await?;
        Ok(self.attach(session))
    }

    /// Listens on `addr` and replicates with everyone who connects (as Noise responder), with
    /// no caps: for tests and tools ([`transport::listen`]). Returns the bound address; the
    /// accept loop runs until the task is aborted.
    pub async fn listen(&self, addr: &str) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let me = self.clone();
        transport::listen(addr, self.inner.identity.clone(), move |session| {
            me.attach(session);
        })
        .await
    }
}

#[cfg(test)]
mod tests;
