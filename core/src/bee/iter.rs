//! Ordered traversal of a bee version: range reads (both directions, bounds, limit) and the
//! diff of two versions, which skips subtrees the two versions share without loading them
//! (JS `hyperbee/iterators/range.js`, `diff.js`).

use std::cmp::Ordering;
use std::sync::Arc;

use super::{BeeBlock, Entry, NodeRef, Snapshot};
use crate::error::{Error, Result};

/// Most tree nodes one walk of a bee at `version` may open. A tree of `version` blocks has
/// fewer nodes than that (every node but an empty root holds a key, and every key is a
/// block), and an ordered walk opens each node once; a hostile tree whose nodes share
/// children would otherwise make a walk that finds nothing take exponential time.
fn node_budget(version: u64) -> u64 {
    version.saturating_mul(2).saturating_add(64)
}

fn over_budget(version: u64) -> Error {
    Error::Decode {
        what: "bee node",
        reason: format!(
            "the tree of version {version} has more nodes than {} (nodes shared or repeated)",
            node_budget(version)
        ),
    }
}

/// Bounds and order of a range read (keys as bytes, relative to the sub if any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// Keys greater than this.
    pub gt: Option<Vec<u8>>,
    /// Keys greater than or equal to this.
    pub gte: Option<Vec<u8>>,
    /// Keys less than this.
    pub lt: Option<Vec<u8>>,
    /// Keys less than or equal to this.
    pub lte: Option<Vec<u8>>,
    /// Newest key first.
    pub reverse: bool,
    /// At most this many entries.
    pub limit: Option<usize>,
}

/// One difference between two versions: the entry on each side (`None` where absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffEntry {
    /// In the version `diff` was called on.
    pub left: Option<Entry>,
    /// In the other version.
    pub right: Option<Entry>,
}

/// `(key, inclusive)` bounds after applying the sub prefix.
#[derive(Debug, Clone)]
struct Bounds {
    lower: Option<(Vec<u8>, bool)>,
    upper: Option<(Vec<u8>, bool)>,
}

impl Bounds {
    fn new(prefix: &[u8], o: &RangeOptions) -> Self {
        let enc = |k: &Vec<u8>| {
            let mut v = prefix.to_vec();
            v.extend_from_slice(k);
            v
        };
        let mut lower = match (&o.gt, &o.gte) {
            (Some(k), _) => Some((enc(k), false)),
            (None, Some(k)) => Some((enc(k), true)),
            _ => None,
        };
        let mut upper = match (&o.lt, &o.lte) {
            (Some(k), _) => Some((enc(k), false)),
            (None, Some(k)) => Some((enc(k), true)),
            _ => None,
        };
        if !prefix.is_empty() {
            // JS `encRange` for subs: gt = prefix || 0x00, lt = prefix with its last byte bumped.
            if lower.is_none() {
                lower = Some((enc(&vec![0u8]), false));
            }
            if upper.is_none() {
                let mut b = prefix.to_vec();
                if let Some(last) = b.last_mut() {
                    *last = last.wrapping_add(1);
                }
                upper = Some((b, false));
            }
        }
        Bounds { lower, upper }
    }

    fn below_upper(&self, key: &[u8]) -> bool {
        match &self.upper {
            None => true,
            Some((u, incl)) => match key.cmp(u.as_slice()) {
                Ordering::Less => true,
                Ordering::Equal => *incl,
                Ordering::Greater => false,
            },
        }
    }

    fn above_lower(&self, key: &[u8]) -> bool {
        match &self.lower {
            None => true,
            Some((l, incl)) => match key.cmp(l.as_slice()) {
                Ordering::Greater => true,
                Ordering::Equal => *incl,
                Ordering::Less => false,
            },
        }
    }
}

/// A node on the traversal stack; `slot` walks `0..=2k`: even = child `slot/2`, odd = key.
struct Frame {
    block: Arc<BeeBlock>,
    offset: u64,
    slot: i64,
}

impl Frame {
    fn keys(&self) -> &[u64] {
        self.block
            .level(self.offset)
            .map(|n| n.keys.as_slice())
            .unwrap_or(&[])
    }
    fn children(&self) -> &[NodeRef] {
        self.block
            .level(self.offset)
            .map(|n| n.children.as_slice())
            .unwrap_or(&[])
    }
    fn is_leaf(&self) -> bool {
        self.children().is_empty()
    }
    fn max_slot(&self) -> i64 {
        2 * self.keys().len() as i64
    }
}

