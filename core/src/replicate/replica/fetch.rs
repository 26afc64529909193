//! Sparse fetching: one block on demand (deduplicated, timed out, retried on other peers).
//! Ranges: `range.rs`.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::Replica;
use crate::error::{Error, Result};
use crate::merkle::flat;
use crate::replicate::connection::Peer;
use crate::wire::messages::Request;

impl Replica {
    /// Nodes we lack on the path from block `seq` up to a node we hold (JS `missingNodes`).
    pub(super) fn missing_nodes(&self, seq: u64, length: u64) -> Result<u64> {
        let head = 2 * length;
        let mut cur = 2 * seq;
        if flat::right_span(cur) >= head {
            return Ok(0);
        }
        let mut n = 0;
        while !flat::contains(cur, head) && n < 64 {
            if self.store.node(cur)?.is_some() {
                break;
            }
            cur = flat::parent(cur);
            n += 1;
        }
        Ok(n)
    }

    /// Block `seq`: from the store, or fetched (verified) from a peer.
    pub async fn get(self: &Arc<Self>, seq: u64) -> Result<Vec<u8>> {
        let mut last_err = None;
        let mut attempts = 0;
        loop {
            if let Some(b) = self.store.block(seq)? {
                return Ok(b);
            }
            let (length, fork) = {
                let s = self.lock();
                (s.record.head.length, s.record.head.fork)
            };
            if seq >= length {
                return Err(Error::NotAvailable { seq });
            }
            if attempts >= self.opts.max_attempts {
                return Err(last_err.unwrap_or(Error::NotAvailable { seq }));
            }
            // One request per block: later callers wait for the first.
            let follower = {
                let mut s = self.lock();
                match s.inflight.get_mut(&seq) {
                    Some(waiters) => {
                        let (tx, rx) = oneshot::channel();
                        waiters.push(tx);
                        Some(rx)
                    }
                    None => {
                        s.inflight.insert(seq, Vec::new());
                        None
                    }
                }
            };
            if let Some(rx) = follower {
                let limit = self.opts.request_timeout * (self.opts.max_attempts + 1);
                let _ = tokio::time::timeout(limit, rx).await;
                attempts += 1;
                continue;
            }
            let _guard = InflightGuard { replica: self, seq };
            attempts += 1;
            let peer = match self.pick_peer(seq, fork).await {
                Some(p) => p,
                None => {
                    last_err = Some(Error::NotAvailable { seq });
                    continue;
                }
            };
            let need_manifest = self.lock().verifier.is_none() && peer.remote().has_manifest;
            let req = Request {
                fork,
                block: Some((seq, self.missing_nodes(seq, length)?)),
                manifest: need_manifest,
                ..Request::default()
            };
            match self.request(&peer, req).await {
                Ok(data) => {
                    if let Err(e) = self.apply(&peer, data).await {
                        last_err = Some(e);
                    }
                }
                Err(Error::NotAvailable { .. }) => last_err = Some(Error::NotAvailable { seq }),
                Err(e) => last_err = Some(e),
            }
        }
    }

    /// The least busy peer that has block `seq`, waiting a while for one to appear.
    async fn pick_peer(&self, seq: u64, fork: u64) -> Option<Arc<Peer>> {
        let mut changes = self.peer_changes();
        let deadline = tokio::time::Instant::now() + self.opts.request_timeout;
        loop {
            let best = self.peer_for_block(seq, fork);
            if best.is_some() {
                return best;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }
}

struct InflightGuard<'a> {
    replica: &'a Replica,
    seq: u64,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let waiters = self.replica.lock().inflight.remove(&self.seq);
        for w in waiters.into_iter().flatten() {
            let _ = w.send(());
        }
    }
}
