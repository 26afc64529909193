//! Writing a bee: put, del and batches, with copy-on-write path updates (JS hyperbee's
//! `Batch._put`, `_del`): every op appends one block holding its key, its value and every tree
//! node it changed (the root first, then changed children depth-first); untouched subtrees
//! keep their old `(seq, offset)` pointers. Nodes split at 9 keys (4 | median | 4) and are
//! rebalanced below 4 keys (borrow from a sibling with more than 4, else merge).
//!
//! The ops of a batch edit one in-memory tree whose changed nodes all go into the batch's last
//! block (as in JS, the versions inside a batch are then not valid checkouts); the batch is
//! appended, and signed, once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::block::{encode_header, BeeBlock, NodeRef, TreeNode};
use super::Bee;
use crate::error::{Error, Result};
use crate::replicate::Replica;

const MAX_KEYS: usize = 8; // a node with 9 keys splits
const MIN_KEYS: usize = 4;

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put `value` under `key`.
    Put {
        /// Full key (with any sub prefix).
        key: Vec<u8>,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// Delete `key`.
    Del {
        /// Full key.
        key: Vec<u8>,
    },
}

/// What a batch wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Seq of the first block appended (equal to `length` when nothing was).
    pub first_seq: u64,
    /// The core length afterwards.
    pub length: u64,
}

enum Child {
    Ref(NodeRef),
    New(Box<WNode>),
}

struct WNode {
    keys: Vec<u64>,
    children: Vec<Child>,
}

impl WNode {
    fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Writes a bee we hold the key pair of.
pub struct BeeWriter {
    bee: Bee,
    lock: Mutex<()>,
}

impl std::fmt::Debug for BeeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BeeWriter({})", self.bee.core().key())
    }
}

/// The tree as of the pending blocks of the batch being built.
struct Tree<'a> {
    bee: &'a Bee,
    pending: HashMap<u64, Arc<BeeBlock>>,
    length: u64,
}