/// A lazy range read: each `next` fetches only what it needs.
pub struct RangeIter<'a> {
    snap: Snapshot<'a>,
    bounds: Bounds,
    reverse: bool,
    remaining: Option<usize>,
    stack: Vec<Frame>,
    seeking: bool,
    opened: bool,
    done: bool,
    /// Tree nodes opened so far (see [`node_budget`]).
    nodes: u64,
}

impl std::fmt::Debug for RangeIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RangeIter(version {}, depth {})",
            self.snap.version,
            self.stack.len()
        )
    }
}

impl<'a> Snapshot<'a> {
    /// A lazy range read.
    pub fn range_iter(&self, opts: RangeOptions) -> RangeIter<'a> {
        RangeIter {
            bounds: Bounds::new(&self.prefix, &opts),
            snap: self.clone(),
            reverse: opts.reverse,
            remaining: opts.limit,
            stack: Vec::new(),
            seeking: false,
            opened: false,
            done: false,
            nodes: 0,
        }
    }

    /// A range read, collected.
    pub async fn range(&self, opts: RangeOptions) -> Result<Vec<Entry>> {
        let mut it = self.range_iter(opts);
        let mut out = Vec::new();
        while let Some(e) = it.next().await? {
            out.push(e);
        }
        Ok(out)
    }
}

impl RangeIter<'_> {
    async fn open(&mut self) -> Result<()> {
        self.opened = true;
        let Some((root, block)) = self.snap.root().await? else {
            self.done = true;
            return Ok(());
        };
        let start = if self.reverse {
            &self.bounds.upper
        } else {
            &self.bounds.lower
        };
        self.seeking = start.is_some();
        self.push(block, root.offset).await
    }

    /// Pushes a node, positioned at its first slot in our direction, or by bisecting the
    /// start bound while seeking.
    async fn push(&mut self, block: Arc<BeeBlock>, offset: u64) -> Result<()> {
        self.nodes += 1;
        if self.nodes > node_budget(self.snap.version) {
            self.done = true;
            return Err(over_budget(self.snap.version));
        }
        let mut f = Frame {
            block,
            offset,
            slot: 0,
        };
        f.slot = if self.reverse { f.max_slot() } else { 0 };
        if self.seeking {
            let (key, incl) = if self.reverse {
                self.bounds.upper.clone()
            } else {
                self.bounds.lower.clone()
            }
            .unwrap_or_default();
            // u = number of keys strictly below the bound.
            let keys = f.keys().to_vec();
            let (mut lo, mut hi) = (0usize, keys.len());
            let mut exact = false;
            while lo < hi {
                let mid = (lo + hi) / 2;
                let kb = self
                    .snap
                    .key_of(keys.get(mid).copied().unwrap_or(0))
                    .await?;
                match kb.key.as_slice().cmp(key.as_slice()) {
                    Ordering::Less => lo = mid + 1,
                    Ordering::Greater => hi = mid,
                    Ordering::Equal => {
                        lo = mid;
                        exact = true;
                        break;
                    }
                }
            }
            let u = lo as i64;
            if exact {
                self.seeking = false;
                f.slot = match (self.reverse, incl) {
                    (_, true) => 2 * u + 1,
                    (false, false) => 2 * u + 2,
                    (true, false) => 2 * u,
                };
            } else if f.is_leaf() {
                self.seeking = false;
                f.slot = if self.reverse { 2 * u - 1 } else { 2 * u + 1 };
            } else {
                f.slot = 2 * u; // the child that may hold the bound: keep seeking inside it
            }
        }
        self.stack.push(f);
        Ok(())
    }

    /// The next entry, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Entry>> {
        if !self.opened {
            self.open().await?;
        }
        while !self.done {
            if self.remaining == Some(0) {
                self.done = true;
                break;
            }
            let Some(top) = self.stack.last_mut() else {
                self.done = true;
                break;
            };
            let slot = top.slot;
            if slot < 0 || slot > top.max_slot() {
                self.stack.pop();
                continue;
            }
            top.slot += if self.reverse { -1 } else { 1 };
            if slot % 2 == 1 {
                let seq = top.keys().get((slot / 2) as usize).copied().unwrap_or(0);
                self.seeking = false;
                let b = self.snap.key_of(seq).await?;
                let (inside, past_end) = if self.reverse {
                    (
                        self.bounds.above_lower(&b.key),
                        !self.bounds.above_lower(&b.key),
                    )
                } else {
                    (
                        self.bounds.below_upper(&b.key),
                        !self.bounds.below_upper(&b.key),
                    )
                };
                if past_end {
                    self.done = true;
                    break;
                }
                // While seeking, keys before the start bound are skipped.
                let started = if self.reverse {
                    self.bounds.below_upper(&b.key)
                } else {
                    self.bounds.above_lower(&b.key)
                };
                if inside && started {
                    if let Some(r) = self.remaining.as_mut() {
                        *r -= 1;
                    }
                    return Ok(Some(self.snap.entry(&b)));
                }
                continue;
            }
            if top.is_leaf() {
                continue;
            }
            let Some(child) = top.children().get((slot / 2) as usize).copied() else {
                continue;
            };
            let (b, o) = self.snap.node(child).await?;
            self.push(b, o as u64).await?;
        }
        Ok(None)
    }
}

