//! One core's part of the store: its staged pages and the reads and writes that go through
//! them (see the module docs of `store` for the layout).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::page::{
    check_node_page, node_in, BlockPage, NodePage, PageView, Slot, BLOCK_SLOTS, INLINE_MAX,
    NODE_SLOTS,
};
use super::{key_of, key_tail, lock, CoreRecord};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::merkle::{flat, Node};

/// Staged pages of one core beyond this many are all written at once.
const MAX_STAGED_PAGES: usize = 24;
/// Staged inline block bytes beyond this are all written at once.
const MAX_STAGED_BYTES: usize = 512 * 1024;

/// Clean pages kept per core (of each kind) before the cache is emptied.
const MAX_CLEAN_PAGES: usize = 64;

/// One core's pages in memory: dirty ones (written here, not yet in sled) and clean copies
/// of pages recently written or read (a sequential download reads the pages it just wrote:
/// sled gets were a fifth of a reader's CPU). A dirty page is complete: it was loaded from
/// sled before its first change, so reads look at dirty pages, then clean ones, then sled.
/// Everything happens under the core's lock, so a clean copy is never older than sled.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    blocks: BTreeMap<u64, BlockPage>,
    nodes: BTreeMap<u64, NodePage>,
    bytes: usize,
    /// `None`: known not to be in sled (reads ahead of a download ask for those).
    clean_blocks: HashMap<u64, Option<sled::IVec>>,
    clean_nodes: HashMap<u64, Option<sled::IVec>>,
    /// Used since the flusher last looked (an idle core's clean pages are dropped).
    touched: bool,
}

impl Staged {
    /// Block page `page` as stored (a clean copy, or read from sled and kept).
    fn stored_block_page(
        &mut self,
        tree: &sled::Tree,
        id: u64,
        page: u64,
    ) -> Result<Option<sled::IVec>> {
        self.touched = true;
        if let Some(v) = self.clean_blocks.get(&page) {
            return Ok(v.clone());
        }
        let v = tree.get(key_of(b'B', id, Some(page)))?;
        keep_clean(&mut self.clean_blocks, page, v.clone());
        Ok(v)
    }

    /// Node page `page` as stored (see [`Self::stored_block_page`]).
    fn stored_node_page(
        &mut self,
        tree: &sled::Tree,
        id: u64,
        page: u64,
    ) -> Result<Option<sled::IVec>> {
        self.touched = true;
        if let Some(v) = self.clean_nodes.get(&page) {
            return Ok(v.clone());
        }
        let v = tree.get(key_of(b'N', id, Some(page)))?;
        if let Some(v) = &v {
            check_node_page(v)?;
        }
        keep_clean(&mut self.clean_nodes, page, v.clone());
        Ok(v)
    }

    /// Called by the flusher every second: drops the clean pages of a core nobody used
    /// since the last call.
    pub(crate) fn age(&mut self) {
        if !self.touched {
            self.clean_blocks.clear();
            self.clean_nodes.clear();
        }
        self.touched = false;
    }

