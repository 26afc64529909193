//! Proof generation: what a server sends for a request (JS `generateProof`, `upgradeProof`,
//! `additionalUpgradeProof`, `blockAndSeekProof`). See the module docs of [`super`] for the
//! parts; [`super::verify_proof`] is the exact inverse.

use super::{flat, BlockProof, HashProof, Head, Node, Proof, UpgradeProof, MAX_LENGTH};
use crate::error::{Error, Result};

/// What a request asks to be proven.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProofRequest {
    /// `(block number, nodes the requester lacks on its path)`.
    pub block: Option<(u64, u64)>,
    /// `(tree index, nodes the requester lacks on its path)`.
    pub hash: Option<(u64, u64)>,
    /// `(start, length)`: the requester has `start` blocks and wants roots up to `start+length`.
    pub upgrade: Option<(u64, u64)>,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::invalid(reason)
}

/// Builds the proof for `req` from a tree whose signed head is `head`.
///
/// `value` is the requested block's bytes (read by the caller); `get(index)` returns a stored
/// node. A request the tree cannot answer (out of range, missing nodes) is an error, which a
/// server turns into `noData`.
pub fn generate_proof(
    head: &Head,
    req: &ProofRequest,
    value: Option<Vec<u8>>,
    mut get: impl FnMut(u64) -> Result<Option<Node>>,
) -> Result<Proof> {
    let mut proof = Proof {
        fork: head.fork,
        ..Proof::default()
    };
    if head.length == 0 {
        return Ok(proof);
    }
    let head2 = head.length * 2;
    let (from, to) = match req.upgrade {
        Some((start, length)) => {
            let end = start
                .checked_add(length)
                .filter(|&e| e <= MAX_LENGTH)
                .ok_or_else(|| bad("upgrade out of range"))?;
            (start * 2, end * 2)
        }
        None => (0, head2),
    };
    if from >= to || to > head2 {
        return Err(bad("invalid upgrade"));
    }
    // (tree index, nodes, is a block, last block index under it)
    let node = match (req.block, req.hash) {
        (Some((i, n)), None) if i < MAX_LENGTH => Some((i * 2, n, true, i)),
        (None, Some((i, n))) if i < 2 * MAX_LENGTH => Some((i, n, false, flat::right_span(i) / 2)),
        (None, None) => None,
        _ => return Err(bad("invalid block or hash request")),
    };
    if node.is_some_and(|(i, ..)| i >= head2) {
        return Err(bad("request beyond the length"));
    }

    let mut fetch =
        |i: u64| -> Result<Node> { get(i)?.ok_or_else(|| Error::NotAvailable { seq: i / 2 }) };
    let mut path: Option<Vec<Node>> = None;
    let mut sub_tree = head2;
    if let Some((index, nodes, is_block, last)) = node {
        let covered = req.upgrade.is_none_or(|(start, _)| last < start);
        if covered {
            sub_tree = nodes_to_root(index, nodes, to)?;
            path = Some(node_path(index, is_block, sub_tree, &mut fetch)?);
        } else if req.upgrade.is_some() {
            sub_tree = index;
        }
    }

    if let Some((start, length)) = req.upgrade {
        let mut p = Parts {
            node,
            sub_tree,
            path: &mut path,
        };
        let nodes = grow_roots(from, to, Some(&mut p), &mut fetch)?;
        let additional = if head2 > to {
            grow_roots(to, head2, None, &mut fetch)?
        } else {
            Vec::new()
        };
        proof.upgrade = Some(UpgradeProof {
            start,
            length,
            nodes,
            additional_nodes: additional,
            signature: head.signature.clone(),
        });
    }

    if let Some((index, _, is_block, _)) = node {
        let nodes = path.ok_or_else(|| bad("block is outside the requested upgrade"))?;
        if is_block {
            let value = value.ok_or_else(|| Error::NotAvailable { seq: index / 2 })?;
            proof.block = Some(BlockProof {
                index: index / 2,
                value,
                nodes,
            });
        } else {
            proof.hash = Some(HashProof { index, nodes });
        }
    }
    Ok(proof)
}

struct Parts<'a> {
    node: Option<(u64, u64, bool, u64)>,
    sub_tree: u64,
    path: &'a mut Option<Vec<Node>>,
}