impl Tree<'_> {
    async fn block(&self, seq: u64) -> Result<Arc<BeeBlock>> {
        match self.pending.get(&seq) {
            Some(b) => Ok(b.clone()),
            None => self.bee.block(seq).await,
        }
    }

    async fn load(&self, r: NodeRef) -> Result<WNode> {
        let b = self.block(r.seq).await?;
        let n = b.level(r.offset)?;
        Ok(WNode {
            keys: n.keys.clone(),
            children: n.children.iter().map(|c| Child::Ref(*c)).collect(),
        })
    }

    async fn root(&self) -> Result<WNode> {
        if self.length < 2 {
            return Ok(WNode {
                keys: Vec::new(),
                children: Vec::new(),
            });
        }
        self.load(NodeRef {
            seq: self.length - 1,
            offset: 0,
        })
        .await
    }

    /// `(found, index)`: where `key` is or would go among the node's keys.
    async fn bisect(&self, node: &WNode, key: &[u8]) -> Result<(bool, usize)> {
        let (mut lo, mut hi) = (0usize, node.keys.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let seq = node.keys.get(mid).copied().unwrap_or(0);
            let k = self.block(seq).await?;
            match key.cmp(k.key.as_slice()) {
                std::cmp::Ordering::Equal => return Ok((true, mid)),
                std::cmp::Ordering::Less => hi = mid,
                std::cmp::Ordering::Greater => lo = mid + 1,
            }
        }
        Ok((false, lo))
    }

    async fn materialize<'n>(&self, c: &'n mut Child) -> Result<&'n mut WNode> {
        if let Child::Ref(r) = c {
            let n = self.load(*r).await?;
            *c = Child::New(Box::new(n));
        }
        match c {
            Child::New(n) => Ok(n),
            Child::Ref(_) => Err(Error::invalid("unreachable: child not loaded")),
        }
    }

    /// Inserts; returns `(median, right half)` when `node` split.
    fn insert<'s>(
        &'s self,
        node: &'s mut WNode,
        key: &'s [u8],
        seq: u64,
    ) -> BoxFut<'s, Option<(u64, WNode)>> {
        Box::pin(async move {
            let (found, i) = self.bisect(node, key).await?;
            if found {
                if let Some(k) = node.keys.get_mut(i) {
                    *k = seq;
                }
                return Ok(None);
            }
            if node.is_leaf() {
                node.keys.insert(i, seq);
            } else {
                let c = node
                    .children
                    .get_mut(i)
                    .ok_or_else(|| Error::corruption("bad child index"))?;
                let child = self.materialize(c).await?;
                if let Some((median, right)) = self.insert(child, key, seq).await? {
                    node.keys.insert(i, median);
                    node.children.insert(i + 1, Child::New(Box::new(right)));
                }
            }
            Ok(split(node))
        })
    }

    /// Removes `key` below `node`; false if absent.
    fn remove<'s>(&'s self, node: &'s mut WNode, key: &'s [u8]) -> BoxFut<'s, bool> {
        Box::pin(async move {
            let (found, i) = self.bisect(node, key).await?;
            if node.is_leaf() {
                if found {
                    node.keys.remove(i);
                }
                return Ok(found);
            }
            let c = node
                .children
                .get_mut(i)
                .ok_or_else(|| Error::corruption("bad child index"))?;
            let child = self.materialize(c).await?;
            if found {
                // Replace the key with its in-order predecessor, taken from the left subtree.
                let pred = self.remove_max(child).await?;
                if let Some(k) = node.keys.get_mut(i) {
                    *k = pred;
                }
            } else if !self.remove(child, key).await? {
                return Ok(false);
            }
            self.rebalance(node, i).await?;
            Ok(true)
        })
    }

    fn remove_max<'s>(&'s self, node: &'s mut WNode) -> BoxFut<'s, u64> {
        Box::pin(async move {
            if node.is_leaf() {
                return node
                    .keys
                    .pop()
                    .ok_or_else(|| Error::corruption("empty leaf in a bee"));
            }
            let last = node.children.len() - 1;
            let c = node
                .children
                .get_mut(last)
                .ok_or_else(|| Error::corruption("no child"))?;
            let child = self.materialize(c).await?;
            let m = self.remove_max(child).await?;
            self.rebalance(node, last).await?;
            Ok(m)
        })
    }

    /// Restores the minimum fill of child `i` of `parent`.
    async fn rebalance(&self, parent: &mut WNode, i: usize) -> Result<()> {
        let short = match parent.children.get(i) {
            Some(Child::New(c)) => c.keys.len() < MIN_KEYS,
            _ => false,
        };
        if !short {
            return Ok(());
        }
        // Load both neighbours first (they are rewritten if used).
        if i > 0 {
            if let Some(c) = parent.children.get_mut(i - 1) {
                self.materialize(c).await?;
            }
        }
        if let Some(c) = parent.children.get_mut(i + 1) {
            self.materialize(c).await?;
        }
        let (left, rest) = parent.children.split_at_mut(i);
        let (mid, right) = rest.split_at_mut(1);
        let (Some(Child::New(child)), left, right) =
            (mid.first_mut(), left.last_mut(), right.first_mut())
        else {
            return Ok(());
        };
        if let (Some(Child::New(l)), true) = (left, i > 0) {
            if l.keys.len() > MIN_KEYS {
                let (Some(k), Some(sep)) = (l.keys.pop(), parent.keys.get_mut(i - 1)) else {
                    return Ok(());
                };
                child.keys.insert(0, std::mem::replace(sep, k));
                if let Some(c) = l.children.pop() {
                    child.children.insert(0, c);
                }
                return Ok(());
            }
        }
        if let Some(Child::New(r)) = right {
            if r.keys.len() > MIN_KEYS {
                let Some(sep) = parent.keys.get_mut(i) else {
                    return Ok(());
                };
                let k = r.keys.remove(0);
                child.keys.push(std::mem::replace(sep, k));
                if !r.children.is_empty() {
                    child.children.push(r.children.remove(0));
                }
                return Ok(());
            }
        }
        // Merge with a neighbour around the parent's separator.
        let (li, ri) = if i > 0 { (i - 1, i) } else { (i, i + 1) };
        if ri >= parent.children.len() {
            return Ok(()); // an only child: the root collapse handles it
        }
        let sep = parent.keys.remove(li);
        let right = parent.children.remove(ri);
        let (Child::New(mut r), Some(Child::New(l))) = (right, parent.children.get_mut(li)) else {
            return Err(Error::corruption("merge of an unloaded node"));
        };
        l.keys.push(sep);
        l.keys.append(&mut r.keys);
        l.children.append(&mut r.children);
        Ok(())
    }
}

