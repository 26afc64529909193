//! One core's part of the store: reads go through its staged pages (`staged.rs`), writes
//! are staged and handed to the write-behind thread (`behind.rs`). Layout: the module docs
//! of `store`.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::behind::Behind;
use super::page::{node_in, BlockPage, NodePage, PageView, Slot, NODE_SLOTS};
use super::spool::CoreSpool;
use super::staged::{block_page_of, node_page_of, Staged};
use super::{key_of, key_tail, lock, CoreRecord, Shared};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::merkle::{flat, Node};

/// One core's part of the store.
#[derive(Clone, Debug)]
pub struct CoreStore {
    tree: sled::Tree,
    id: u64,
    key: Key,
    staged: Arc<Mutex<Staged>>,
    /// Block payloads in files instead of sled (`spool.rs`), when the store has a spool.
    spool: Option<Arc<Mutex<CoreSpool>>>,
    /// Keeps the store (its flusher and write-behind thread) alive while this lives.
    shared: Arc<Shared>,
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

impl CoreStore {
    pub(super) fn new(
        tree: sled::Tree,
        id: u64,
        key: Key,
        (staged, spool): (Arc<Mutex<Staged>>, Option<Arc<Mutex<CoreSpool>>>),
        shared: Arc<Shared>,
    ) -> Self {
        CoreStore {
            tree,
            id,
            key,
            staged,
            spool,
            shared,
        }
    }

