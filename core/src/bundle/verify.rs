//! Checking a bundle against the author's key alone (the steps are in [`super`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::build::paths;
use super::format::JsonNode;
use super::format::{b64, from_b64};
use super::{Bundle, BundleTree, FORMAT};
use crate::bee::walk::{self, Walk};
use crate::bee::BeeBlock;
use crate::error::{Error, Result};
use crate::id::Key;
use crate::manifest::{Manifest, Verifier};
use crate::merkle::{flat, Head, Node, MAX_LENGTH};

/// What a bundle proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The feed (core key).
    pub feed: Key,
    /// The signed length and fork the proof is against.
    pub length: u64,
    /// Its fork.
    pub fork: u64,
    /// The bee version of the lookup.
    pub version: u64,
    /// The bee key.
    pub key: String,
    /// `Some((seq, value))` when the key is in the bee at `version`, `None` when it is not.
    pub entry: Option<(u64, Option<Vec<u8>>)>,
}

fn fail(reason: impl Into<String>) -> Error {
    Error::verification(reason)
}

/// Checks `bundle` against the core key `feed`: the signature, every block's Merkle path,
/// the lookup over the blocks and the claimed result. Any mismatch is an error saying which.
pub fn verify(bundle: &Bundle, feed: &Key) -> Result<Proven> {
    if bundle.format != FORMAT {
        return Err(fail(format!("format {:?}, not {FORMAT:?}", bundle.format)));
    }
    if bundle.feed != feed.to_hex() {
        return Err(fail(format!(
            "the bundle is for feed {}, not {}",
            bundle.feed,
            feed.to_hex()
        )));
    }
    let head = signed_head(&bundle.tree, feed)?;
    let version = bundle.version;
    if version == 0 || version > head.length {
        return Err(fail(format!(
            "version {version} is not between 1 and the signed length {}",
            head.length
        )));
    }

    let mut raw: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for b in &bundle.blocks {
        if b.seq == 0 {
            return Err(fail("block 0 is the header, which no lookup reads"));
        }
        if raw.insert(b.seq, from_b64("block", &b.data)?).is_some() {
            return Err(fail(format!("block {} is in the bundle twice", b.seq)));
        }
    }
    let leaves = raw.iter().map(|(&s, r)| (s, Node::leaf(s, r))).collect();
    merkle(&head, &leaves, &bundle.nodes)?;

    let blocks: HashMap<u64, Arc<BeeBlock>> = raw
        .iter()
        .map(|(&s, r)| Ok((s, Arc::new(BeeBlock::decode(s, r)?))))
        .collect::<Result<_>>()?;
    let mut read = HashSet::new();
    let end = walk::get(bundle.key.as_bytes(), version, |s| {
        read.insert(s);
        blocks.get(&s).cloned()
    })?;
    let entry = match end {
        Walk::Need(seq) => {
            return Err(fail(format!(
                "the lookup reads block {seq}, which the bundle lacks"
            )))
        }
        Walk::Found(b) => Some((b.seq, b.value.clone())),
        Walk::Absent => None,
    };
    if let Some(s) = raw.keys().find(|s| !read.contains(s)) {
        return Err(fail(format!(
            "block {s} is in the bundle but the lookup never reads it"
        )));
    }
    let claimed = &bundle.result;
    let proven_value = entry.as_ref().and_then(|e| e.1.as_deref().map(b64));
    if claimed.found != entry.is_some()
        || claimed.seq != entry.as_ref().map(|e| e.0)
        || claimed.value != proven_value
    {
        return Err(fail(
            "the claimed result is not what the lookup over the proven blocks ends on",
        ));
    }
    Ok(Proven {
        feed: *feed,
        length: head.length,
        fork: head.fork,
        version,
        key: bundle.key.clone(),
        entry,
    })
}

