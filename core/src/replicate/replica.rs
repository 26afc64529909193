//! One core as this process knows it: its verified head, its store, the peers that have it,
//! and the request logic of a sparse reader (fetch a block, upgrade to the newest length,
//! follow a new fork).
//!
//! Requests go out through a peer's handle ([`Peer`]), all the replica sees of a connection;
//! the answer comes back to the caller's task, which verifies it and writes it to the store.
//! Verification thus runs in parallel across callers, and connections verify nothing. What we
//! answer to a peer is decided here too ([`Replica::answer`]); its connection sends it.
//!
//! This file holds the state and its locks (the rules are on [`Replica`]), the head, upgrades
//! and the verify-and-store path. The rest, each an `impl Replica`:
//! - `peers`: the peers and our tally of each (in flight, strikes); which peer to ask;
//! - `fetch`: one block on demand (deduplicated, retried); `range`: many blocks at once;
//! - `fork`: following an author's truncation; `writer`: append and truncate our own cores;
//! - `serve`: the answer to a peer's request.

mod fetch;
mod fork;
mod peers;
mod range;
mod serve;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use self::peers::PeerEntry;
use super::connection::{Peer, RemoteState};
use crate::crypto::KeyPair;
use crate::error::{Error, Result};
use crate::id::{DiscoveryKey, Key};
use crate::manifest::{Manifest, Verifier};
use crate::merkle::{verify_proof, Head, Node, Proof, VerifiedProof};
use crate::store::{CoreRecord, CoreStore};
use crate::wire::messages::{Data, Request, Sync};

/// An upgrade of at most this many blocks (a live append, not a backlog) asks for its first
/// block in the same request.
const EAGER_BLOCK_MAX: u64 = 16;

/// Tuning of a replica.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// How long one request may stay unanswered before it is retried elsewhere.
    pub request_timeout: Duration,
    /// How many peers (or times) a block is tried before giving up.
    pub max_attempts: u32,
    /// Fetch the newest length as soon as a peer announces it (live following).
    pub auto_upgrade: bool,
    /// Send the blocks we hold to peers that ask (`false`: every block request is answered
    /// `noData`; tree nodes and lengths are still served, so peers can verify and follow).
    pub serve_blocks: bool,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            request_timeout: Duration::from_secs(5),
            max_attempts: 4,
            auto_upgrade: true,
            serve_blocks: true,
        }
    }
}

/// What watchers of a core see change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadEvent {
    /// Verified length.
    pub length: u64,
    /// Fork id.
    pub fork: u64,
    /// The cut of the latest truncation (stays set for the rest of that fork): blocks from
    /// this seq on were dropped. Use [`Replica::truncated_since`] to cover several forks.
    pub truncated_at: Option<u64>,
}

/// Counters of what was fetched for this core.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Blocks downloaded and verified.
    pub blocks: AtomicU64,
    /// Bytes of block payload downloaded.
    pub bytes: AtomicU64,
}

impl State {
    fn event(&self) -> HeadEvent {
        let r = &self.record;
        HeadEvent {
            length: r.head.length,
            fork: r.head.fork,
            truncated_at: r
                .truncations
                .last()
                .filter(|t| t.0 == r.head.fork)
                .map(|t| t.1),
        }
    }
}

/// What the `state` lock of a [`Replica`] guards.
struct State {
    /// The verified head, the contiguous length, the truncations, the manifest: what the
    /// store's head record says (or will say once saved; see `verify_and_store`).
    record: CoreRecord,
    /// Checks signatures; `None` until a manifest is known.
    verifier: Option<Verifier>,
    /// Blocks a `get` is fetching, with the callers waiting for it (`fetch`).
    inflight: HashMap<u64, Vec<oneshot::Sender<()>>>,
    /// An upgrade is running (one at a time).
    upgrading: bool,
}