    fn block_page(&mut self, tree: &sled::Tree, id: u64, page: u64) -> Result<&mut BlockPage> {
        Ok(match self.blocks.entry(page) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.touched = true;
                let stored = match self.clean_blocks.get(&page) {
                    Some(v) => v.clone(),
                    None => tree.get(key_of(b'B', id, Some(page)))?,
                };
                let p = match stored {
                    Some(v) => BlockPage::decode(&v)?,
                    None => BlockPage::default(),
                };
                self.bytes += p.inline_bytes();
                e.insert(p)
            }
        })
    }

    fn node_page(&mut self, tree: &sled::Tree, id: u64, page: u64) -> Result<&mut NodePage> {
        Ok(match self.nodes.entry(page) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.touched = true;
                let stored = match self.clean_nodes.get(&page) {
                    Some(v) => v.clone(),
                    None => tree.get(key_of(b'N', id, Some(page)))?,
                };
                e.insert(match stored {
                    Some(v) => NodePage::decode(&v)?,
                    None => NodePage::default(),
                })
            }
        })
    }

    /// Stages block `seq` (a large one is written under its own key now, before the page
    /// that flags it).
    pub(crate) fn put_block(
        &mut self,
        tree: &sled::Tree,
        id: u64,
        seq: u64,
        value: Vec<u8>,
    ) -> Result<()> {
        let (page, slot) = block_page_of(seq);
        let slot_value = if value.len() > INLINE_MAX {
            tree.insert(key_of(b'b', id, Some(seq)), value)?;
            Slot::External
        } else {
            self.bytes += value.len();
            Slot::Inline(value)
        };
        let p = self.block_page(tree, id, page)?;
        if let Some(s) = p.slots.get_mut(slot) {
            *s = Some(slot_value);
        }
        Ok(())
    }

    /// Stages a tree node.
    pub(crate) fn put_node(&mut self, tree: &sled::Tree, id: u64, n: &Node) -> Result<()> {
        let (page, _) = node_page_of(n.index);
        self.node_page(tree, id, page)?.set(n);
        Ok(())
    }

    /// Writes every staged page to sled.
    pub(crate) fn flush(&mut self, tree: &sled::Tree, id: u64) -> Result<()> {
        for (p, page) in std::mem::take(&mut self.blocks) {
            let v = sled::IVec::from(page.encode());
            tree.insert(key_of(b'B', id, Some(p)), v.clone())?;
            keep_clean(&mut self.clean_blocks, p, Some(v));
        }
        for (p, page) in std::mem::take(&mut self.nodes) {
            let v = sled::IVec::from(page.as_bytes());
            tree.insert(key_of(b'N', id, Some(p)), v.clone())?;
            keep_clean(&mut self.clean_nodes, p, Some(v));
        }
        self.bytes = 0;
        Ok(())
    }

    /// Writes the pages that are full: no later write will change them.
    fn flush_full(&mut self, tree: &sled::Tree, id: u64) -> Result<()> {
        let full: Vec<u64> = self
            .blocks
            .iter()
            .filter(|(_, p)| p.is_full())
            .map(|(k, _)| *k)
            .collect();
        for p in full {
            if let Some(page) = self.blocks.remove(&p) {
                self.bytes = self.bytes.saturating_sub(page.inline_bytes());
                let v = sled::IVec::from(page.encode());
                tree.insert(key_of(b'B', id, Some(p)), v.clone())?;
                keep_clean(&mut self.clean_blocks, p, Some(v));
            }
        }
        let full: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, p)| p.is_full())
            .map(|(k, _)| *k)
            .collect();
        for p in full {
            if let Some(page) = self.nodes.remove(&p) {
                let v = sled::IVec::from(page.as_bytes());
                tree.insert(key_of(b'N', id, Some(p)), v.clone())?;
                keep_clean(&mut self.clean_nodes, p, Some(v));
            }
        }
        Ok(())
    }

    /// Drops everything staged and cached.
    pub(crate) fn clear(&mut self) {
        self.blocks.clear();
        self.nodes.clear();
        self.bytes = 0;
        self.clean_blocks.clear();
        self.clean_nodes.clear();
    }
}

/// Keeps a clean page, emptying the cache when it is full (sequential access moves on; a
/// random one reloads what it needs).
fn keep_clean(cache: &mut HashMap<u64, Option<sled::IVec>>, page: u64, v: Option<sled::IVec>) {
    if cache.len() >= MAX_CLEAN_PAGES && !cache.contains_key(&page) {
        cache.clear();
    }
    cache.insert(page, v);
}

/// One core's part of the store.
#[derive(Clone, Debug)]
pub struct CoreStore {
    tree: sled::Tree,
    id: u64,
    key: Key,
    staged: Arc<Mutex<Staged>>,
}

/// A set of writes to one core, applied by [`CoreStore::apply`].
#[derive(Debug, Default)]
pub struct CoreBatch {
    blocks: Vec<(u64, Vec<u8>)>,
    nodes: Vec<Node>,
    record: Option<CoreRecord>,
}

