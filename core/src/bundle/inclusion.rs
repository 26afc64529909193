//! Inclusion proofs (`apiary-inclusion-proof/1`): what an index-only aggregator can still
//! prove when the blocks a lookup reads are no longer held and no peer of the feed is
//! online. It proves that the author signed a log in which block `seq` has this size and
//! hash (its leaf), from the tree nodes kept; not which key or value the block holds.
//!
//! ```text
//! { "format": "apiary-inclusion-proof/1", "feed", "tree" (as in a bundle),
//!   "version": V, "key": K,                 what the index says: not proven
//!   "seq": S, "leaf": {"index": 2S, "size", "hash"},
//!   "nodes": [...],                          the leaf's siblings up to its signed root
//!   "note": why this is not a full bundle }
//! ```
//! Checking: the signature as for a bundle, `leaf.index = 2·seq < 2·length`, the leaf
//! hashed up with `nodes` (each used once) to the signed root.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::build::{shared_paths, tree_of};
use super::format::JsonNode;
use super::verify::{merkle, signed_head};
use super::BundleTree;
use crate::error::{Error, Result};
use crate::id::Key;
use crate::replicate::Replica;

/// The `format` of an inclusion proof.
pub const INCLUSION_FORMAT: &str = "apiary-inclusion-proof/1";

/// An inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inclusion {
    /// [`INCLUSION_FORMAT`].
    pub format: String,
    /// The core key, hex.
    pub feed: String,
    /// The signed head.
    pub tree: BundleTree,
    /// The bee version the aggregator indexed (not proven).
    pub version: u64,
    /// The key the aggregator says block `seq` wrote (not proven).
    pub key: String,
    /// The block.
    pub seq: u64,
    /// Its leaf node: index `2·seq`, its size and hash.
    pub leaf: JsonNode,
    /// The leaf's siblings up to its signed root.
    pub nodes: Vec<JsonNode>,
    /// Why this is an inclusion proof alone.
    pub note: String,
}

/// What an inclusion proof proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenInclusion {
    /// The feed.
    pub feed: Key,
    /// The signed length.
    pub length: u64,
    /// Its fork.
    pub fork: u64,
    /// The block in the signed log.
    pub seq: u64,
    /// Its byte size.
    pub size: u64,
    /// Its leaf hash.
    pub hash: [u8; 32],
}

/// The inclusion proof of block `seq` of `replica`, from its stored tree nodes alone.
pub fn build_inclusion(
    replica: &Arc<Replica>,
    key: &str,
    version: u64,
    seq: u64,
    note: &str,
) -> Result<Inclusion> {
    let head = replica.head();
    if seq >= head.length {
        return Err(Error::invalid(format!(
            "block {seq} is past the signed length {}",
            head.length
        )));
    }
    let store = replica.store();
    let node = |i: u64| {
        store
            .node(i)?
            .ok_or_else(|| Error::NotAvailable { seq: i / 2 })
    };
    let leaf = node(seq * 2)?;
    let nodes = shared_paths(&head, &BTreeSet::from([seq]), node)?;
    let inclusion = Inclusion {
        format: INCLUSION_FORMAT.into(),
        feed: replica.key().to_hex(),
        tree: tree_of(replica, &head),
        version,
        key: key.to_owned(),
        seq,
        leaf: JsonNode::of(&leaf),
        nodes: nodes.values().map(JsonNode::of).collect(),
        note: note.to_owned(),
    };
    verify_inclusion(&inclusion, replica.key())?;
    Ok(inclusion)
}

/// Checks an inclusion proof against the core key `feed`.
pub fn verify_inclusion(p: &Inclusion, feed: &Key) -> Result<ProvenInclusion> {
    let fail = |r: String| Error::Verification { reason: r };
    if p.format != INCLUSION_FORMAT {
        return Err(fail(format!(
            "format {:?}, not {INCLUSION_FORMAT:?}",
            p.format
        )));
    }
    if p.feed != feed.to_hex() {
        return Err(fail(format!(
            "the proof is for feed {}, not {feed}",
            p.feed
        )));
    }
    let head = signed_head(&p.tree, feed)?;
    let leaf = p.leaf.node()?;
    if p.seq >= head.length || Some(leaf.index) != p.seq.checked_mul(2) {
        return Err(fail(format!(
            "leaf {} is not block {} of a log of {}",
            leaf.index, p.seq, head.length
        )));
    }
    merkle(&head, &BTreeMap::from([(p.seq, leaf)]), &p.nodes)?;
    Ok(ProvenInclusion {
        feed: *feed,
        length: head.length,
        fork: head.fork,
        seq: p.seq,
        size: leaf.size,
        hash: leaf.hash,
    })
}