/// Splits a node that reached 9 keys: 4 stay, the median goes up, 4 go right.
fn split(node: &mut WNode) -> Option<(u64, WNode)> {
    if node.keys.len() <= MAX_KEYS {
        return None;
    }
    let half = node.keys.len() / 2;
    let right_keys = node.keys.split_off(half + 1);
    let median = node.keys.pop()?;
    let right_children = if node.is_leaf() {
        Vec::new()
    } else {
        node.children.split_off(half + 1)
    };
    Some((
        median,
        WNode {
            keys: right_keys,
            children: right_children,
        },
    ))
}

/// Lays out the changed nodes: root at offset 0, then changed children depth-first.
fn flatten(root: WNode, seq: u64) -> Vec<TreeNode> {
    fn visit(node: WNode, seq: u64, out: &mut Vec<TreeNode>) -> u64 {
        let offset = out.len();
        out.push(TreeNode {
            keys: Vec::new(),
            children: Vec::new(),
        });
        let children = node
            .children
            .into_iter()
            .map(|c| match c {
                Child::Ref(r) => r,
                Child::New(n) => NodeRef {
                    seq,
                    offset: visit(*n, seq, out),
                },
            })
            .collect();
        if let Some(slot) = out.get_mut(offset) {
            *slot = TreeNode {
                keys: node.keys,
                children,
            };
        }
        offset as u64
    }
    let mut out = Vec::new();
    visit(root, seq, &mut out);
    out
}

impl BeeWriter {
    /// A writer for a core we can sign.
    pub fn new(core: Arc<Replica>) -> Result<Self> {
        if !core.is_writable() {
            return Err(Error::invalid(format!(
                "bee {} is not writable here",
                core.key()
            )));
        }
        Ok(BeeWriter {
            bee: Bee::new(core),
            lock: Mutex::new(()),
        })
    }

    /// The bee (for reads).
    pub fn bee(&self) -> &Bee {
        &self.bee
    }