impl CoreBatch {
    /// Puts tree nodes.
    pub fn nodes(&mut self, nodes: &[Node]) {
        self.nodes.extend_from_slice(nodes);
    }
    /// Puts a block.
    pub fn block(&mut self, seq: u64, value: &[u8]) {
        self.blocks.push((seq, value.to_vec()));
    }
    /// Replaces the head record.
    pub fn record(&mut self, record: CoreRecord) {
        self.record = Some(record);
    }
}

fn block_page_of(seq: u64) -> (u64, usize) {
    (seq / BLOCK_SLOTS, (seq % BLOCK_SLOTS) as usize)
}

fn node_page_of(index: u64) -> (u64, usize) {
    (index / NODE_SLOTS, (index % NODE_SLOTS) as usize)
}

impl CoreStore {
    pub(super) fn new(tree: sled::Tree, id: u64, key: Key, staged: Arc<Mutex<Staged>>) -> Self {
        CoreStore {
            tree,
            id,
            key,
            staged,
        }
    }

    /// The core key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The head record (default for a new core).
    pub fn record(&self) -> Result<CoreRecord> {
        match self.tree.get(key_of(b'h', self.id, None))? {
            Some(v) => CoreRecord::decode(&v),
            None => Ok(CoreRecord::default()),
        }
    }

    /// A stored tree node.
    pub fn node(&self, index: u64) -> Result<Option<Node>> {
        let (page, _) = node_page_of(index);
        let mut st = lock(&self.staged);
        if let Some(p) = st.nodes.get(&page) {
            return Ok(p.get(index));
        }
        Ok(st
            .stored_node_page(&self.tree, self.id, page)?
            .and_then(|v| node_in(&v, index)))
    }

    /// The slot of block `seq`, from the stage or from sled.
    fn slot(&self, seq: u64) -> Result<Option<Slot>> {
        let (page, slot) = block_page_of(seq);
        let mut st = lock(&self.staged);
        if let Some(p) = st.blocks.get(&page) {
            return Ok(p.slots.get(slot).cloned().flatten());
        }
        let stored = st.stored_block_page(&self.tree, self.id, page)?;
        drop(st);
        match stored {
            Some(v) => PageView::new(&v)?.slot(slot),
            None => Ok(None),
        }
    }

    /// A stored block.
    pub fn block(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        match self.slot(seq)? {
            None => Ok(None),
            Some(Slot::Inline(b)) => Ok(Some(b)),
            Some(Slot::External) => match self.tree.get(key_of(b'b', self.id, Some(seq)))? {
                Some(v) => Ok(Some(v.to_vec())),
                None => Err(Error::corruption(format!(
                    "block {seq} is flagged as stored on its own but missing"
                ))),
            },
        }
    }

    /// Whether a block is stored.
    pub fn has_block(&self, seq: u64) -> Result<bool> {
        let (page, slot) = block_page_of(seq);
        let mut st = lock(&self.staged);
        if let Some(p) = st.blocks.get(&page) {
            return Ok(p.slots.get(slot).is_some_and(Option::is_some));
        }
        let stored = st.stored_block_page(&self.tree, self.id, page)?;
        drop(st);
        match stored {
            Some(v) => Ok(PageView::new(&v)?.has(slot)),
            None => Ok(false),
        }
    }

    /// Number of blocks stored (scans every page: for tests and benchmarks).
    pub fn block_count(&self) -> Result<u64> {
        let st = lock(&self.staged);
        let mut n: u64 = st
            .blocks
            .values()
            .map(|p| p.slots.iter().filter(|s| s.is_some()).count() as u64)
            .sum();
        for kv in self.tree.scan_prefix(key_of(b'B', self.id, None)) {
            let (k, v) = kv?;
            if !st.blocks.contains_key(&key_tail(&k)?) {
                n += u64::from(PageView::new(&v)?.count());
            }
        }
        Ok(n)
    }

    /// Starts a batch of writes.
    pub fn batch(&self) -> CoreBatch {
        CoreBatch::default()
    }