/// Climbs `nodes` levels from `index`; refuses to climb past the roots of a `head`-node tree.
fn nodes_to_root(index: u64, nodes: u64, head: u64) -> Result<u64> {
    if nodes > 64 {
        return Err(bad("too many nodes requested"));
    }
    let mut cur = index;
    for _ in 0..nodes {
        cur = flat::parent(cur);
        if flat::contains(cur, head) {
            return Err(bad("nodes out of bounds"));
        }
    }
    Ok(cur)
}

/// The path from `start` up to `root`: the node itself first for a hash request, then siblings.
fn node_path(
    start: u64,
    is_block: bool,
    root: u64,
    fetch: &mut impl FnMut(u64) -> Result<Node>,
) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    if !is_block {
        out.push(fetch(start)?);
    }
    let mut cur = start;
    while cur != root {
        if out.len() > 64 || !flat::contains(root, cur) {
            return Err(bad("path does not reach its root"));
        }
        out.push(fetch(flat::sibling(cur))?);
        cur = flat::parent(cur);
    }
    Ok(out)
}

/// The nodes that grow a tree with leaves `[0, from)` into the roots of `[0, to)` (indices are
/// node indices, `from`/`to` = 2 × length). With `parts`, a requested block inside the range is
/// proven through the root that contains it instead of sending that root.
fn grow_roots(
    from: u64,
    to: u64,
    mut parts: Option<&mut Parts<'_>>,
    fetch: &mut impl FnMut(u64) -> Result<Node>,
) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    let mut connected = from == 0;
    for root in flat::full_roots(to / 2) {
        if root + flat::count_leaves(root) < from {
            continue; // the requester has this whole root
        }
        if !connected && flat::contains(root, from - 2) {
            connected = true;
            let target = from - 2;
            let mut cur = target;
            while cur != root {
                let sib = flat::sibling(cur);
                if sib > target {
                    match parts.as_deref_mut() {
                        Some(p) if p.path.is_none() && flat::contains(sib, p.sub_tree) => {
                            let (index, _, is_block, _) = p.node.ok_or_else(|| bad("no node"))?;
                            *p.path = Some(node_path(index, is_block, sib, fetch)?);
                        }
                        _ => out.push(fetch(sib)?),
                    }
                }
                cur = flat::parent(cur);
            }
            continue;
        }
        connected = true;
        match parts.as_deref_mut() {
            Some(p) if p.path.is_none() && flat::contains(root, p.sub_tree) => {
                let (index, _, is_block, _) = p.node.ok_or_else(|| bad("no node"))?;
                *p.path = Some(node_path(index, is_block, root, fetch)?);
            }
            _ => out.push(fetch(root)?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{append_root, verify_proof};
    use super::*;
    use crate::crypto::KeyPair;
    use crate::id::Key;
    use crate::manifest::{Manifest, Verifier};
    use std::collections::HashMap;

    /// A complete in-memory tree of `n` blocks, signed.
    struct Tree {
        nodes: HashMap<u64, Node>,
        blocks: Vec<Vec<u8>>,
        heads: Vec<Head>,
        verifier: Verifier,
    }

    fn tree(n: u64) -> Tree {
        let kp = KeyPair::from_seed(&[9u8; 32]);
        let m = Manifest::single_signer(kp.public_key());
        let verifier = Verifier::new(Key(m.hash()), Some(m)).unwrap();
        let mut nodes = HashMap::new();
        let mut roots = Vec::new();
        let mut blocks = Vec::new();
        let mut heads = vec![Head::default()];
        for i in 0..n {
            let v = format!("block {i}").into_bytes();
            let leaf = Node::leaf(i, &v);
            nodes.insert(leaf.index, leaf);
            let mut created = Vec::new();
            append_root(&mut roots, &mut created, leaf);
            for c in created {
                nodes.insert(c.index, c);
            }
            blocks.push(v);
            let mut h = Head {
                length: i + 1,
                fork: 0,
                roots: roots.clone(),
                signature: None,
            };
            h.signature = Some(verifier.sign(&kp, &h.tree_hash(), h.length, 0).unwrap());
            heads.push(h);
        }
        Tree {
            nodes,
            blocks,
            heads,
            verifier,
        }
    }

    fn indices(v: &[Node]) -> Vec<u64> {
        v.iter().map(|n| n.index).collect()
    }

    #[test]
    fn node_lists_match_js() {
        // Figures checked against JS core.proof() on a length-17 core (HYPERCORE-MAP 4.5).
        let t = tree(17);
        let head = &t.heads[17];
        let get = |i: u64| Ok(t.nodes.get(&i).copied());
        let p = |block: Option<(u64, u64)>, upgrade: Option<(u64, u64)>| {
            let req = ProofRequest {
                block,
                hash: None,
                upgrade,
            };
            let value = block.map(|(i, _)| t.blocks[i as usize].clone());
            generate_proof(head, &req, value, get).unwrap()
        };
        let a = p(Some((3, 0)), Some((0, 17)));
        assert_eq!(indices(&a.block.unwrap().nodes), vec![4, 1, 11, 23]);
        assert_eq!(indices(&a.upgrade.unwrap().nodes), vec![32]);
        assert!(p(Some((3, 0)), None).block.unwrap().nodes.is_empty());
        assert_eq!(
            indices(&p(Some((3, 2)), None).block.unwrap().nodes),
            vec![4, 1]
        );
        assert_eq!(
            indices(&p(None, Some((5, 12))).upgrade.unwrap().nodes),
            vec![10, 13, 23, 32]
        );
        let u = p(None, Some((0, 9))).upgrade.unwrap();
        assert_eq!(indices(&u.nodes), vec![7, 16]);
        assert_eq!(indices(&u.additional_nodes), vec![18, 21, 27, 32]);
        let b = p(Some((12, 0)), Some((11, 3)));
        assert_eq!(indices(&b.block.unwrap().nodes), vec![26]);
        let u = b.upgrade.unwrap();
        assert_eq!(indices(&u.nodes), vec![22]);
        assert_eq!(indices(&u.additional_nodes), vec![29, 32]);
    }

    /// Every (local length, block, target) combination verifies, and any flipped byte fails.
    #[test]
    fn generate_then_verify_everything() {
        let t = tree(19);
        for server_len in 1..=19u64 {
            let head = &t.heads[server_len as usize];
            for local_len in 0..server_len {
                let local = &t.heads[local_len as usize];
                for seq in 0..server_len {
                    // Requester holds the roots of `local_len` only.
                    let stored = |i: u64| Ok(local.roots.iter().find(|r| r.index == i).copied());
                    let upgrade = Some((local_len, server_len - local_len));
                    let nodes = if seq < local_len {
                        // count nodes missing on the path up to a root we hold
                        let mut c = 0;
                        let mut cur = seq * 2;
                        while !local.roots.iter().any(|r| r.index == cur) {
                            c += 1;
                            cur = flat::parent(cur);
                        }
                        c
                    } else {
                        0
                    };
                    let req = ProofRequest {
                        block: Some((seq, nodes)),
                        hash: None,
                        upgrade,
                    };
                    let get = |i: u64| Ok(t.nodes.get(&i).copied());
                    let proof =
                        generate_proof(head, &req, Some(t.blocks[seq as usize].clone()), get)
                            .unwrap();
                    let v = verify_proof(&proof, local, &t.verifier, stored).unwrap_or_else(|e| {
                        panic!("len {server_len} local {local_len} seq {seq}: {e}")
                    });
                    let new_head = v.head.unwrap();
                    assert_eq!(new_head.length, server_len);
                    assert_eq!(new_head.roots, head.roots);
                    assert_eq!(v.block.unwrap().1, t.blocks[seq as usize]);
                    for n in &v.nodes {
                        assert_eq!(t.nodes.get(&n.index), Some(n));
                    }
                    // Tamper with the block value.
                    let mut bad = proof.clone();
                    if let Some(b) = bad.block.as_mut() {
                        b.value.push(1);
                    }
                    assert!(verify_proof(&bad, local, &t.verifier, stored).is_err());
                    // Tamper with the signature.
                    let mut bad = proof.clone();
                    if let Some(s) = bad.upgrade.as_mut().and_then(|u| u.signature.as_mut()) {
                        s[10] ^= 1;
                    }
                    assert!(verify_proof(&bad, local, &t.verifier, stored).is_err());
                    // Claim a longer length than was signed.
                    let mut bad = proof.clone();
                    if let Some(u) = bad.upgrade.as_mut() {
                        u.signature = head.signature.clone().map(|mut s| {
                            s[0] ^= 0x80;
                            s
                        });
                    }
                    assert!(verify_proof(&bad, local, &t.verifier, stored).is_err());
                }
            }
        }
    }

    #[test]
    fn hash_requests_verify() {
        let t = tree(16);
        let head = &t.heads[16];
        let get = |i: u64| Ok(t.nodes.get(&i).copied());
        let stored = |i: u64| Ok(head.roots.iter().find(|r| r.index == i).copied());
        // Ask for node 5 (blocks 2,3) with 2 levels to reach root 15: path 5 → 3 → 7 → 15.
        let req = ProofRequest {
            block: None,
            hash: Some((5, 3)),
            upgrade: None,
        };
        let proof = generate_proof(head, &req, None, get).unwrap();
        assert_eq!(
            indices(&proof.hash.as_ref().unwrap().nodes),
            vec![5, 1, 11, 23]
        );
        let v = verify_proof(&proof, head, &t.verifier, stored).unwrap();
        // Node 5 and its sibling 1 are proven only as a pair (their sizes could split their
        // parent's otherwise), so only the nodes from their parent 3 up are handed back.
        assert_eq!(indices(&v.nodes), vec![3, 11, 7, 23, 15]);
        assert!(v.nodes.iter().all(|n| t.nodes.get(&n.index) == Some(n)));
    }

    /// Found by the `merkle_proof` fuzz target's check that a verified proof hands back only
    /// the tree's own nodes (fuzz/corpus/merkle_proof/regression-hash-sizes): a parent's hash
    /// commits to the sum of its children's sizes, not to the split, so a proof whose two
    /// children both come from the peer verified with one size raised and the other lowered,
    /// and those wrong sizes were stored (later honest proofs would not match them).
    #[test]
    fn a_proof_cannot_plant_wrong_sizes() {
        let t = tree(16);
        let head = &t.heads[16];
        let get = |i: u64| Ok(t.nodes.get(&i).copied());
        let stored = |i: u64| Ok(head.roots.iter().find(|r| r.index == i).copied());
        let shift = |nodes: &mut [Node], a: usize, b: usize| {
            nodes[a].size += 1;
            nodes[b].size -= 1;
        };
        // The requested node of a hash proof and its sibling.
        let req = ProofRequest {
            block: None,
            hash: Some((5, 3)),
            upgrade: None,
        };
        let mut proof = generate_proof(head, &req, None, get).unwrap();
        shift(&mut proof.hash.as_mut().unwrap().nodes, 0, 1);
        let v = verify_proof(&proof, head, &t.verifier, stored).unwrap();
        assert!(v.nodes.iter().all(|n| t.nodes.get(&n.index) == Some(n)));

        // Two additional nodes of an upgrade that merge into a parent: 4 → 8 blocks with
        // 12 and 14 in place of their parent 13.
        let t = tree(8);
        let local = &t.heads[4];
        let req = ProofRequest {
            block: None,
            hash: None,
            upgrade: Some((4, 1)),
        };
        let mut proof =
            generate_proof(&t.heads[8], &req, None, |i| Ok(t.nodes.get(&i).copied())).unwrap();
        let up = proof.upgrade.as_mut().unwrap();
        assert_eq!(indices(&up.additional_nodes), vec![10, 13]);
        up.additional_nodes = vec![t.nodes[&10], t.nodes[&12], t.nodes[&14]];
        shift(&mut up.additional_nodes, 1, 2);
        let stored = |i: u64| Ok(local.roots.iter().find(|r| r.index == i).copied());
        let v = verify_proof(&proof, local, &t.verifier, stored).unwrap();
        assert_eq!(v.head.as_ref().unwrap().length, 8);
        assert!(!v.nodes.is_empty());
        assert!(v.nodes.iter().all(|n| t.nodes.get(&n.index) == Some(n)));
        // Unshifted, the pair is still unpinned (nothing fixes the split): not stored either.
        assert!(!v.nodes.iter().any(|n| n.index == 12 || n.index == 14));
    }

    #[test]
    fn bad_requests_are_errors() {
        let t = tree(8);
        let head = &t.heads[8];
        let get = |i: u64| Ok(t.nodes.get(&i).copied());
        for req in [
            ProofRequest {
                block: Some((8, 0)),
                hash: None,
                upgrade: None,
            },
            ProofRequest {
                block: Some((u64::MAX, 0)),
                hash: None,
                upgrade: None,
            },
            ProofRequest {
                block: Some((1, 100)),
                hash: None,
                upgrade: None,
            },
            ProofRequest {
                block: None,
                hash: None,
                upgrade: Some((3, 9)),
            },
            ProofRequest {
                block: None,
                hash: None,
                upgrade: Some((u64::MAX, 2)),
            },
            ProofRequest {
                block: None,
                hash: None,
                upgrade: Some((8, 0)),
            },
            ProofRequest {
                block: None,
                hash: Some((u64::MAX, 3)),
                upgrade: None,
            },
        ] {
            assert!(
                generate_proof(head, &req, Some(vec![1]), get).is_err(),
                "{req:?}"
            );
        }
    }
}
