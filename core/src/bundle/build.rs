//! Building a bundle from a replica: the walk of a `get`, the blocks it reads (fetched from
//! peers when the store lacks them) and their Merkle paths to the signed roots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::format::{b64, JsonBlock, JsonNode};
use super::{verify, Bundle, BundleResult, BundleTree, FORMAT};
use crate::bee::walk::{self, Walk};
use crate::bee::BeeBlock;
use crate::error::{Error, Result};
use crate::merkle::{flat, Head, Node};
use crate::replicate::Replica;

/// The proof that `key` (full, with any sub prefix) has the value it has, or is absent, at
/// bee version `version` of `replica`, against the replica's signed head. Blocks the store
/// lacks are fetched from the replica's peers ([`Replica::get`]) when `fetch`, else they are
/// an [`Error::NotAvailable`].
///
/// The bundle is checked with [`verify`] before it is returned: a store that lost a node or
/// a head that moved to another fork meanwhile is an error, never a bundle that fails later.
pub async fn build(replica: &Arc<Replica>, key: &str, version: u64, fetch: bool) -> Result<Bundle> {
    let head = replica.head();
    if head.length == 0 {
        return Err(Error::invalid("the core is empty: nothing is signed yet"));
    }
    if version == 0 || version > head.length {
        return Err(Error::invalid(format!(
            "version {version} is not between 1 and the signed length {}",
            head.length
        )));
    }
    let mut have: HashMap<u64, (Arc<BeeBlock>, Vec<u8>)> = HashMap::new();
    let end = loop {
        match walk::get(key.as_bytes(), version, |s| {
            have.get(&s).map(|b| b.0.clone())
        })? {
            Walk::Need(0) => return Err(Error::invalid("a tree node points at the header")),
            Walk::Need(seq) => {
                let raw = match fetch {
                    true => replica.get(seq).await?,
                    false => replica
                        .store()
                        .block(seq)?
                        .ok_or(Error::NotAvailable { seq })?,
                };
                let b = Arc::new(BeeBlock::decode(seq, &raw)?);
                have.insert(seq, (b, raw));
            }
            end => break end,
        }
    };
    let result = match end {
        Walk::Found(b) => BundleResult {
            found: true,
            seq: Some(b.seq),
            value: b.value.as_deref().map(b64),
        },
        _ => BundleResult {
            found: false,
            seq: None,
            value: None,
        },
    };
    let seqs: BTreeSet<u64> = have.keys().copied().collect();
    let store = replica.store();
    let nodes = shared_paths(&head, &seqs, |i| {
        store
            .node(i)?
            .ok_or_else(|| Error::NotAvailable { seq: i / 2 })
    })?;
    let bundle = Bundle {
        format: FORMAT.into(),
        feed: replica.key().to_hex(),
        tree: tree_of(replica, &head),
        version,
        key: key.to_owned(),
        blocks: seqs
            .iter()
            .filter_map(|s| have.get(s).map(|b| (s, b)))
            .map(|(&seq, b)| JsonBlock {
                seq,
                data: b64(&b.1),
            })
            .collect(),
        nodes: nodes.values().map(JsonNode::of).collect(),
        result,
    };
    verify(&bundle, replica.key())?;
    Ok(bundle)
}

/// The signed head of `replica` (taken as `head`) as a bundle shows it.
pub(super) fn tree_of(replica: &Replica, head: &Head) -> BundleTree {
    BundleTree {
        length: head.length,
        fork: head.fork,
        roots: head.roots.iter().map(JsonNode::of).collect(),
        signature: head.signature.as_deref().map(hex::encode),
        manifest: replica.manifest().map(|m| hex::encode(m.to_bytes())),
    }
}

/// The sibling nodes that take the leaves of `seqs` up to the roots of `head`, each once and
/// none that lies on another leaf's path (the verifier computes those).
pub(super) fn shared_paths(
    head: &Head,
    seqs: &BTreeSet<u64>,
    mut node: impl FnMut(u64) -> Result<Node>,
) -> Result<BTreeMap<u64, Node>> {
    let on_path = paths(head.length, seqs)?;
    let mut out = BTreeMap::new();
    for &i in &on_path {
        if head.roots.iter().any(|r| r.index == i) {
            continue;
        }
        let s = flat::sibling(i);
        if !on_path.contains(&s) && !out.contains_key(&s) {
            out.insert(s, node(s)?);
        }
    }
    Ok(out)
}

/// Every node from the leaves of `seqs` up to their roots in a tree of `length` blocks.
pub(super) fn paths(length: u64, seqs: &BTreeSet<u64>) -> Result<BTreeSet<u64>> {
    let mut on_path = BTreeSet::new();
    for &seq in seqs {
        let leaf = seq.checked_mul(2).filter(|_| seq < length);
        let root = leaf.and_then(|l| flat::root_of(l, length));
        let (Some(mut i), Some(root)) = (leaf, root) else {
            return Err(Error::verification(format!(
                "block {seq} is not in a log of {length} blocks"
            )));
        };
        while on_path.insert(i) && i != root {
            i = flat::parent(i);
        }
    }
    Ok(on_path)
}