    /// Applies a batch. Blocks and nodes go to the stage; a head record is written after
    /// every staged page, so a crash never leaves a head that points past missing data.
    pub fn apply(&self, b: CoreBatch) -> Result<()> {
        let mut st = lock(&self.staged);
        for (seq, value) in b.blocks {
            st.put_block(&self.tree, self.id, seq, value)?;
        }
        for n in &b.nodes {
            st.put_node(&self.tree, self.id, n)?;
        }
        if let Some(r) = b.record {
            st.flush(&self.tree, self.id)?;
            self.tree.insert(key_of(b'h', self.id, None), r.encode())?;
        } else {
            st.flush_full(&self.tree, self.id)?;
            if st.blocks.len() + st.nodes.len() > MAX_STAGED_PAGES || st.bytes > MAX_STAGED_BYTES {
                st.flush(&self.tree, self.id)?;
            }
        }
        Ok(())
    }

    /// Deletes every block from `seq` on and every node spanning them, and writes `record`
    /// and the (verified) nodes `keep` of the new tree, in one sled batch (used when the
    /// author truncates the core).
    pub fn truncate(&self, seq: u64, record: CoreRecord, keep: &[Node]) -> Result<()> {
        let mut st = lock(&self.staged);
        st.flush(&self.tree, self.id)?;
        // The pages change below: no clean copy may outlive this.
        st.clear();
        let mut batch = sled::Batch::default();
        let end = |kind| key_of(kind, self.id.wrapping_add(1), None);
        for k in self
            .tree
            .range(key_of(b'b', self.id, Some(seq))..end(b'b'))
            .keys()
        {
            batch.remove(k?);
        }
        // Block pages: the one holding `seq` loses its tail, the ones after go.
        let (first, cut) = block_page_of(seq);
        let mut blocks = BlockPage::default();
        if let Some(v) = self.tree.get(key_of(b'B', self.id, Some(first)))? {
            blocks = BlockPage::decode(&v)?;
        }
        for s in blocks.slots.iter_mut().skip(cut) {
            *s = None;
        }
        for k in self
            .tree
            .range(key_of(b'B', self.id, Some(first))..end(b'B'))
            .keys()
        {
            batch.remove(k?);
        }
        if blocks.slots.iter().any(Option::is_some) {
            batch.insert(key_of(b'B', self.id, Some(first)), blocks.encode());
        }
        // Node pages: nodes from leaf 2·seq on go, and so do the ancestors of that leaf
        // left of it (they span cut blocks); then the verified nodes of the new tree.
        let leaf = seq.saturating_mul(2);
        let (first, cut) = node_page_of(leaf);
        let mut pages: BTreeMap<u64, NodePage> = BTreeMap::new();
        // Pages after the first are removed below: they start empty.
        let page = |p: u64| -> Result<NodePage> {
            if p > first {
                return Ok(NodePage::default());
            }
            Ok(match self.tree.get(key_of(b'N', self.id, Some(p)))? {
                Some(v) => NodePage::decode(&v)?,
                None => NodePage::default(),
            })
        };
        let mut head = page(first)?;
        for s in cut..NODE_SLOTS as usize {
            head.clear(s);
        }
        pages.insert(first, head);
        for k in self
            .tree
            .range(key_of(b'N', self.id, Some(first))..end(b'N'))
            .keys()
        {
            batch.remove(k?);
        }
        let mut cur = leaf;
        for _ in 0..64 {
            cur = flat::parent(cur);
            if cur < leaf {
                let (p, s) = node_page_of(cur);
                let np = match pages.entry(p) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(page(p)?),
                };
                np.clear(s);
            }
        }
        for n in keep {
            let (p, _) = node_page_of(n.index);
            let np = match pages.entry(p) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(page(p)?),
            };
            np.set(n);
        }
        // sled applies a batch as a map: the last write of a key wins.
        for (p, np) in &pages {
            let k = key_of(b'N', self.id, Some(*p));
            if np.is_empty() {
                batch.remove(k);
            } else {
                batch.insert(k, np.as_bytes());
            }
        }
        batch.insert(key_of(b'h', self.id, None), record.encode());
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    fn node(index: u64) -> Node {
        Node {
            index,
            size: index + 1,
            hash: [index as u8; 32],
        }
    }

    #[test]
    fn cores_nodes_blocks_truncate_remove() {
        let s = Store::temporary().unwrap();
        let k1 = Key([1; 32]);
        let k2 = Key([2; 32]);
        let c1 = s.core(&k1).unwrap();
        let c2 = s.core(&k2).unwrap();
        assert_eq!(s.core(&k1).unwrap().id, c1.id);
        let big = vec![7u8; 3000];
        let mut b = c1.batch();
        for i in 0..40u64 {
            let v = if i == 33 {
                big.clone()
            } else {
                format!("b{i}").into_bytes()
            };
            b.block(i, &v);
            b.nodes(&[Node::leaf(i, &v)]);
        }
        b.nodes(&[node(3), node(7), node(63), node(47), node(66)]);
        c1.apply(b).unwrap();
        let mut b = c2.batch();
        b.block(0, b"other");
        c2.apply(b).unwrap();
        assert_eq!(c1.block_count().unwrap(), 40);
        assert_eq!(&c1.block(3).unwrap().unwrap()[..], b"b3");
        assert_eq!(c1.block(33).unwrap().unwrap(), big);
        assert!(c1.block(40).unwrap().is_none());
        assert_eq!(c1.node(63).unwrap(), Some(node(63)));
        // The same answers once everything is in sled.
        s.shared.flush_staged().unwrap();
        assert_eq!(c1.block_count().unwrap(), 40);
        assert_eq!(c1.block(33).unwrap().unwrap(), big);
        assert!(c1.has_block(39).unwrap() && !c1.has_block(40).unwrap());
        assert_eq!(c1.node(63).unwrap(), Some(node(63)));

        c1.truncate(20, CoreRecord::default(), &[node(31), node(70)])
            .unwrap();
        assert_eq!(c1.block_count().unwrap(), 20);
        assert!(c1.block(33).unwrap().is_none());
        assert!(c1.node(40).unwrap().is_none());
        assert!(c1.node(47).unwrap().is_none(), "node of cut blocks is gone");
        assert!(c1.node(63).unwrap().is_none());
        assert!(c1.node(7).unwrap().is_some(), "node of kept blocks stays");
        assert!(c1.node(38).unwrap().is_some(), "leaf 19 stays");
        assert_eq!(c1.node(31).unwrap(), Some(node(31)), "kept node written");
        assert_eq!(
            c1.node(70).unwrap(),
            Some(node(70)),
            "new node past the cut"
        );
        assert!(c1.node(66).unwrap().is_none(), "its page starts empty");
        assert_eq!(c2.block_count().unwrap(), 1, "other cores untouched");
        s.remove_core(&k1).unwrap();
        assert!(!s.has_core(&k1).unwrap());
        assert_eq!(s.cores().unwrap(), vec![k2]);
        assert!(s
            .tree()
            .scan_prefix(key_of(b'b', c1.id, None))
            .next()
            .is_none());
    }

    #[test]
    fn head_record_is_written_after_the_pages() {
        let s = Store::temporary().unwrap();
        let c = s.core(&Key([3; 32])).unwrap();
        let mut b = c.batch();
        b.block(5, b"five");
        b.nodes(&[node(10)]);
        b.record(CoreRecord {
            contiguous: 0,
            ..CoreRecord::default()
        });
        c.apply(b).unwrap();
        assert!(
            lock(&c.staged).blocks.is_empty(),
            "nothing staged after a record"
        );
        let v = s.tree().get(key_of(b'B', c.id, Some(0))).unwrap().unwrap();
        assert!(PageView::new(&v).unwrap().has(5));
    }

    #[test]
    fn corrupt_pages_are_errors_not_panics() {
        let s = Store::temporary().unwrap();
        let c = s.core(&Key([4; 32])).unwrap();
        s.tree()
            .insert(key_of(b'B', c.id, Some(0)), &[3, 0, 0, 0, 200, 0, 0, 0][..])
            .unwrap();
        s.tree()
            .insert(key_of(b'N', c.id, Some(0)), &[1, 2, 3][..])
            .unwrap();
        assert!(matches!(c.block(1), Err(Error::DataCorruption { .. })));
        assert!(matches!(c.node(1), Err(Error::DataCorruption { .. })));
        let mut b = c.batch();
        b.block(2, b"x");
        assert!(c.apply(b).is_err());
    }
}
