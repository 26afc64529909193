//! Proof verification: what a reader does with every `data` message before storing anything.
//!
//! 1. The block (or hash) part is hashed up its sibling path into a subtree root `R`.
//! 2. If there is an upgrade, the requester's roots are grown with the upgrade nodes (taking `R`
//!    where its index fits) into the new roots, extended with the additional nodes to the
//!    server's full length, and the signature is checked over that root set.
//! 3. If `R` was not used by the upgrade, it must equal a node we already trust.
//!
//! Only when all of this holds are the nodes handed back for storing, and of those only the
//! ones whose size the proof pins down (see [`keep_pinned`]).

use std::collections::HashMap;

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
    // Positions in `out.nodes` of nodes the proof gave (the others we computed).
    let mut given: Vec<usize> = Vec::new();
    let same_fork = proof.fork == local.fork;
    if !same_fork && proof.upgrade.as_ref().map(|u| u.start) != Some(0) {
        return Err(Error::verification(format!(
            "proof for fork {} without a full upgrade (we are at fork {})",
            proof.fork, local.fork
        )));
    }

    // 1. Block or hash path → unverified subtree root.
    let untrusted = verify_path(proof, &mut out, &mut given)?;

    // Nodes whose size is known to be true: our roots, the signed roots, a stored node.
    let mut trusted: Vec<Node> = if same_fork {
        local.roots.clone()
    } else {
        Vec::new()
    };

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
                        push_given(&mut out, &mut given, n, untrusted);
                        append_root(&mut roots, &mut out.nodes, n);
                    }
                    continue;
                }
            }
            let n = q.shift(root)?;
            push_given(&mut out, &mut given, n, untrusted);
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
            push_given(&mut out, &mut given, *n, None);
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
            push_given(&mut out, &mut given, *n, None);
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
        trusted.extend_from_slice(&head.roots);
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
            Some(s) if s == r => trusted.push(s),
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
    out.nodes = keep_pinned(out.nodes, &given, &trusted);
    Ok(out)
}

/// Records a node the proof gave (unless it is `computed`, the subtree root we hashed).
fn push_given(out: &mut VerifiedProof, given: &mut Vec<usize>, n: Node, computed: Option<Node>) {
    if computed != Some(n) {
        given.push(out.nodes.len());
    }
    out.nodes.push(n);
}

/// The verified nodes whose size is pinned down, in order.
///
/// A node's hash commits to its size, and a parent's to its children's hashes and their
/// summed size, but not to how that sum splits between them. So when both children of a
/// parent come from the proof (the requested node of a hash proof and its sibling, or two
/// additional nodes of an upgrade that merge), the parent verifies for any sizes with the
/// right sum: storing them would let a peer plant wrong sizes in our tree, which honest
/// proofs would then fail to match. A node is pinned when we computed it (a leaf from its
/// block, a parent from its children), when it is `trusted` (our roots, signed roots, a
/// stored node it equals), or when it is a child of a computed parent whose other child is
/// pinned (its size is the parent's minus the sibling's, its hash is in the parent's).
fn keep_pinned(nodes: Vec<Node>, given: &[usize], trusted: &[Node]) -> Vec<Node> {
    let mut pinned = vec![true; nodes.len()];
    for &i in given {
        if let (Some(p), Some(n)) = (pinned.get_mut(i), nodes.get(i)) {
            *p = trusted.contains(n);
        }
    }
    if pinned.iter().all(|&p| p) {
        return nodes;
    }
    // Candidates for each index: positions in `nodes`, and trusted nodes (always pinned).
    let mut at: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        at.entry(n.index).or_default().push(i);
    }
    let is_given = {
        let mut g = vec![false; nodes.len()];
        for &i in given {
            if let Some(x) = g.get_mut(i) {
                *x = true;
            }
        }
        g
    };
    loop {
        let mut changed = false;
        for (pi, parent) in nodes.iter().enumerate() {
            if is_given.get(pi).copied().unwrap_or(true) {
                continue;
            }
            let Some((li, ri)) = flat::children(parent.index) else {
                continue;
            };
            let side = |idx: u64| -> Vec<(Node, Option<usize>)> {
                let mut v: Vec<(Node, Option<usize>)> = at
                    .get(&idx)
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|&p| nodes.get(p).map(|n| (*n, Some(p))))
                            .collect()
                    })
                    .unwrap_or_default();
                v.extend(
                    trusted
                        .iter()
                        .filter(|t| t.index == idx)
                        .map(|t| (*t, None)),
                );
                v
            };
            let pin = |p: &Option<usize>, pinned: &[bool]| {
                p.and_then(|i| pinned.get(i).copied()).unwrap_or(true)
            };
            for (l, lp) in side(li) {
                for (r, rp) in side(ri) {
                    let (lpin, rpin) = (pin(&lp, &pinned), pin(&rp, &pinned));
                    if lpin == rpin || Node::parent(&l, &r) != *parent {
                        continue;
                    }
                    for p in [lp, rp].into_iter().flatten() {
                        if let Some(x) = pinned.get_mut(p) {
                            changed |= !*x;
                            *x = true;
                        }
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    nodes
        .into_iter()
        .zip(pinned)
        .filter_map(|(n, p)| p.then_some(n))
        .collect()
}

/// Hashes the block (or hash) part up its path; returns the unverified subtree root.
fn verify_path(
    proof: &Proof,
    out: &mut VerifiedProof,
    given: &mut Vec<usize>,
) -> Result<Option<Node>> {
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
        (None, Some(h)) => {
            let n = q.shift(h.index)?;
            given.push(out.nodes.len());
            n
        }
        (None, None) => return Ok(None),
    };
    out.nodes.push(cur);
    while q.remaining() > 0 {
        let sib = q.shift(flat::sibling(cur.index))?;
        cur = Node::parent(&cur, &sib);
        given.push(out.nodes.len());
        out.nodes.push(sib);
        out.nodes.push(cur);
    }
    Ok(Some(cur))
}
