//! The Merkle tree of a core: nodes, proof verification (reader side) and proof generation
//! (server side). Pure functions over a node source; no I/O.
//!
//! A proof answers one request. Its parts (JS `hypercore/lib/merkle-tree.js`):
//! - `block`: the block value plus the sibling hashes from its leaf up to a node the requester
//!   already trusts (or, when the block lies inside `upgrade`, up to a new root);
//! - `hash`: the same for a tree node (the node itself comes first);
//! - `upgrade`: the nodes that grow the requester's roots at `start` into the roots at
//!   `start + length`, then `additional_nodes` up to the server's full length, whose signature
//!   comes with it.

pub mod flat;
mod proof;
mod verify;

pub use proof::{generate_proof, ProofRequest};
pub use verify::{verify_proof, VerifiedProof};

use crate::crypto::{self, Hash};
use crate::error::{Error, Result};

/// Largest length or index we accept from anyone: JS numbers stop at 2^53.
pub const MAX_LENGTH: u64 = 1 << 53;

/// A tree node: flat-tree index, byte size of the blocks under it, hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// flat-tree index (leaf of block `n` = `2n`).
    pub index: u64,
    /// Total byte length of the blocks under this node.
    pub size: u64,
    /// The node hash.
    pub hash: Hash,
}

impl Node {
    /// The leaf node of block `seq`.
    pub fn leaf(seq: u64, value: &[u8]) -> Node {
        Node {
            index: seq.wrapping_mul(2),
            size: value.len() as u64,
            hash: crypto::leaf_hash(value),
        }
    }

    /// The parent of two sibling nodes.
    pub fn parent(a: &Node, b: &Node) -> Node {
        let (l, r) = if a.index < b.index { (a, b) } else { (b, a) };
        let size = l.size.wrapping_add(r.size);
        Node {
            index: flat::parent(l.index),
            size,
            hash: crypto::parent_hash(size, &l.hash, &r.hash),
        }
    }
}

/// `block` part of a proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockProof {
    /// Block number.
    pub index: u64,
    /// The block's bytes.
    pub value: Vec<u8>,
    /// Sibling nodes, leaf upward.
    pub nodes: Vec<Node>,
}

/// `hash` part of a proof (the requested node first, then siblings upward).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashProof {
    /// Tree index of the requested node.
    pub index: u64,
    /// The node itself, then its siblings upward.
    pub nodes: Vec<Node>,
}

/// `seek` part of a proof (we never ask for seeks; decoded for completeness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeekProof {
    /// Byte offset sought.
    pub bytes: u64,
    /// Nodes from the target upward.
    pub nodes: Vec<Node>,
}

/// `upgrade` part of a proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeProof {
    /// Length the requester has.
    pub start: u64,
    /// Blocks added.
    pub length: u64,
    /// Nodes growing the roots at `start` into the roots at `start + length`.
    pub nodes: Vec<Node>,
    /// Nodes from `start + length` up to the server's full length.
    pub additional_nodes: Vec<Node>,
    /// The signature of the server's full length.
    pub signature: Option<Vec<u8>>,
}

/// A proof: what a `data` message carries besides its request id and manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proof {
    /// Fork the proof is for.
    pub fork: u64,
    /// Block and its path.
    pub block: Option<BlockProof>,
    /// A tree node and its path.
    pub hash: Option<HashProof>,
    /// A seek.
    pub seek: Option<SeekProof>,
    /// New roots and signature.
    pub upgrade: Option<UpgradeProof>,
}

/// The signed head of a core: length, fork, roots and the signature over them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// Number of blocks.
    pub length: u64,
    /// Fork id (bumped by every truncation).
    pub fork: u64,
    /// Roots of the tree of `length` blocks, left to right.
    pub roots: Vec<Node>,
    /// Signature over `(tree hash, length, fork)`; `None` only for an empty core.
    pub signature: Option<Vec<u8>>,
}

impl Head {
    /// Hash of the root set.
    pub fn tree_hash(&self) -> Hash {
        crypto::tree_hash(self.roots.iter().map(|n| (n.index, n.size, &n.hash)))
    }
    /// Total bytes of all blocks.
    pub fn byte_length(&self) -> u64 {
        self.roots
            .iter()
            .fold(0u64, |a, n| a.saturating_add(n.size))
    }
}

/// Adds `node` as the newest root and merges sibling roots into parents, recording every node
/// created in `created`.
pub fn append_root(roots: &mut Vec<Node>, created: &mut Vec<Node>, node: Node) {
    roots.push(node);
    while let [.., b, a] = roots.as_slice() {
        if flat::sibling(a.index) != b.index {
            break;
        }
        let p = Node::parent(a, b);
        created.push(p);
        roots.pop();
        roots.pop();
        roots.push(p);
    }
}

/// Nodes from a list, taken in order, each expected at a given index (JS `NodeQueue`); the
/// `extra` node (a subtree root proven by the block part) is offered first when its index fits.
struct NodeQueue<'a> {
    nodes: &'a [Node],
    i: usize,
    extra: Option<Node>,
}

impl<'a> NodeQueue<'a> {
    fn new(nodes: &'a [Node], extra: Option<Node>) -> Self {
        NodeQueue { nodes, i: 0, extra }
    }
    fn remaining(&self) -> usize {
        self.nodes.len().saturating_sub(self.i) + usize::from(self.extra.is_some())
    }
    fn shift(&mut self, index: u64) -> Result<Node> {
        if let Some(e) = self.extra.filter(|e| e.index == index) {
            self.extra = None;
            return Ok(e);
        }
        let n = self
            .nodes
            .get(self.i)
            .ok_or_else(|| Error::verification(format!("proof lacks node {index}")))?;
        if n.index != index {
            return Err(Error::verification(format!(
                "proof has node {} where node {index} belongs",
                n.index
            )));
        }
        self.i += 1;
        Ok(*n)
    }
}