/// A position in the diff walk: a key, or a child subtree not yet opened.
struct Cursor {
    block: Arc<BeeBlock>,
    offset: u64,
    i: usize, // interleaved: even = child i/2, odd = key i/2 (leaves: odd only)
}

impl Cursor {
    fn node(&self) -> (&[u64], &[NodeRef]) {
        self.block
            .level(self.offset)
            .map(|n| (n.keys.as_slice(), n.children.as_slice()))
            .unwrap_or((&[], &[]))
    }
    fn new(block: Arc<BeeBlock>, offset: u64) -> Self {
        let leaf = block
            .level(offset)
            .map(|n| n.children.is_empty())
            .unwrap_or(true);
        Cursor {
            block,
            offset,
            i: usize::from(leaf),
        }
    }
    fn valid(&self) -> bool {
        let (k, c) = self.node();
        let n = self.i / 2;
        if self.i % 2 == 1 {
            n < k.len()
        } else {
            n < c.len()
        }
    }
    fn is_key(&self) -> bool {
        self.i % 2 == 1
    }
    /// `(seq, offset)` identity of the current position.
    fn ident(&self) -> (u64, u64, bool) {
        let (k, c) = self.node();
        let n = self.i / 2;
        if self.is_key() {
            (k.get(n).copied().unwrap_or(0), 0, true)
        } else {
            c.get(n)
                .map(|r| (r.seq, r.offset, false))
                .unwrap_or((0, 0, false))
        }
    }
    fn advance(&mut self) -> bool {
        let leaf = self.node().1.is_empty();
        self.i += if leaf { 2 } else { 1 };
        self.valid()
    }
}

/// One side of a diff: a stack of cursors.
struct DiffSide<'a> {
    snap: Snapshot<'a>,
    stack: Vec<Cursor>,
    /// Tree nodes opened so far (see [`node_budget`]).
    nodes: u64,
}

impl DiffSide<'_> {
    async fn open(&mut self) -> Result<()> {
        if let Some((root, b)) = self.snap.root().await? {
            let c = Cursor::new(b, root.offset);
            if c.valid() {
                self.stack.push(c);
            }
        }
        Ok(())
    }
    fn skip(&mut self) {
        if let Some(top) = self.stack.last_mut() {
            if !top.advance() {
                self.stack.pop();
            }
        }
    }
    /// The key at the current position, or for a child the key after it (its upper bound).
    async fn bound(&self) -> Result<Option<Vec<u8>>> {
        for c in self.stack.iter().rev() {
            let (keys, _) = c.node();
            if let Some(seq) = keys.get(c.i / 2) {
                return Ok(Some(self.snap.key_of(*seq).await?.key.clone()));
            }
        }
        Ok(None)
    }
    /// Steps once: a key gives its entry; a child is opened.
    async fn step(&mut self) -> Result<Option<Entry>> {
        let Some(top) = self.stack.last() else {
            return Ok(None);
        };
        let (seq, offset, is_key) = top.ident();
        self.skip();
        if is_key {
            let b = self.snap.key_of(seq).await?;
            return Ok(Some(self.snap.entry(&b)));
        }
        self.nodes += 1;
        if self.nodes > node_budget(self.snap.version) {
            return Err(over_budget(self.snap.version));
        }
        let (b, o) = self.snap.node(NodeRef { seq, offset }).await?;
        let c = Cursor::new(b, o as u64);
        if c.valid() {
            self.stack.push(c);
        }
        Ok(None)
    }
    async fn next_key(&mut self) -> Result<Option<Entry>> {
        while !self.stack.is_empty() {
            if let Some(e) = self.step().await? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }
}

fn cmp_bounds(a: &Option<Vec<u8>>, b: &Option<Vec<u8>>) -> Ordering {
    // A missing bound (end of the tree) sorts last.
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    }
}