    /// Puts one entry; returns its seq.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        let w = self
            .batch(vec![Op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            }])
            .await?;
        Ok(w.length - 1)
    }

    /// Deletes a key; returns the seq of the del block, or `None` if the key was absent.
    pub async fn del(&self, key: &[u8]) -> Result<Option<u64>> {
        let w = self.batch(vec![Op::Del { key: key.to_vec() }]).await?;
        Ok((w.length > w.first_seq).then(|| w.length - 1))
    }

    /// Applies ops in order and appends their blocks as one signed batch. Deletes of absent
    /// keys write nothing. A new bee gets its header block first.
    pub async fn batch(&self, ops: Vec<Op>) -> Result<Written> {
        let _g = self.lock.lock().await;
        let core = self.bee.core();
        let start = core.length();
        let mut tree = Tree {
            bee: &self.bee,
            pending: HashMap::new(),
            length: start,
        };
        let mut blocks = Vec::with_capacity(ops.len() + 1);
        if start == 0 {
            blocks.push(encode_header());
            tree.length = 1;
        }
        // All ops of the batch edit one in-memory tree; its changed nodes are written once, in
        // the last block (as JS does: earlier blocks of a batch carry no tree nodes).
        let mut root: Option<WNode> = None;
        let mut written: Vec<(u64, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for op in ops {
            let seq = tree.length;
            let mut r = match root.take() {
                Some(r) => r,
                None => tree.root().await?,
            };
            let (key, value) = match op {
                Op::Put { key, value } => {
                    if let Some((median, right)) = tree.insert(&mut r, &key, seq).await? {
                        r = WNode {
                            keys: vec![median],
                            children: vec![Child::New(Box::new(r)), Child::New(Box::new(right))],
                        };
                    }
                    (key, Some(value))
                }
                Op::Del { key } => {
                    if !tree.remove(&mut r, &key).await? {
                        root = Some(r);
                        continue;
                    }
                    if r.keys.is_empty() && r.children.len() == 1 {
                        if let Some(mut only) = r.children.pop() {
                            tree.materialize(&mut only).await?;
                            if let Child::New(n) = only {
                                r = *n;
                            }
                        }
                    }
                    (key, None)
                }
            };
            root = Some(r);
            // Later ops of the batch compare against this key.
            tree.pending.insert(
                seq,
                Arc::new(BeeBlock {
                    seq,
                    key: key.clone(),
                    value: value.clone(),
                    levels: Vec::new(),
                }),
            );
            written.push((seq, key, value));
            tree.length += 1;
        }
        if let (Some(r), Some(last)) = (root, written.last().map(|w| w.0)) {
            let levels = flatten(r, last);
            for (seq, key, value) in &written {
                let lv: &[TreeNode] = if *seq == last { &levels } else { &[] };
                blocks.push(BeeBlock::encode(key, value.as_deref(), lv));
            }
        }
        if blocks.is_empty() {
            return Ok(Written {
                first_seq: start,
                length: start,
            });
        }
        let length = core.append(&blocks)?;
        Ok(Written {
            first_seq: start,
            length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bee::{HistoryOptions, OpKind, RangeOptions};
    use crate::crypto::KeyPair;
    use crate::replicate::{Replicator, ReplicatorOptions};
    use crate::store::Store;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn writer() -> BeeWriter {
        let rep = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default());
        BeeWriter::new(rep.create_core(KeyPair::generate(), false).unwrap()).unwrap()
    }

    async fn check(w: &BeeWriter, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
        let snap = w.bee().snapshot();
        let all = snap.range(RangeOptions::default()).await.unwrap();
        let got: Vec<(Vec<u8>, Vec<u8>)> = all
            .iter()
            .map(|e| (e.key.clone(), e.value.clone().unwrap()))
            .collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> =
            model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(got, want);
        let rev = snap
            .range(RangeOptions {
                reverse: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rev.len(), all.len());
        for (k, v) in model.iter().take(20) {
            assert_eq!(snap.get(k).await.unwrap().unwrap().value.as_ref(), Some(v));
        }
    }

    #[tokio::test]
    async fn many_puts_and_dels_keep_a_valid_tree() {
        let w = writer();
        let mut model = BTreeMap::new();
        for i in 0..500u32 {
            let k = format!("key{:05}", (i * 7919) % 1000).into_bytes();
            let v = format!("v{i}").into_bytes();
            w.put(&k, &v).await.unwrap();
            model.insert(k, v);
        }
        check(&w, &model).await;
        let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
        for (n, k) in keys.iter().enumerate().filter(|(n, _)| n % 3 != 0) {
            assert!(w.del(k).await.unwrap().is_some(), "del {n}");
            model.remove(k);
            if n % 50 == 1 {
                check(&w, &model).await;
            }
        }
        check(&w, &model).await;
        assert_eq!(w.del(b"absent").await.unwrap(), None);
        let h = w
            .bee()
            .history(&HistoryOptions {
                reverse: true,
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(h[0].kind, OpKind::Del);
        // Every version is a valid checkout.
        let v = w.bee().checkout(300);
        assert_eq!(v.range(RangeOptions::default()).await.unwrap().len(), 299);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_a_btreemap(ops in proptest::collection::vec((any::<bool>(), 0u8..60, any::<u8>()), 1..250)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let w = writer();
                let mut model = BTreeMap::new();
                let mut batch = Vec::new();
                for (put, k, v) in ops {
                    let key = vec![b'k', k];
                    if put {
                        batch.push(Op::Put { key: key.clone(), value: vec![v] });
                        model.insert(key, vec![v]);
                    } else {
                        batch.push(Op::Del { key: key.clone() });
                        model.remove(&key);
                    }
                    if batch.len() >= 7 {
                        w.batch(std::mem::take(&mut batch)).await.unwrap();
                    }
                }
                w.batch(batch).await.unwrap();
                check(&w, &model).await;
            });
        }
    }
}