/// The tree of the bundle, once its roots are the full roots of its length and the author's
/// signature over them holds.
pub(super) fn signed_head(t: &BundleTree, feed: &Key) -> Result<Head> {
    if t.length == 0 || t.length > MAX_LENGTH {
        return Err(fail(format!("signed length {} is out of range", t.length)));
    }
    let roots: Vec<Node> = t.roots.iter().map(|n| n.node()).collect::<Result<_>>()?;
    let want = flat::full_roots(t.length);
    if roots.iter().map(|n| n.index).ne(want.iter().copied()) {
        return Err(fail(format!(
            "the roots are not those of a log of {} blocks",
            t.length
        )));
    }
    let manifest = t
        .manifest
        .as_deref()
        .map(|m| Manifest::from_bytes(&hex::decode(m).map_err(|e| fail(format!("manifest: {e}")))?))
        .transpose()?;
    let signature = t
        .signature
        .as_deref()
        .map(hex::decode)
        .transpose()
        .map_err(|e| fail(format!("signature: {e}")))?;
    let head = Head {
        length: t.length,
        fork: t.fork,
        roots,
        signature,
    };
    Verifier::new(*feed, manifest)?.verify(
        &head.tree_hash(),
        head.length,
        head.fork,
        head.signature.as_deref(),
    )?;
    Ok(head)
}

/// Hashes every leaf (by block seq) up to its signed root: nodes above a leaf are computed,
/// the others come from `nodes`, and each of those must be used.
pub(super) fn merkle(head: &Head, leaves: &BTreeMap<u64, Node>, nodes: &[JsonNode]) -> Result<()> {
    let seqs: BTreeSet<u64> = leaves.keys().copied().collect();
    let on_path = paths(head.length, &seqs)?;
    let mut given: HashMap<u64, Node> = HashMap::new();
    for n in nodes {
        let node = n.node()?;
        if on_path.contains(&node.index) {
            return Err(fail(format!(
                "node {} lies above a block of the bundle: it must be computed, not given",
                node.index
            )));
        }
        if given.insert(node.index, node).is_some() {
            return Err(fail(format!("node {} is in the bundle twice", node.index)));
        }
    }
    let mut used = HashSet::new();
    let mut memo: HashMap<u64, Node> = HashMap::new();
    for root in &head.roots {
        if !on_path.contains(&root.index) {
            continue;
        }
        let got = compute(
            root.index, leaves, &on_path, &given, &mut used, &mut memo, 0,
        )?;
        if got != *root {
            return Err(fail(format!(
                "the blocks under root {} do not hash to the signed root",
                root.index
            )));
        }
    }
    if let Some(i) = given.keys().find(|i| !used.contains(*i)) {
        return Err(fail(format!(
            "node {i} is in the bundle but no path uses it"
        )));
    }
    Ok(())
}

fn compute(
    index: u64,
    leaves: &BTreeMap<u64, Node>,
    on_path: &BTreeSet<u64>,
    given: &HashMap<u64, Node>,
    used: &mut HashSet<u64>,
    memo: &mut HashMap<u64, Node>,
    depth: u32,
) -> Result<Node> {
    if let Some(n) = memo.get(&index) {
        return Ok(*n);
    }
    if !on_path.contains(&index) {
        used.insert(index);
        return given
            .get(&index)
            .copied()
            .ok_or_else(|| fail(format!("the bundle lacks tree node {index}")));
    }
    let node = if index % 2 == 0 {
        *leaves
            .get(&(index / 2))
            .ok_or_else(|| fail(format!("the bundle lacks block {}", index / 2)))?
    } else {
        let (l, r) = flat::children(index)
            .filter(|_| depth < 64)
            .ok_or_else(|| fail(format!("tree node {index} has no children")))?;
        let l = compute(l, leaves, on_path, given, used, memo, depth + 1)?;
        let r = compute(r, leaves, on_path, given, used, memo, depth + 1)?;
        Node::parent(&l, &r)
    };
    memo.insert(index, node);
    Ok(node)
}