/// A core: store, head, peers.
///
/// # Who owns what
///
/// The replica owns its verified head and its bookkeeping of peers; each peer's own state
/// (its fork, length, ...) belongs to its connection, which publishes it on a watch that the
/// [`Peer`] handle reads. The replica never writes it, and the connection never writes
/// anything of the replica's: it calls `add_peer`, `remove_peer`, `on_peer_update`,
/// `sync_for` and [`Replica::answer`].
///
/// # Locks
///
/// All three are `std` locks, held briefly and never across an `.await`.
///
/// - `state` (a mutex over `State`): the verified record, the verifier, the `get` dedupe
///   map, the upgrade flag. A new head is written to the store first (our own appends and
///   truncations also sync it), then put into `state`, and only after the lock is released
///   shown to watchers (`head_tx`) and peers (`announce`). Store reads and writes may happen
///   under it; taking `peers` may not.
/// - `fork_guard` (a read-write lock over nothing): taken before `state`, never after.
///   Shared while verified blocks and nodes are written to the store outside `state`
///   (`verify_and_store`, which checks the fork again under it); exclusive while a
///   truncation cuts the store and replaces the record (`fork::switch_fork`,
///   `writer::truncate`). So no block of an old fork lands in the store after the cut.
/// - `peers` (a mutex over the peer list and its tally, `peers.rs`): a leaf. Nothing else is
///   taken under it but a peer's watch (read), and it is never taken under `state`.
///
/// The fields are private to this module and its children (`replica/*.rs`).
pub struct Replica {
    key: Key,
    discovery_key: DiscoveryKey,
    store: CoreStore,
    opts: ReplicaOptions,
    /// See "Locks".
    state: Mutex<State>,
    /// See "Locks".
    peers: Mutex<Vec<PeerEntry>>,
    /// See "Locks".
    fork_guard: RwLock<()>,
    /// The head as watchers see it (after the lock is released).
    head_tx: watch::Sender<HeadEvent>,
    /// Ticks when a peer joins, leaves or tells us something.
    peers_tx: watch::Sender<u64>,
    /// The key pair of a core we sign.
    writer: Option<KeyPair>,
    /// Download counters.
    pub stats: ReplicaStats,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replica({})", self.key)
    }
}

/// What applying a verified proof did.
enum Applied {
    Done,
    NewFork(Box<(Head, Vec<Node>, Verifier)>),
}

impl Replica {
    /// Opens a core from the store. `writer` is the key pair of a core we sign.
    pub(crate) fn open(
        key: Key,
        store: CoreStore,
        opts: ReplicaOptions,
        writer: Option<KeyPair>,
    ) -> Result<Self> {
        let record = store.record()?;
        let verifier = match &record.manifest {
            Some(m) => Some(Verifier::new(key, Some(Manifest::from_bytes(m)?))?),
            None if record.head.length > 0 => Some(Verifier::new(key, None)?),
            None => match &writer {
                Some(kp) if kp.public_key() == key.0 => Some(Verifier::new(key, None)?),
                _ => None,
            },
        };
        let (head_tx, _) = watch::channel(HeadEvent {
            length: record.head.length,
            fork: record.head.fork,
            truncated_at: record
                .truncations
                .last()
                .filter(|t| t.0 == record.head.fork)
                .map(|t| t.1),
        });
        let (peers_tx, _) = watch::channel(0);
        Ok(Replica {
            key,
            discovery_key: key.discovery_key(),
            store,
            opts,
            state: Mutex::new(State {
                record,
                verifier,
                inflight: HashMap::new(),
                upgrading: false,
            }),
            peers: Mutex::new(Vec::new()),
            fork_guard: RwLock::new(()),
            head_tx,
            peers_tx,
            writer,
            stats: ReplicaStats::default(),
        })
    }

