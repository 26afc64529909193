//! A hyperbee `get` as a pure walk over blocks already at hand: the one definition of which
//! blocks a lookup reads and where it ends, shared by [`super::Snapshot::get`] (which
//! fetches each block the walk asks for and walks again) and the proof bundles of
//! [`crate::bundle`] (built and checked by the same walk).

use std::cmp::Ordering;
use std::sync::Arc;

use crate::bee::BeeBlock;
use crate::error::{Error, Result};

/// Where a walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Walk {
    /// It needs block `seq`, which the lookup did not have.
    Need(u64),
    /// The key is in the tree, written by this block.
    Found(Arc<BeeBlock>),
    /// The key is not in the tree (never written, or deleted).
    Absent,
}

fn pointer(seq: u64, version: u64) -> Result<u64> {
    if seq >= version {
        return Err(Error::Decode {
            what: "bee node",
            reason: format!("pointer to block {seq} beyond version {version}"),
        });
    }
    Ok(seq)
}

/// Looks `key` (full, with any sub prefix) up in the tree of `version`, reading blocks
/// through `block` (`None`: not at hand). Deeper than 64 levels, a pointer past the version
/// or a root block without a tree node is an error, as in the async reader.
pub(crate) fn get(
    key: &[u8],
    version: u64,
    mut block: impl FnMut(u64) -> Option<Arc<BeeBlock>>,
) -> Result<Walk> {
    if version < 2 {
        return Ok(Walk::Absent);
    }
    let root = version - 1;
    let Some(mut blk) = block(root) else {
        return Ok(Walk::Need(root));
    };
    if blk.levels.is_empty() {
        return Err(Error::invalid(format!(
            "version {version} ends inside a batch and has no tree root"
        )));
    }
    let mut offset = 0u64;
    for _ in 0..64 {
        if blk.key == key {
            return Ok(if blk.is_deletion() {
                Walk::Absent
            } else {
                Walk::Found(blk)
            });
        }
        let node = blk.level(offset)?;
        let (mut lo, mut hi) = (0usize, node.keys.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let seq = pointer(node.keys.get(mid).copied().unwrap_or(0), version)?;
            let Some(kb) = block(seq) else {
                return Ok(Walk::Need(seq));
            };
            match key.cmp(kb.key.as_slice()) {
                Ordering::Equal => return Ok(Walk::Found(kb)),
                Ordering::Less => hi = mid,
                Ordering::Greater => lo = mid + 1,
            }
        }
        let Some(child) = node.children.get(lo).copied() else {
            return Ok(Walk::Absent);
        };
        let Some(next) = block(pointer(child.seq, version)?) else {
            return Ok(Walk::Need(child.seq));
        };
        next.level(child.offset)?;
        blk = next;
        offset = child.offset;
    }
    Err(Error::Decode {
        what: "bee node",
        reason: "tree deeper than 64 levels".into(),
    })
}
