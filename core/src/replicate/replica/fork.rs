//! Following an author's truncation: find where the new signed tree departs from the one we
//! hold (comparing roots, then descending with hash requests), drop everything from there,
//! and take the new head.

use std::collections::HashMap;
use std::sync::Arc;

use super::Replica;
use crate::error::{Error, Result};
use crate::manifest::Verifier;
use crate::merkle::{flat, Head, Node};
use crate::replicate::connection::Peer;
use crate::store::CoreRecord;
use crate::wire::messages::Request;

impl Replica {
    /// The author truncated the core: find where the new tree departs from what we hold,
    /// drop everything from there, and take the new head.
    pub(super) async fn switch_fork(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        head: Head,
        nodes: Vec<Node>,
        verifier: Verifier,
    ) -> Result<()> {
        let old = self.head();
        let mut proven: HashMap<u64, Node> = nodes.iter().map(|n| (n.index, *n)).collect();
        let mut common = 0u64;
        'roots: for root in &head.roots {
            if self.store.node(root.index)?.as_ref() == Some(root) {
                common = flat::right_span(root.index) / 2 + 1;
                continue;
            }
            // Descend: compare the left child; go right when it is shared.
            let mut node = *root;
            loop {
                let Some((l, r)) = flat::children(node.index) else {
                    break 'roots; // a leaf that differs: common stays at its seq
                };
                let (nl, nr) = match (proven.get(&l), proven.get(&r)) {
                    (Some(a), Some(b)) => (*a, *b),
                    _ => {
                        let req = Request {
                            fork: head.fork,
                            hash: Some((l, 1)),
                            ..Request::default()
                        };
                        let data = self.request(peer, req).await?;
                        let h = data
                            .proof
                            .hash
                            .filter(|_| data.proof.fork == head.fork)
                            .ok_or_else(|| Error::verification("hash reply without the hash"))?;
                        let (a, b) = match h.nodes.as_slice() {
                            [a, b] if a.index == l && b.index == r => (*a, *b),
                            _ => return Err(Error::verification("hash reply has the wrong nodes")),
                        };
                        if Node::parent(&a, &b) != node {
                            return Err(Error::verification(
                                "hash reply does not hash to its parent",
                            ));
                        }
                        proven.insert(l, a);
                        proven.insert(r, b);
                        (a, b)
                    }
                };
                match self.store.node(l)? {
                    Some(ol) if ol == nl => {
                        common = flat::right_span(l) / 2 + 1;
                        node = nr;
                    }
                    Some(_) => node = nl,
                    None => {
                        // We hold nothing under l: nothing of ours is lost before it.
                        common = flat::left_span(l) / 2;
                        break 'roots;
                    }
                }
            }
        }
        let cut = common.min(old.length).min(head.length);
        let _fork = self.fork_exclusive();
        let mut s = self.lock();
        if s.record.head.fork >= head.fork {
            return Ok(()); // another task switched already
        }
        let mut truncations = s.record.truncations.clone();
        CoreRecord::push_truncation(&mut truncations, head.fork, cut);
        let record = CoreRecord {
            truncations,
            contiguous: s.record.contiguous.min(cut),
            head: head.clone(),
            manifest: s
                .record
                .manifest
                .clone()
                .or_else(|| (!verifier.is_compat()).then(|| verifier.manifest().to_bytes())),
        };
        let keep: Vec<Node> = proven.into_values().collect();
        self.store.truncate(cut, record.clone(), &keep)?;
        s.record = record;
        if s.verifier.is_none() {
            s.verifier = Some(verifier);
        }
        let event = s.event();
        drop(s);
        tracing::info!(core = %self.key, fork = head.fork, cut, "author truncated the core");
        self.publish(event);
        Ok(())
    }
}
