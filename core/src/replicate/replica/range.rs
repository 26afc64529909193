//! Downloading a range of blocks with many requests in flight.
//!
//! Requests go straight to the peers ([`Peer::request_tagged`]) with one answer queue, and
//! this one task verifies and stores the answers as they come, many per wake-up. (A task, a
//! oneshot and a peer choice per block cost more than verifying the block.) Whatever fails
//! here — no answer in time, `noData`, a bad proof, no peer — goes through [`Replica::get`],
//! which retries on other peers and reports the error.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::Replica;
use crate::error::{Error, Result};
use crate::replicate::connection::{Answers, Peer};
use crate::wire::messages::{Data, Request};

/// Requests of one range sent to peers and not answered yet, by block.
type Waiting = HashMap<u64, Arc<Peer>>;

/// Blocks of a range are dealt to the lanes in runs of this many (a block page), so that
/// lanes mostly write different pages.
const LANE_RUN: u64 = 16;

impl Replica {
    /// Downloads blocks `[start, end)` with up to `parallel` requests in flight.
    ///
    /// Verifying and storing take more CPU than the peer needs to answer, so two lanes
    /// (tasks, each with its share of the requests) do it side by side on a multi-core host.
    pub async fn download_range(
        self: &Arc<Self>,
        start: u64,
        end: u64,
        parallel: usize,
    ) -> Result<()> {
        let lanes = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 2) as u64;
        if lanes == 1 || end.saturating_sub(start) < 2 * LANE_RUN {
            return self.download_lane(start, end, parallel, 0, 1).await;
        }
        let per_lane = parallel.div_ceil(lanes as usize);
        let other = {
            let me = self.clone();
            tokio::spawn(
                async move { me.download_lane(start, end, per_lane, 1, lanes).await }
                    .in_current_span(),
            )
        };
        let mine = self.download_lane(start, end, per_lane, 0, lanes).await;
        let theirs = match other.await {
            Ok(r) => r,
            Err(e) => Err(Error::closed(format!("download lane failed: {e}"))),
        };
        mine.and(theirs)
    }

    /// The blocks of `[start, end)` whose run of [`LANE_RUN`] falls to `lane` of `lanes`.
    async fn download_lane(
        self: &Arc<Self>,
        start: u64,
        end: u64,
        parallel: usize,
        lane: u64,
        lanes: u64,
    ) -> Result<()> {
        let parallel = parallel.max(1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut waiting = Waiting::new();
        let mut slow: JoinSet<Result<()>> = JoinSet::new();
        let mut next = start;
        let mut first_err: Option<Error> = None;
        let mut turn = 0usize;
        loop {
            if first_err.is_none() && next < end && waiting.len() + slow.len() < parallel {
                let peers = self.bulk_peers(self.fork());
                while next < end && waiting.len() + slow.len() < parallel {
                    let seq = next;
                    next += 1;
                    if (seq / LANE_RUN) % lanes != lane || self.store.has_block(seq)? {
                        continue;
                    }
                    let peer = pick(&peers, seq, &mut turn);
                    let sent = match peer {
                        Some(p) => self.send_tagged(p, seq, &tx).await?,
                        None => false,
                    };
                    match (sent, peer) {
                        (true, Some(p)) => {
                            waiting.insert(seq, p.clone());
                        }
                        _ => self.get_slowly(&mut slow, seq),
                    }
                }
            }
            if waiting.is_empty() && slow.is_empty() {
                break;
            }
            tokio::select! {
                got = rx.recv(), if !waiting.is_empty() => {
                    let Some(first) = got else { break };
                    let mut answer = Some(first);
                    // Take every answer already queued before waiting again.
                    while let Some((seq, res)) = answer.take() {
                        self.on_answer(&mut waiting, &mut slow, seq, res).await;
                        answer = rx.try_recv().ok();
                    }
                }
                done = slow.join_next(), if !slow.is_empty() => {
                    let err = match done {
                        Some(Ok(Ok(()))) | None => None,
                        Some(Ok(Err(e))) => Some(e),
                        Some(Err(e)) => Some(Error::closed(format!("download task failed: {e}"))),
                    };
                    if let Some(e) = err {
                        first_err.get_or_insert(e);
                        next = end;
                    }
                }
                () = tokio::time::sleep(self.opts.request_timeout), if !waiting.is_empty() => {
                    // Nothing came back for a whole timeout: ask those again the slow way.
                    for (seq, peer) in waiting.drain() {
                        self.strike(&peer);
                        self.get_slowly(&mut slow, seq);
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sends the request for block `seq` to `peer`, answered on `tx`. False if the
    /// connection is gone.
    async fn send_tagged(&self, peer: &Arc<Peer>, seq: u64, tx: &Answers) -> Result<bool> {
        let (fork, length, need_manifest) = {
            let s = self.lock();
            (
                s.record.head.fork,
                s.record.head.length,
                s.verifier.is_none(),
            )
        };
        let req = Request {
            fork,
            block: Some((seq, self.missing_nodes(seq, length)?)),
            manifest: need_manifest && peer.remote().has_manifest,
            ..Request::default()
        };
        Ok(peer.request_tagged(req, seq, tx).await)
    }

    /// Block `seq` the slow way: [`Replica::get`], with its retries on other peers.
    fn get_slowly(self: &Arc<Self>, slow: &mut JoinSet<Result<()>>, seq: u64) {
        let me = self.clone();
        slow.spawn(async move { me.get(seq).await.map(|_| ()) });
    }

    async fn on_answer(
        self: &Arc<Self>,
        waiting: &mut Waiting,
        slow: &mut JoinSet<Result<()>>,
        seq: u64,
        res: Result<Data>,
    ) {
        // An answer after its timeout: the slow path has that block already.
        let Some(peer) = waiting.remove(&seq) else {
            return;
        };
        let ok = match res {
            Ok(data) => self.apply(&peer, data).await.is_ok(),
            Err(_) => false,
        };
        if ok {
            self.forgive(&peer);
        } else {
            self.strike(&peer);
            self.get_slowly(slow, seq);
        }
    }
}

/// A peer that has block `seq`, taking turns among those that do.
fn pick<'a>(peers: &'a [(Arc<Peer>, u64)], seq: u64, turn: &mut usize) -> Option<&'a Arc<Peer>> {
    let n = peers.len();
    for i in 0..n {
        let (p, len) = peers.get((*turn + i) % n)?;
        if *len > seq {
            *turn = (*turn + i + 1) % n;
            return Some(p);
        }
    }
    None
}
