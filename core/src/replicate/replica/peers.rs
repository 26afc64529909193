//! A replica's peers, and its bookkeeping of each: our requests in flight to it and its
//! strikes (requests that failed or timed out since its last good answer). They decide where
//! a request goes. What a peer told us about its copy is its connection's ([`Peer::remote`]);
//! the replica only reads it.

use std::sync::{Arc, MutexGuard};

use tokio::sync::watch;

use super::Replica;
use crate::error::Result;
use crate::replicate::connection::{Peer, RemoteState};
use crate::wire::messages::{Data, Request};

/// A peer and our bookkeeping of it (under the replica's `peers` lock).
#[derive(Debug)]
pub(super) struct PeerEntry {
    peer: Arc<Peer>,
    /// Requests of ours in flight to it.
    inflight: usize,
    /// Requests that failed or timed out since its last good answer (picks other peers first).
    strikes: u32,
}

impl Replica {
    fn peer_list(&self) -> MutexGuard<'_, Vec<PeerEntry>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on our bookkeeping of `peer` (nothing if it is gone).
    fn tally(&self, peer: &Peer, f: impl FnOnce(&mut PeerEntry)) {
        if let Some(e) = self
            .peer_list()
            .iter_mut()
            .find(|e| std::ptr::eq(&*e.peer, peer))
        {
            f(e);
        }
    }

    /// The peers that have a channel open for this core.
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        self.peer_list()
            .iter()
            .filter(|e| !e.peer.is_closed())
            .map(|e| e.peer.clone())
            .collect()
    }

    /// The largest length any peer on our fork (or a newer one) announced.
    pub fn remote_length(&self) -> u64 {
        let fork = self.fork();
        self.peer_list()
            .iter()
            .map(|e| e.peer.remote())
            .filter(|r| !r.closed && r.fork >= fork)
            .map(|r| r.length)
            .max()
            .unwrap_or(0)
    }

    /// Ticks on every change of a peer: one joined, left, or told us something.
    pub(super) fn peer_changes(&self) -> watch::Receiver<u64> {
        self.peers_tx.subscribe()
    }

    /// Tells waiters on [`Replica::peer_changes`] that a peer changed.
    pub(super) fn peer_changed(&self) {
        self.peers_tx.send_modify(|n| *n += 1);
    }

    pub(crate) fn add_peer(&self, peer: Arc<Peer>) {
        let mut list = self.peer_list();
        list.retain(|e| !e.peer.is_closed());
        list.push(PeerEntry {
            peer,
            inflight: 0,
            strikes: 0,
        });
        drop(list);
        self.peer_changed();
    }

    pub(crate) fn remove_peer(&self, peer: &Arc<Peer>) {
        self.peer_list().retain(|e| !Arc::ptr_eq(&e.peer, peer));
        self.peer_changed();
    }

    /// A peer ahead of `(fork, length)` (a newer fork, or a longer length on ours), if any
    /// is: of those with the fewest strikes, the one furthest ahead. A sync's length is only
    /// a claim, so a peer that claims the most but does not answer must not be the one
    /// always asked: once it fails, the others are asked first.
    pub(super) fn peer_ahead(&self, fork: u64, length: u64) -> Option<Arc<Peer>> {
        self.peer_list()
            .iter()
            .map(|e| (e, e.peer.remote()))
            .filter(|(_, r)| is_ahead(r, fork, length))
            .max_by_key(|(e, r)| (std::cmp::Reverse(e.strikes), r.fork, r.length))
            .map(|(e, _)| e.peer.clone())
    }

    /// How many peers with at most `max_strikes` strikes are ahead of `(fork, length)`.
    pub(super) fn peers_ahead(&self, fork: u64, length: u64, max_strikes: u32) -> usize {
        self.peer_list()
            .iter()
            .filter(|e| e.strikes <= max_strikes && is_ahead(&e.peer.remote(), fork, length))
            .count()
    }

    /// The peer to ask for block `seq` of `fork`: fewest strikes first, then one that holds
    /// every block up to it, then the least busy.
    pub(super) fn peer_for_block(&self, seq: u64, fork: u64) -> Option<Arc<Peer>> {
        self.peer_list()
            .iter()
            .map(|e| (e, e.peer.remote()))
            .filter(|(_, r)| !r.closed && r.fork == fork && r.length > seq)
            .min_by_key(|(e, r)| (e.strikes, r.contiguous <= seq, e.inflight))
            .map(|(e, _)| e.peer.clone())
    }

    /// Peers on `fork` with their lengths, those with the fewest strikes only (a range
    /// download spreads its requests over them).
    pub(super) fn bulk_peers(&self, fork: u64) -> Vec<(Arc<Peer>, u64)> {
        let list = self.peer_list();
        let on_fork = || {
            list.iter()
                .map(|e| (e, e.peer.remote()))
                .filter(|(_, r)| !r.closed && r.fork == fork)
        };
        let best = on_fork().map(|(e, _)| e.strikes).min().unwrap_or(0);
        on_fork()
            .filter(|(e, _)| e.strikes == best)
            .map(|(e, r)| (e.peer.clone(), r.length))
            .collect()
    }

    /// One more strike for `peer`.
    pub(super) fn strike(&self, peer: &Peer) {
        self.tally(peer, |e| e.strikes = e.strikes.saturating_add(1));
    }

    /// `peer` answered well: its strikes are forgiven.
    pub(super) fn forgive(&self, peer: &Peer) {
        self.tally(peer, |e| e.strikes = 0);
    }

    /// Takes back the strike of one answer that was not a fault (and only that one: an
    /// answer that is not a fault is not a good one either).
    pub(super) fn unstrike(&self, peer: &Peer) {
        self.tally(peer, |e| e.strikes = e.strikes.saturating_sub(1));
    }

    /// Sends one request to a peer and waits for its answer (up to the request timeout),
    /// keeping our tally of it.
    pub(super) async fn request(&self, peer: &Arc<Peer>, req: Request) -> Result<Data> {
        self.tally(peer, |e| e.inflight += 1);
        struct Done<'a>(&'a Replica, &'a Peer);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0
                    .tally(self.1, |e| e.inflight = e.inflight.saturating_sub(1));
            }
        }
        let _done = Done(self, peer);
        let res = peer.request(req, self.opts.request_timeout).await;
        match res {
            Ok(_) => self.forgive(peer),
            Err(_) => self.strike(peer),
        }
        res
    }
}

/// Whether a peer's (open) session claims a head past `(fork, length)`: a newer fork, or a
/// longer length on ours.
fn is_ahead(r: &RemoteState, fork: u64, length: u64) -> bool {
    !r.closed && (r.fork > fork || (r.fork == fork && r.length > length))
}