impl Snapshot<'_> {
    /// What differs between this version (left) and `other` (right), in key order, within
    /// `opts` bounds (reverse is not supported by JS either and is ignored).
    pub async fn diff(&self, other: u64, opts: RangeOptions) -> Result<Vec<DiffEntry>> {
        let mut a = DiffSide {
            snap: self.clone(),
            stack: Vec::new(),
            nodes: 0,
        };
        let mut b = DiffSide {
            snap: Snapshot {
                version: other,
                ..self.clone()
            },
            stack: Vec::new(),
            nodes: 0,
        };
        a.open().await?;
        b.open().await?;
        let bounds = Bounds::new(&self.prefix, &opts);
        let mut out = Vec::new();
        let limit = opts.limit.unwrap_or(usize::MAX);
        while out.len() < limit {
            let d = match (a.stack.last(), b.stack.last()) {
                (None, None) => break,
                (None, Some(_)) => DiffEntry {
                    left: None,
                    right: b.next_key().await?,
                },
                (Some(_), None) => DiffEntry {
                    left: a.next_key().await?,
                    right: None,
                },
                (Some(l), Some(r)) => {
                    if l.ident() == r.ident() {
                        a.skip();
                        b.skip();
                        continue;
                    }
                    let (lk, rk) = (l.is_key(), r.is_key());
                    let c = cmp_bounds(&a.bound().await?, &b.bound().await?);
                    match (lk, rk) {
                        (true, false) => {
                            b.step().await?;
                            continue;
                        }
                        (false, true) => {
                            a.step().await?;
                            continue;
                        }
                        (true, true) => match c {
                            Ordering::Equal => DiffEntry {
                                left: a.next_key().await?,
                                right: b.next_key().await?,
                            },
                            Ordering::Less => DiffEntry {
                                left: a.next_key().await?,
                                right: None,
                            },
                            Ordering::Greater => DiffEntry {
                                left: None,
                                right: b.next_key().await?,
                            },
                        },
                        (false, false) => {
                            match c {
                                Ordering::Equal => {
                                    a.step().await?;
                                    b.step().await?;
                                }
                                Ordering::Less => {
                                    b.step().await?;
                                }
                                Ordering::Greater => {
                                    a.step().await?;
                                }
                            }
                            continue;
                        }
                    }
                }
            };
            if d.left.is_none() && d.right.is_none() {
                break;
            }
            let key = d.left.as_ref().or(d.right.as_ref()).map(|e| {
                let mut k = self.prefix.clone();
                k.extend_from_slice(&e.key);
                k
            });
            if let Some(k) = key {
                if !bounds.below_upper(&k) {
                    break;
                }
                if !bounds.above_lower(&k) {
                    continue;
                }
            }
            out.push(d);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bee::{Bee, TreeNode};
    use crate::crypto::KeyPair;
    use crate::replicate::{Replicator, ReplicatorOptions};
    use crate::store::Store;

    /// Found with the `bee_walk` fuzz target (fuzz/corpus/bee_walk/regression-shared-children):
    /// 40 blocks, each a node whose two children are both the previous block's node. Its
    /// in-order walk is 2^40 nodes long; a range from `k39` found `k39` and then walked the
    /// whole of the rest, all below the bound, without ever returning.
    #[tokio::test]
    async fn a_tree_of_shared_children_is_refused_not_walked() {
        let rep = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default());
        let core = rep.create_core(KeyPair::generate(), true).unwrap();
        let mut blocks = vec![crate::bee::block::encode_header()];
        let leaf = TreeNode {
            keys: vec![1],
            children: vec![],
        };
        blocks.push(BeeBlock::encode(b"k01", Some(b"v"), &[leaf]));
        for k in 2..=40u64 {
            let prev = NodeRef {
                seq: k - 1,
                offset: 0,
            };
            let node = TreeNode {
                keys: vec![k],
                children: vec![prev, prev],
            };
            blocks.push(BeeBlock::encode(
                format!("k{k:02}").as_bytes(),
                Some(b"v"),
                &[node],
            ));
        }
        core.append(&blocks).unwrap();
        let bee = Bee::new(core);
        let snap = bee.snapshot();
        let from = RangeOptions {
            gte: Some(b"k39".to_vec()),
            limit: Some(10),
            ..RangeOptions::default()
        };
        let e = snap.range(from).await.expect_err("too many nodes");
        assert!(e.to_string().contains("more nodes"), "{e}");
        let all = snap.range(RangeOptions::default()).await;
        assert!(all.is_err());
        let e = snap
            .diff(2, RangeOptions::default())
            .await
            .expect_err("too many nodes");
        assert!(e.to_string().contains("more nodes"), "{e}");
        // A lookup walks one path and is not affected.
        assert_eq!(snap.get(b"k39").await.unwrap().unwrap().seq, 39);
    }
}
