//! The follow list: following a feed (its known peers, its ingest task, asking every live
//! connection for it), unfollowing and purging it, and each feed's status. Persisted in
//! sled (`state.rs`); a feed's ingest loop is in `ingest.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use apiary_core::Key;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::extract;
use crate::index::IndexOp;
use crate::state::Follow;
use crate::{Aggregator, FeedTask};

impl Aggregator {
    /// Follows a feed (or adds peers to a followed one). Returns true if it is new.
    pub async fn follow(self: &Arc<Self>, key: Key, peers: Vec<String>) -> Result<bool> {
        for p in &peers {
            check_peer(p)?;
        }
        let had = self.state.follow(&key)?;
        let mut f = had.clone().unwrap_or_else(|| Follow {
            peers: Vec::new(),
            added_at: extract::format_time(apiary_core::tid::now_micros() as i64),
        });
        for p in peers {
            if !f.peers.contains(&p) {
                f.peers.push(p);
            }
        }
        if let Some(c) = &self.cluster {
            // The follow list is the cluster's: every node's watch mirrors it, and the
            // follower holding the feed's shard starts it.
            if had.as_ref() != Some(&f) {
                c.follow(&key.to_z32(), &f).await?;
            }
            self.state.put_follow(&key, &f)?;
            return Ok(had.is_none());
        }
        let new = self.state.put_follow(&key, &f)?;
        self.start(key, &f.peers)?;
        Ok(new)
    }

    /// Stops a feed's task (a cluster follower giving up the feed's shard). Its replica,
    /// peers and channels stay open: the shard may come back soon (leases move back and
    /// forth while members come and go), and closing a channel while it is reopened could
    /// leave the replica without its peer. `drop_cluster_feed` closes them.
    pub(crate) fn stop_feed(&self, key: &Key) {
        let t = self
            .feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some(t) = t {
            t.task.abort();
        }
    }

    /// Drops everything of a feed this node holds (cluster mode, the feed left the follow
    /// list): its task, blocks and state.
    pub(crate) async fn drop_cluster_feed(&self, key: &Key) {
        let z = key.to_z32();
        let known = self.state.follow(key).ok().flatten().is_some()
            || self.index.checkpoint(&z).version > 0
            || self.replica(key).is_some();
        if !known {
            return; // e.g. a delete marker of the follow list's history, long applied
        }
        self.stop_feed(key);
        self.pool.unwant(key);
        self.discovery.leave(key);
        self.rep.remove(key).await;
        if let Err(e) = self.rep.store().remove_core(key) {
            tracing::warn!(feed = %key, "removing its blocks: {e}");
        }
        if let Err(e) = self.state.remove(key) {
            tracing::warn!(feed = %key, "removing its state: {e}");
        }
        // An indexer's entries of the feed go when its consumer reaches the chain's
        // tombstone, in stream order (a re-follow's new chain comes after it).
    }

    /// Starts the ingest task of a followed feed (once), with its known peers.
    pub(crate) fn start(self: &Arc<Self>, key: Key, peers: &[String]) -> Result<()> {
        let replica = self.rep.replica(key)?;
        for p in peers {
            self.pool.want(p, replica.clone());
        }
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if feeds.contains_key(&key) {
            return Ok(());
        }
        self.look_for_peers(&key, &replica);
        let me = self.clone();
        let r = replica.clone();
        let span = tracing::info_span!("feed", feed = %key);
        let task = self
            .rt
            .spawn(async move { me.run_feed(r).await }.instrument(span));
        feeds.insert(key, FeedTask { task, replica });
        Ok(())
    }

    /// Looks for the peers of a feed beyond its known addresses: its DHT topic, and every
    /// peer already connected (a publisher that dialed in, a DHT peer found for another bee
    /// may hold this one too: ask it now rather than on its next connection).
    fn look_for_peers(&self, key: &Key, replica: &Arc<apiary_core::replicate::Replica>) {
        self.discovery.join(key);
        for c in self.rep.connections() {
            let r = replica.clone();
            self.rt
                .spawn(async move { c.open(&r).await }.in_current_span());
        }
    }

    /// Unfollows a feed and purges everything of it: entries, checkpoint, blocks, state.
    pub async fn unfollow(&self, key: &Key) -> Result<bool> {
        let known = self.state.follow(key)?.is_some();
        if let Some(c) = &self.cluster {
            if known {
                c.unfollow(&key.to_z32()).await?;
                self.drop_cluster_feed(key).await;
            }
            return Ok(known);
        }
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

    /// The replica of a followed feed (`None` if not followed).
    pub(crate) fn replica(&self, key: &Key) -> Option<Arc<apiary_core::replicate::Replica>> {
        self.feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|t| t.replica.clone())
    }

    /// The replica a proof of a followed feed reads: the feed's own, or, on a cluster node
    /// that does not hold the feed's shard (another follower does, or this node only
    /// indexes), one opened here from the feed's peers, waiting up to `wait` for their
    /// signed head. It stays open (sparse: only the blocks proofs fetched) until the feed
    /// is unfollowed, and becomes the feed's own if its shard moves here. `None`: not
    /// followed.
    pub(crate) async fn proof_replica(
        &self,
        key: &Key,
        wait: std::time::Duration,
    ) -> Result<Option<Arc<apiary_core::replicate::Replica>>> {
        if let Some(r) = self.replica(key) {
            return Ok(Some(r));
        }
        if self.cluster.is_none() {
            return Ok(None);
        }
        let Some(f) = self.state.follow(key)? else {
            return Ok(None);
        };
        let replica = self.rep.replica(*key)?;
        for p in &f.peers {
            self.pool.want(p, replica.clone());
        }
        self.look_for_peers(key, &replica);
        replica.update(wait).await?;
        if replica.length() == 0 && replica.peers().is_empty() {
            return Err(Error::Unavailable(format!(
                "feed {key} is followed by another node of the cluster and none of its peers \
                 answered this one"
            )));
        }
        Ok(Some(replica))
    }

    /// Every feed with a running task, and its replica (from memory: no state read).
    pub(crate) fn replicas(&self) -> Vec<(Key, Arc<apiary_core::replicate::Replica>)> {
        self.feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, t)| (*k, t.replica.clone()))
            .collect()
    }

    /// Status of one feed, or `None` if not followed.
    pub fn status(&self, key: &Key) -> Result<Option<Value>> {
        let Some(f) = self.state.follow(key)? else {
            return Ok(None);
        };
        let replica = self.replica(key);
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
        let mut v = json!({
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
        });
        if let Some(cl) = &self.cluster {
            let (shard, holder) = cl.holder(key);
            v["cluster"] = json!({
                "node": cl.node,
                "shard": shard,
                "holder": holder,
                "streamSequence": self.index.checkpoint(crate::cluster::STREAM_CHECKPOINT).version,
            });
        }
        Ok(Some(v))
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
