//! Proof verification: what a reader does with every `data` message before storing anything.
//!
//! 1. The block (or hash) part is hashed up its sibling path into a subtree root `R`.
//! 2. If there is an upgrade, the requester's roots are grown with the upgrade nodes (taking `R`
//!    where its index fits) into the new roots, extended with the additional nodes to the
//!    server's full length, and the signature is checked over that root set.
//! 3. If `R` was not used by the upgrade, it must equal a node we already trust.
//!
//! Only when all of this holds are the nodes handed back for storing.

use super::{append_root, flat, Head, Node, NodeQueue, Proof, MAX_LENGTH};
use crate::error::{Error, Result};
use crate::manifest::Verifier;

/// A proof that verified: the nodes to store, the block, and the new head if it grew.
#[derive(Debug, Clone, Default)]
pub struct VerifiedProof {
    /// Every node proven by this proof (block path, hash path, new roots, merged parents).
    pub nodes: Vec<Node>,
    /// `(seq, value)` of the proven block.
    pub block: Option<(u64, Vec<u8>)>,
    /// The new signed head, if the proof moved it forward (or to a new fork).
    pub head: Option<Head>,
}

/// Longest sibling path that can exist in a tree of at most 2^53 blocks.
const MAX_PATH: usize = 64;

/// Verifies `proof` against our signed head `local` and our stored nodes (`stored(index)`).
///
/// A proof for another fork must carry an upgrade from 0 and is checked as if we held nothing:
/// the caller decides what a new fork means for the data it holds.
pub fn verify_proof(
    proof: &Proof,
    local: &Head,
    verifier: &Verifier,
    mut stored: impl FnMut(u64) -> Result<Option<Node>>,
) -> Result<VerifiedProof> {
    let mut out = VerifiedProof::default();
    let same_fork = proof.fork == local.fork;
    if !same_fork && proof.upgrade.as_ref().map(|u| u.start) != Some(0) {
        return Err(Error::verification(format!(
            "proof for fork {} without a full upgrade (we are at fork {})",
            proof.fork, local.fork
        )));
    }

    // 1. Block or hash path → unverified subtree root.
    let untrusted = verify_path(proof, &mut out)?;

    // 2. Upgrade.
    let mut consumed = untrusted.is_none();
    if let Some(up) = &proof.upgrade {
        let new_len = up
            .start
            .checked_add(up.length)
            .filter(|&l| l <= MAX_LENGTH && up.length > 0);
        let Some(new_len) = new_len else {
            return Err(Error::verification("upgrade of an impossible length"));
        };
        let base: &[Node] = if same_fork && up.start == local.length {
            &local.roots
        } else if up.start == 0 {
            &[]
        } else {
            return Err(Error::verification(format!(
                "upgrade starts at {} but we have {}",
                up.start, local.length
            )));
        };
        let mut q = NodeQueue::new(&up.nodes, untrusted);
        let mut roots = base.to_vec();
        let mut i = 0;
        let mut grow = !roots.is_empty();
        for root in flat::full_roots(new_len) {
            if roots.get(i).map(|r| r.index) == Some(root) {
                i += 1;
                continue;
            }
            if grow {
                grow = false;
                if i < roots.len() {
                    // Merge our trailing roots with siblings from the proof until `root`.
                    let mut steps = 0;
                    while let Some(last) = roots.last().map(|r| r.index).filter(|&l| l != root) {
                        steps += 1;
                        if steps > MAX_PATH {
                            return Err(Error::verification("upgrade does not reach its root"));
                        }
                        let n = q.shift(flat::sibling(last))?;
                        out.nodes.push(n);
                        append_root(&mut roots, &mut out.nodes, n);
                    }
                    continue;
                }
            }
            let n = q.shift(root)?;
            out.nodes.push(n);
            append_root(&mut roots, &mut out.nodes, n);
        }
        consumed = consumed || q.extra.is_none();
        if q.remaining() > usize::from(q.extra.is_some()) {
            return Err(Error::verification("upgrade has unexpected extra nodes"));
        }

        // Additional nodes: from start+length to the server's full length.
        let extra = &up.additional_nodes;
        let mut k = 0;
        while let (Some(n), Some(last)) = (extra.get(k), roots.last()) {
            if n.index != flat::sibling(last.index) {
                break;
            }
            out.nodes.push(*n);
            append_root(&mut roots, &mut out.nodes, *n);
            k += 1;
        }
        while let Some(n) = extra.get(k) {
            let mut pos = roots.last().map(|r| flat::sibling(r.index)).unwrap_or(0);
            let mut steps = 0;
            while n.index != pos {
                match flat::children(pos) {
                    Some((left, _)) if steps < MAX_PATH => pos = left,
                    _ => {
                        return Err(Error::verification(format!(
                            "unexpected additional node {}",
                            n.index
                        )))
                    }
                }
                steps += 1;
            }
            out.nodes.push(*n);
            append_root(&mut roots, &mut out.nodes, *n);
            k += 1;
        }

        let length = roots
            .last()
            .map(|r| flat::right_span(r.index) / 2 + 1)
            .unwrap_or(0);
        if length > MAX_LENGTH || roots.iter().map(|r| r.index).ne(flat::full_roots(length)) {
            return Err(Error::verification("upgrade does not form a valid tree"));
        }
        let head = Head {
            length,
            fork: proof.fork,
            roots,
            signature: up.signature.clone(),
        };
        verifier.verify(
            &head.tree_hash(),
            length,
            proof.fork,
            up.signature.as_deref(),
        )?;
        if !same_fork || length > local.length {
            out.head = Some(head);
        }
    }

    // 3. A subtree root the upgrade did not use must be one we already trust.
    if !consumed {
        let r = untrusted.ok_or_else(|| Error::verification("internal: no subtree root"))?;
        if !same_fork {
            return Err(Error::verification(
                "block proof for a new fork must come with its roots",
            ));
        }
        match stored(r.index)? {
            Some(s) if s == r => {}
            Some(_) => {
                return Err(Error::verification(format!(
                    "node {} does not match our tree",
                    r.index
                )))
            }
            None => {
                return Err(Error::verification(format!(
                    "proof ends at node {}, which we do not hold",
                    r.index
                )))
            }
        }
    }
    Ok(out)
}

/// Hashes the block (or hash) part up its path; returns the unverified subtree root.
fn verify_path(proof: &Proof, out: &mut VerifiedProof) -> Result<Option<Node>> {
    let (start, nodes) = match (&proof.block, &proof.hash) {
        (Some(b), None) => {
            if b.index >= MAX_LENGTH {
                return Err(Error::verification("block index out of range"));
            }
            out.block = Some((b.index, b.value.clone()));
            (Some(Node::leaf(b.index, &b.value)), &b.nodes)
        }
        (None, Some(h)) => (None, &h.nodes),
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err(Error::verification("proof has both block and hash")),
    };
    if nodes.len() > MAX_PATH {
        return Err(Error::verification("proof path too long"));
    }
    let mut q = NodeQueue::new(nodes, None);
    let mut cur = match (start, &proof.hash) {
        (Some(leaf), _) => leaf,
        (None, Some(h)) => q.shift(h.index)?,
        (None, None) => return Ok(None),
    };
    out.nodes.push(cur);
    while q.remaining() > 0 {
        let sib = q.shift(flat::sibling(cur.index))?;
        cur = Node::parent(&cur, &sib);
        out.nodes.push(sib);
        out.nodes.push(cur);
    }
    Ok(Some(cur))
}