    /// The `state` lock.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the locked state (never across an await).
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        f(&mut self.lock())
    }

    /// `fork_guard`, shared: verified data is being written.
    fn fork_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.fork_guard.read().unwrap_or_else(|p| p.into_inner())
    }

    /// `fork_guard`, exclusive: a truncation is being applied.
    fn fork_exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.fork_guard.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells watchers and peers about a new head (call without holding `state`).
    fn publish(&self, event: HeadEvent) {
        self.head_tx.send_replace(event);
        self.announce();
    }

    /// The core key.
    pub fn key(&self) -> &Key {
        &self.key
    }
    /// The discovery key.
    pub fn discovery_key(&self) -> &DiscoveryKey {
        &self.discovery_key
    }
    /// The store of this core.
    pub fn store(&self) -> &CoreStore {
        &self.store
    }
    /// The verified head.
    pub fn head(&self) -> Head {
        self.lock().record.head.clone()
    }
    /// Verified length.
    pub fn length(&self) -> u64 {
        self.lock().record.head.length
    }
    /// Fork id.
    pub fn fork(&self) -> u64 {
        self.lock().record.head.fork
    }
    /// The lowest seq cut by truncations to forks after `fork` (`None` if there were none, or
    /// if they are too old to be remembered: then `Some(0)`, start over).
    pub fn truncated_since(&self, fork: u64) -> Option<u64> {
        let s = self.lock();
        let r = &s.record;
        if r.head.fork <= fork {
            return None;
        }
        let known = r.truncations.iter().filter(|t| t.0 > fork);
        let covered = r.truncations.iter().any(|t| t.0 == fork + 1);
        if !covered {
            return Some(0);
        }
        known.map(|t| t.1).min()
    }

    /// Blocks `[0, n)` are all stored.
    pub fn contiguous_length(&self) -> u64 {
        self.lock().record.contiguous
    }
    /// Drops the stored payloads of the blocks below `before` (whole pages: see
    /// [`CoreStore::drop_blocks`]) and keeps the tree and the head, so proofs of inclusion
    /// stay cheap; [`Replica::get`] fetches a dropped block again from the peers. Returns
    /// the blocks dropped.
    pub fn drop_blocks(&self, before: u64) -> Result<u64> {
        let dropped = self.store.drop_blocks(before)?;
        if dropped > 0 {
            // Blocks from the first page on may be gone: claim no contiguous run to peers.
            let mut s = self.lock();
            s.record.contiguous = 0;
        }
        Ok(dropped)
    }

    /// The manifest bytes we may send (non-compat cores).
    pub fn manifest(&self) -> Option<Manifest> {
        let s = self.lock();
        s.verifier
            .as_ref()
            .filter(|v| !v.is_compat())
            .map(|v| v.manifest().clone())
    }
    /// Whether we hold the key pair.
    pub fn is_writable(&self) -> bool {
        self.writer.is_some()
    }
    /// Watch the head: length, fork, truncations.
    pub fn subscribe(&self) -> watch::Receiver<HeadEvent> {
        self.head_tx.subscribe()
    }
    /// The sync message we send to a peer.
    pub(crate) fn sync_for(&self, remote: &RemoteState) -> Sync {
        let s = self.lock();
        let head = &s.record.head;
        Sync {
            can_upgrade: head.length > 0 && remote.fork == head.fork,
            uploading: true,
            downloading: self.writer.is_none(),
            has_manifest: s.verifier.as_ref().is_some_and(|v| !v.is_compat()),
            allow_push: false,
            fork: head.fork,
            length: head.length,
            remote_length: if remote.fork == head.fork {
                remote.length
            } else {
                0
            },
        }
    }

    /// A peer's sync arrived: maybe fetch a newer head.
    pub(crate) fn on_peer_update(self: &Arc<Self>) {
        self.peer_changed();
        if !self.opts.auto_upgrade || self.writer.is_some() {
            return;
        }
        // Started by a peer without strikes only: one that failed an upgrade and claims the
        // same (a peer claiming more than it has) would otherwise be asked again after every
        // sync of every peer, each time holding up the honest peers' upgrades for a request
        // timeout. A struck peer is still asked by the retries below and by `update`.
        if self.wants_upgrade(0) {
            let me = self.clone();
            tokio::spawn(
                async move {
                    // A failed upgrade (a peer that timed out or lied) is tried again, on
                    // the peers with fewer strikes first: no other sync may come to start
                    // one (the feed task only looks again much later).
                    for attempt in 0..me.opts.max_attempts {
                        match me.upgrade_once().await {
                            Ok(()) => return,
                            Err(e) => {
                                tracing::debug!(core = %me.key, attempt, "upgrade failed: {e}");
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                        if !me.wants_upgrade(u32::MAX) {
                            return;
                        }
                    }
                }
                .in_current_span(),
            );
        }
    }

    /// Whether no upgrade is running and a peer with at most `max_strikes` strikes is ahead.
    fn wants_upgrade(&self, max_strikes: u32) -> bool {
        let (upgrading, fork, length) = {
            let s = self.lock();
            (s.upgrading, s.record.head.fork, s.record.head.length)
        };
        !upgrading && self.peers_ahead(fork, length, max_strikes) > 0
    }

    /// Tells every connected peer about our head (after an append or an upgrade).
    pub(crate) fn announce(&self) {
        for p in self.peers() {
            p.announce();
        }
    }

    /// Brings the head up to the newest length a peer announced (waiting up to `wait` for a
    /// peer to appear). Returns the length.
    ///
    /// A failed upgrade is tried again on another peer ahead (those with fewer strikes are
    /// asked first), up to `max_attempts` in all. Once the head has moved, a failure ends
    /// the call with the head reached: a peer claiming more than it can prove (a sync's
    /// length is only a claim) does not turn a good update into an error, nor hold it up
    /// for every attempt's timeout.
    pub async fn update(self: &Arc<Self>, wait: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut peers = self.peer_changes();
        loop {
            if self.peers().iter().any(|p| {
                let r = p.remote();
                r.length > 0 || r.fork > 0
            }) || self.writer.is_some()
            {
                break;
            }
            if tokio::time::timeout_at(deadline, peers.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        // Subscribe before looking, so a head change between the look and the wait is seen.
        let mut head = self.subscribe();
        let start = (self.fork(), self.length());
        let mut attempts = 0;
        while attempts < self.opts.max_attempts {
            head.borrow_and_update();
            if !self.wants_upgrade(u32::MAX) {
                if !self.lock().upgrading {
                    break;
                }
                // Another task is upgrading: wait for its result (polling, in case it fails).
                let _ = tokio::time::timeout(Duration::from_millis(50), head.changed()).await;
                if tokio::time::Instant::now() >= deadline + self.opts.request_timeout {
                    break;
                }
                continue;
            }
            attempts += 1;
            if let Err(e) = self.upgrade_once().await {
                if (self.fork(), self.length()) != start {
                    return Ok(self.length());
                }
                // Each peer ahead once (the strikes send the next try elsewhere): one peer
                // that fails is not asked again here.
                let ahead = self.peers_ahead(start.0, start.1, u32::MAX);
                let ahead = u32::try_from(ahead).unwrap_or(u32::MAX);
                if attempts >= self.opts.max_attempts.min(ahead) {
                    return Err(e);
                }
                tracing::debug!(core = %self.key, attempts, "upgrade failed, trying again: {e}");
            }
        }
        Ok(self.length())
    }

    /// Fetches the newest head from the best peer once.
    async fn upgrade_once(self: &Arc<Self>) -> Result<()> {
        {
            let mut s = self.lock();
            if s.upgrading {
                return Ok(());
            }
            s.upgrading = true;
        }
        struct Reset<'a>(&'a Replica);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.lock().upgrading = false;
            }
        }
        let _reset = Reset(self);
        let (head, need_manifest) = {
            let s = self.lock();
            (s.record.head.clone(), s.verifier.is_none())
        };
        let Some(peer) = self.peer_ahead(head.fork, head.length) else {
            return Ok(());
        };
        let r = peer.remote();
        let (rfork, rlen, has_manifest) = (r.fork, r.length, r.has_manifest);
        let start = if rfork == head.fork { head.length } else { 0 };
        let mut req = Request {
            fork: rfork,
            upgrade: Some((start, rlen - start)),
            manifest: need_manifest && has_manifest,
            ..Request::default()
        };
        // A live append (a few new blocks on our fork): its first block rides with the
        // upgrade, so a follower has the new entry after one round trip instead of two (the
        // remote reads the tree once). Its proof is the block's whole path (`nodes` 0: the
        // block is past our length), checked against the upgraded head like any other.
        if rfork == head.fork && start > 0 && rlen - start <= EAGER_BLOCK_MAX {
            req.block = Some((start, 0));
            match self.request(&peer, req.clone()).await {
                Ok(data) => return self.apply(&peer, data).await,
                // A peer may have the head and not that block (a sparse replica): not a fault.
                Err(Error::NotAvailable { .. }) => {
                    self.unstrike(&peer);
                    req.block = None;
                }
                Err(e) => return Err(e),
            }
        }
        let data = self.request(&peer, req).await?;
        self.apply(&peer, data).await
    }

    /// Verifies a proof from `peer` and stores it; a bad proof ends that peer's connection.
    async fn apply(self: &Arc<Self>, peer: &Arc<Peer>, data: Data) -> Result<()> {
        let res = self.verify_and_store(&data.proof, data.manifest);
        match res {
            Ok(Applied::Done) => Ok(()),
            Ok(Applied::NewFork(b)) => {
                let (head, nodes, verifier) = *b;
                self.switch_fork(peer, head, nodes, verifier).await
            }
            Err(e) => {
                if matches!(e, Error::Verification { .. } | Error::Decode { .. }) {
                    peer.fail(format!("peer sent an invalid proof for {}: {e}", self.key));
                }
                Err(e)
            }
        }
    }

    fn verifier_for(&self, manifest: Option<Manifest>) -> Result<Verifier> {
        if let Some(v) = self.lock().verifier.clone() {
            return Ok(v);
        }
        Verifier::new(self.key, manifest)
    }

    fn verify_and_store(
        self: &Arc<Self>,
        proof: &Proof,
        manifest: Option<Manifest>,
    ) -> Result<Applied> {
        let verifier = self.verifier_for(manifest)?;
        let local = self.head();
        if proof.fork < local.fork {
            return Err(Error::NotAvailable {
                seq: proof.block.as_ref().map(|b| b.index).unwrap_or(0),
            });
        }
        let v: VerifiedProof = verify_proof(proof, &local, &verifier, |i| self.store.node(i))?;
        if let Some(h) = &v.head {
            if h.fork != local.fork {
                return Ok(Applied::NewFork(Box::new((h.clone(), v.nodes, verifier))));
            }
        }
        // Blocks and nodes are verified: write them without the state lock, so callers verify
        // and store in parallel. The fork guard keeps a truncation from interleaving.
        let _fork = self.fork_shared();
        if self.fork() != local.fork {
            return Err(Error::Truncated {
                fork: self.fork(),
                length: self.length(),
            });
        }
        let mut batch = self.store.batch();
        batch.nodes(&v.nodes);
        let block_seq = v.block.as_ref().map(|(seq, _)| *seq);
        if let Some((seq, value)) = &v.block {
            batch.block(*seq, value);
            self.stats.blocks.fetch_add(1, Ordering::Relaxed);
            self.stats
                .bytes
                .fetch_add(value.len() as u64, Ordering::Relaxed);
        }
        self.store.apply(batch)?;

        let mut s = self.lock();
        let mut record = s.record.clone();
        let mut persist = false;
        let grew = v
            .head
            .as_ref()
            .is_some_and(|h| h.length > record.head.length);
        if let Some(h) = v.head.filter(|_| grew) {
            record.head = h;
            persist = true;
        }
        if s.verifier.is_none() {
            if !verifier.is_compat() {
                record.manifest = Some(verifier.manifest().to_bytes());
            }
            s.verifier = Some(verifier);
            persist = true;
        }
        // Blocks [0, contiguous) are present; extend past the block just stored. Kept in
        // memory and saved now and then: a lower value after a crash only announces less.
        if block_seq == Some(record.contiguous) || grew {
            let before = record.contiguous;
            while record.contiguous < record.head.length
                && (block_seq == Some(record.contiguous)
                    || self.store.has_block(record.contiguous)?)
            {
                record.contiguous += 1;
            }
            persist |= record.contiguous / 4096 != before / 4096
                || (record.contiguous == record.head.length && record.contiguous != before);
        }
        if persist {
            let mut b = self.store.batch();
            b.record(record.clone());
            self.store.apply(b)?;
        }
        s.record = record;
        let event = s.event();
        drop(s);
        if grew {
            self.head_tx.send_replace(event);
            self.announce();
        }
        Ok(Applied::Done)
    }
}