    fn behind(&self) -> &Behind {
        &self.shared.behind
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
        if let Some(p) = st.dirty_node(page) {
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
        if let Some(p) = st.dirty_block(page) {
            return Ok(p.slots.get(slot).cloned().flatten());
        }
        let stored = st.stored_block_page(&self.tree, self.id, page)?;
        drop(st);
        match stored {
            Some(v) => PageView::new(&v)?.slot(slot),
            None => Ok(None),
        }
    }

    /// A stored block. A spooled block is checked against its leaf in the tree: one a crash
    /// left torn reads as missing (the reader fetches it again).
    pub fn block(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        if let Some(sp) = &self.spool {
            let spooled = lock(sp).get(seq)?;
            if let Some(b) = spooled {
                match self.node(seq.saturating_mul(2))? {
                    Some(n) if n != Node::leaf(seq, &b) => {
                        tracing::warn!(core = %self.key, seq, "spooled block does not match its leaf; fetching it again");
                    }
                    _ => return Ok(Some(b)),
                }
            }
        }
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
        if let Some(sp) = &self.spool {
            if lock(sp).has(seq)? {
                return Ok(true);
            }
        }
        let (page, slot) = block_page_of(seq);
        let mut st = lock(&self.staged);
        if let Some(p) = st.dirty_block(page) {
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
        let spooled = match &self.spool {
            Some(sp) => lock(sp).count()?,
            None => 0,
        };
        let st = lock(&self.staged);
        let mut n: u64 = spooled + st.dirty_block_counts().map(|(_, n)| n).sum::<u64>();
        for kv in self.tree.scan_prefix(key_of(b'B', self.id, None)) {
            let (k, v) = kv?;
            if st.dirty_block(key_tail(&k)?).is_none() {
                n += u64::from(PageView::new(&v)?.count());
            }
        }
        Ok(n)
    }

    /// Starts a batch of writes.
    pub fn batch(&self) -> CoreBatch {
        CoreBatch::default()
    }

    /// Applies a batch. Blocks and nodes are staged, and handed to the write-behind thread
    /// as pages fill; a head record is written after every page staged before it is in
    /// sled, so a crash never leaves a head that points past missing data.
    pub fn apply(&self, b: CoreBatch) -> Result<()> {
        let mut blocks = b.blocks;
        if let Some(sp) = &self.spool {
            let mut sp = lock(sp);
            for (seq, value) in blocks.drain(..) {
                sp.put(seq, &value)?;
            }
        }
        {
            let mut st = lock(&self.staged);
            for (seq, value) in blocks {
                st.put_block(&self.tree, self.id, seq, value)?;
            }
            for n in &b.nodes {
                st.put_node(&self.tree, self.id, n)?;
            }
            let writes = st.take(b.record.is_some());
            self.behind().write(&self.staged, self.id, writes)?;
        }
        match b.record {
            Some(r) => {
                self.behind().barrier()?;
                self.tree.insert(key_of(b'h', self.id, None), r.encode())?;
                Ok(())
            }
            None => self.behind().keep_up(),
        }
    }

    /// Makes everything applied so far durable: dirty pages go to sled, and sled writes its
    /// log out and syncs it. An author calls it before a new head becomes visible to peers:
    /// a head a reader was shown and the author then lost in a crash would have the author
    /// sign a second tree for the same length with its next append, and readers that hold
    /// the first (JS hypercore: "two conflicting signatures") cannot follow the core again.
    pub fn sync(&self) -> Result<()> {
        self.write_all()?;
        self.tree.flush()?;
        Ok(())
    }

    /// Hands every dirty page to sled and waits until they are there.
    pub(super) fn write_all(&self) -> Result<()> {
        {
            let mut st = lock(&self.staged);
            let writes = st.take(true);
            self.behind().write(&self.staged, self.id, writes)?;
        }
        self.behind().barrier()
    }

    /// Drops the payloads of the blocks below `before`, whole pages of 16 only (a page
    /// holding `before` or later keeps all its blocks), and keeps every tree node and the
    /// head: what an index-only reader keeps once the blocks are indexed. Returns the blocks
    /// dropped. A page being written meanwhile (dirty) is left for a later call; a block
    /// fetched again later is stored again, and dropped again by a later call.
    pub fn drop_blocks(&self, before: u64) -> Result<u64> {
        let spooled = match &self.spool {
            Some(sp) => lock(sp).drop_below(before)?,
            None => 0,
        };
        let pages_end = before / 16;
        if pages_end == 0 {
            return Ok(spooled);
        }
        // No block page below the bound, staged or stored (a spooled core has none): done,
        // without writing out the stage.
        let range = key_of(b'B', self.id, Some(0))..key_of(b'B', self.id, Some(pages_end));
        let staged_below = lock(&self.staged)
            .dirty_block_counts()
            .any(|(p, _)| p < pages_end);
        if !staged_below && self.tree.range(range.clone()).next().is_none() {
            return Ok(spooled);
        }
        self.write_all()?;
        // Held while sled changes: no page of this core is loaded or staged meanwhile.
        let mut st = lock(&self.staged);
        let mut batch = sled::Batch::default();
        let mut dropped = 0u64;
        let mut kept_pages = Vec::new();
        for kv in self.tree.range(range) {
            let (k, v) = kv?;
            let page = key_tail(&k)?;
            if st.dirty_block(page).is_some() {
                kept_pages.push(page);
                continue;
            }
            dropped += u64::from(PageView::new(&v)?.count());
            st.forget_clean_block_page(page);
            batch.remove(k);
        }
        for k in self
            .tree
            .range(key_of(b'b', self.id, Some(0))..key_of(b'b', self.id, Some(pages_end * 16)))
            .keys()
        {
            let k = k?;
            if !kept_pages.contains(&(key_tail(&k)? / 16)) {
                batch.remove(k);
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(spooled + dropped)
    }

    /// Deletes every block from `seq` on and every node spanning them, and writes `record`
    /// and the (verified) nodes `keep` of the new tree, in one sled batch (used when the
    /// author truncates the core).
    pub fn truncate(&self, seq: u64, record: CoreRecord, keep: &[Node]) -> Result<()> {
        if let Some(sp) = &self.spool {
            lock(sp).truncate(seq)?;
        }
        self.write_all()?;
        // The pages change below: no copy in memory may outlive this. (The fork guard keeps
        // every other writer of this core out until we return.)
        lock(&self.staged).clear();
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
    fn dropping_blocks_keeps_nodes_and_later_pages() {
        let s = Store::temporary().unwrap();
        let c = s.core(&Key([3; 32])).unwrap();
        let other = s.core(&Key([4; 32])).unwrap();
        let big = vec![9u8; 3000];
        let value = |i: u64| match i {
            5 | 40 => big.clone(),
            _ => format!("b{i}").into_bytes(),
        };
        for core in [&c, &other] {
            let mut b = core.batch();
            for i in 0..50u64 {
                b.block(i, &value(i));
                b.nodes(&[Node::leaf(i, &value(i))]);
            }
            core.apply(b).unwrap();
        }
        // Below 37: pages 0 and 1 (blocks 0..32) go; page 2 holds 37, so it stays whole.
        assert_eq!(c.drop_blocks(37).unwrap(), 32);
        for i in 0..50u64 {
            assert_eq!(c.block(i).unwrap().is_some(), i >= 32, "block {i}");
            assert_eq!(c.node(2 * i).unwrap(), Some(Node::leaf(i, &value(i))));
        }
        assert_eq!(c.block(40).unwrap(), Some(big.clone()));
        assert_eq!(c.drop_blocks(37).unwrap(), 0, "nothing left to drop");
        assert_eq!(c.block_count().unwrap(), 18);
        assert_eq!(
            other.block_count().unwrap(),
            50,
            "another core keeps its blocks"
        );
        // A block fetched again is stored again, and dropped again.
        let mut b = c.batch();
        b.block(5, &big);
        c.apply(b).unwrap();
        assert_eq!(c.block(5).unwrap(), Some(big));
        assert_eq!(c.drop_blocks(16).unwrap(), 1);
        assert!(c.block(5).unwrap().is_none());
        // Nothing below the first page boundary is dropped.
        let mut b = c.batch();
        b.block(3, b"again");
        c.apply(b).unwrap();
        assert_eq!(c.drop_blocks(15).unwrap(), 0);
        assert_eq!(c.block(3).unwrap(), Some(b"again".to_vec()));
        assert_eq!(c.block_count().unwrap(), 19);
    }

    #[test]
    fn a_spool_holds_the_blocks_and_dropping_deletes_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let s = Store::with_spool(db, dir.path().join("spool")).unwrap();
        let key = Key([5; 32]);
        let c = s.core(&key).unwrap();
        let value = |i: u64| format!("block {i}").into_bytes();
        let mut b = c.batch();
        for i in 0..3000u64 {
            b.block(i, &value(i));
            b.nodes(&[Node::leaf(i, &value(i))]);
        }
        c.apply(b).unwrap();
        assert_eq!(c.block_count().unwrap(), 3000);
        assert_eq!(c.block(1234).unwrap(), Some(value(1234)));
        assert!(c.has_block(2999).unwrap() && !c.has_block(3000).unwrap());
        let files = || {
            std::fs::read_dir(dir.path().join("spool").join(format!("{:016x}", c.id)))
                .map_or(0, |d| d.count())
        };
        assert_eq!(files(), 12);
        // No block page went to sled.
        assert_eq!(s.tree().scan_prefix(key_of(b'B', c.id, None)).count(), 0);
        assert_eq!(c.drop_blocks(2100).unwrap(), 2048);
        assert_eq!(files(), 4);
        assert!(c.block(10).unwrap().is_none());
        assert_eq!(c.block(2500).unwrap(), Some(value(2500)));
        // A spooled block that is not what its leaf says reads as missing.
        let mut b = c.batch();
        b.block(2600, b"not block 2600");
        c.apply(b).unwrap();
        assert!(c.block(2600).unwrap().is_none());
        // Truncation and removal reach the spool.
        c.truncate(2800, CoreRecord::default(), &[]).unwrap();
        assert!(c.has_block(2799).unwrap() && !c.has_block(2800).unwrap());
        s.remove_core(&key).unwrap();
        assert_eq!(files(), 0);
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
        assert!(lock(&c1.staged).dirty_block(0).is_none());
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
            lock(&c.staged).dirty_block(0).is_none(),
            "nothing dirty after a record"
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
