//! One core's pages in memory: dirty pages (changed here, not yet in sled) and clean copies
//! of pages recently written or read.
//!
//! A dirty page is complete: it was loaded from sled before its first change, so reads look
//! at dirty pages, then clean ones, then sled. A dirty page stays dirty until the write-behind
//! thread (`behind.rs`) has put that very version into sled; only then does it become a
//! clean copy. Everything happens under the core's lock, so a clean copy is never older
//! than sled. (A sequential download reads back the pages it just wrote, and asks about
//! pages that do not exist yet: sled gets were a fifth of a reader's CPU.)

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use super::key_of;
use super::page::{
    check_node_page, BlockPage, NodePage, Slot, BLOCK_SLOTS, INLINE_MAX, NODE_SLOTS,
};
use crate::error::Result;
use crate::merkle::Node;

/// Unsent dirty pages of one core beyond this many are all sent at once.
const MAX_UNSENT_PAGES: usize = 24;
/// Full pages are sent in groups of this many (one hand-over per group).
const SEND_FULL_AT: usize = 8;
/// Unsent inline block bytes beyond this are all sent at once.
const MAX_UNSENT_BYTES: usize = 512 * 1024;
/// Clean pages kept per core (of each kind) before the cache is emptied.
const MAX_CLEAN_PAGES: usize = 64;

pub(crate) fn block_page_of(seq: u64) -> (u64, usize) {
    (seq / BLOCK_SLOTS, (seq % BLOCK_SLOTS) as usize)
}

pub(crate) fn node_page_of(index: u64) -> (u64, usize) {
    (index / NODE_SLOTS, (index % NODE_SLOTS) as usize)
}

/// A dirty page and the version of it last handed to the write-behind thread.
#[derive(Debug)]
struct Dirty<P> {
    page: P,
    /// Bumped at every change.
    gen: u64,
    /// `gen` is on its way to sled.
    sent: bool,
}

/// One page version for sled: `kind || id || page` → `value`.
#[derive(Debug)]
pub(crate) struct PageWrite {
    pub(crate) kind: u8,
    pub(crate) page: u64,
    pub(crate) gen: u64,
    pub(crate) value: sled::IVec,
}

#[derive(Debug, Default)]
pub(crate) struct Staged {
    blocks: BTreeMap<u64, Dirty<BlockPage>>,
    nodes: BTreeMap<u64, Dirty<NodePage>>,
    gen: u64,
    /// Pages changed since they were last sent: `(kind, page)`.
    unsent: std::collections::BTreeSet<(u8, u64)>,
    /// Inline block bytes changed since the last send (approximate).
    bytes: usize,
    /// `None`: known not to be in sled.
    clean_blocks: HashMap<u64, Option<sled::IVec>>,
    clean_nodes: HashMap<u64, Option<sled::IVec>>,
    /// Used since the flusher last looked (an idle core's clean pages are dropped).
    touched: bool,
}

impl Staged {
    /// The dirty block page `page`, if any.
    pub(crate) fn dirty_block(&self, page: u64) -> Option<&BlockPage> {
        self.blocks.get(&page).map(|d| &d.page)
    }

    /// The dirty node page `page`, if any.
    pub(crate) fn dirty_node(&self, page: u64) -> Option<&NodePage> {
        self.nodes.get(&page).map(|d| &d.page)
    }

    /// Present blocks in dirty pages, and the dirty page numbers.
    pub(crate) fn dirty_block_counts(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.blocks.iter().map(|(p, d)| {
            let n = d.page.slots.iter().filter(|s| s.is_some()).count() as u64;
            (*p, n)
        })
    }

    /// Block page `page` as stored (a clean copy, or read from sled and kept).
    pub(crate) fn stored_block_page(
        &mut self,
        tree: &sled::Tree,
        id: u64,
        page: u64,
    ) -> Result<Option<sled::IVec>> {
        self.touched = true;
        stored(&mut self.clean_blocks, tree, (b'B', id), page, |_| Ok(()))
    }

    /// Node page `page` as stored (see [`Self::stored_block_page`]).
    pub(crate) fn stored_node_page(
        &mut self,
        tree: &sled::Tree,
        id: u64,
        page: u64,
    ) -> Result<Option<sled::IVec>> {
        self.touched = true;
        stored(&mut self.clean_nodes, tree, (b'N', id), page, |v| {
            check_node_page(v).map(|_| ())
        })
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

    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// Block page `page`, loaded if needed, marked changed.
    fn change_block(&mut self, tree: &sled::Tree, id: u64, page: u64) -> Result<&mut BlockPage> {
        let gen = self.next_gen();
        self.touched = true;
        self.unsent.insert((b'B', page));
        let stored = (tree, (b'B', id), &self.clean_blocks);
        change(&mut self.blocks, page, gen, stored, BlockPage::decode)
    }

    /// Node page `page`, loaded if needed, marked changed.
    fn change_node(&mut self, tree: &sled::Tree, id: u64, page: u64) -> Result<&mut NodePage> {
        let gen = self.next_gen();
        self.touched = true;
        self.unsent.insert((b'N', page));
        let stored = (tree, (b'N', id), &self.clean_nodes);
        change(&mut self.nodes, page, gen, stored, NodePage::decode)
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
        let p = self.change_block(tree, id, page)?;
        if let Some(s) = p.slots.get_mut(slot) {
            *s = Some(slot_value);
        }
        Ok(())
    }

    /// Stages a tree node.
    pub(crate) fn put_node(&mut self, tree: &sled::Tree, id: u64, n: &Node) -> Result<()> {
        let (page, _) = node_page_of(n.index);
        self.change_node(tree, id, page)?.set(n);
        Ok(())
    }

    /// The page versions to hand to sled now: every unsent one if `all` or if the unsent
    /// ones passed the budget, else the full ones (no later write changes those). Marks
    /// them sent.
    pub(crate) fn take(&mut self, all: bool) -> Vec<PageWrite> {
        let all = all || self.unsent.len() > MAX_UNSENT_PAGES || self.bytes > MAX_UNSENT_BYTES;
        let full = |me: &Self, &(kind, page): &(u8, u64)| match kind {
            b'B' => me.blocks.get(&page).is_some_and(|d| d.page.is_full()),
            _ => me.nodes.get(&page).is_some_and(|d| d.page.is_full()),
        };
        let chosen: Vec<(u8, u64)> = if all {
            std::mem::take(&mut self.unsent).into_iter().collect()
        } else {
            let full: Vec<(u8, u64)> = self
                .unsent
                .iter()
                .filter(|k| full(self, k))
                .copied()
                .collect();
            if full.len() < SEND_FULL_AT {
                return Vec::new();
            }
            for k in &full {
                self.unsent.remove(k);
            }
            full
        };
        let mut out = Vec::with_capacity(chosen.len());
        for (kind, page) in chosen {
            let (gen, value) = match kind {
                b'B' => match self.blocks.get_mut(&page) {
                    Some(d) => {
                        d.sent = true;
                        (d.gen, d.page.encode().into())
                    }
                    None => continue,
                },
                _ => match self.nodes.get_mut(&page) {
                    Some(d) => {
                        d.sent = true;
                        (d.gen, d.page.as_bytes().into())
                    }
                    None => continue,
                },
            };
            out.push(PageWrite {
                kind,
                page,
                gen,
                value,
            });
        }
        if all {
            self.bytes = 0;
        }
        out
    }

    /// `w` is in sled: if the page has not changed since, it is clean now.
    pub(crate) fn written(&mut self, w: &PageWrite) {
        match w.kind {
            b'B' => {
                if self.blocks.get(&w.page).is_some_and(|d| d.gen == w.gen) {
                    self.blocks.remove(&w.page);
                    keep_clean(&mut self.clean_blocks, w.page, Some(w.value.clone()));
                }
            }
            _ => {
                if self.nodes.get(&w.page).is_some_and(|d| d.gen == w.gen) {
                    self.nodes.remove(&w.page);
                    keep_clean(&mut self.clean_nodes, w.page, Some(w.value.clone()));
                }
            }
        }
    }

    /// Writes every dirty page to sled from this thread (store migration, before the
    /// write-behind thread runs).
    pub(crate) fn write_now(&mut self, tree: &sled::Tree, id: u64) -> Result<()> {
        for w in self.take(true) {
            tree.insert(key_of(w.kind, id, Some(w.page)), w.value.clone())?;
            self.written(&w);
        }
        Ok(())
    }

    /// Forgets the clean copy of block page `page` (it is gone from sled).
    pub(crate) fn forget_clean_block_page(&mut self, page: u64) {
        self.clean_blocks.remove(&page);
    }

    /// Drops everything dirty and cached.
    pub(crate) fn clear(&mut self) {
        self.blocks.clear();
        self.nodes.clear();
        self.unsent.clear();
        self.bytes = 0;
        self.clean_blocks.clear();
        self.clean_nodes.clear();
    }
}

/// Page `page` of `dirty`, stamped with `gen` as changed and unsent. A page not dirty yet is
/// loaded first: from its clean copy, else from sled (`stored`: the tree, `(kind, core id)`
/// and the clean copies).
fn change<'a, P: Default>(
    dirty: &'a mut BTreeMap<u64, Dirty<P>>,
    page: u64,
    gen: u64,
    (tree, (kind, id), clean): (&sled::Tree, (u8, u64), &HashMap<u64, Option<sled::IVec>>),
    decode: fn(&[u8]) -> Result<P>,
) -> Result<&'a mut P> {
    let d = match dirty.entry(page) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            let stored = match clean.get(&page) {
                Some(v) => v.clone(),
                None => tree.get(key_of(kind, id, Some(page)))?,
            };
            let page = match stored {
                Some(v) => decode(&v)?,
                None => P::default(),
            };
            e.insert(Dirty {
                page,
                gen,
                sent: false,
            })
        }
    };
    d.gen = gen;
    d.sent = false;
    Ok(&mut d.page)
}

/// Page `page` of kind `kind` of core `id` as stored: its clean copy, or read from sled
/// (checked by `check`) and kept as one.
fn stored(
    clean: &mut HashMap<u64, Option<sled::IVec>>,
    tree: &sled::Tree,
    (kind, id): (u8, u64),
    page: u64,
    check: fn(&[u8]) -> Result<()>,
) -> Result<Option<sled::IVec>> {
    if let Some(v) = clean.get(&page) {
        return Ok(v.clone());
    }
    let v = tree.get(key_of(kind, id, Some(page)))?;
    if let Some(v) = &v {
        check(v)?;
    }
    keep_clean(clean, page, v.clone());
    Ok(v)
}

/// Keeps a clean page, emptying the cache when it is full (sequential access moves on; a
/// random one reloads what it needs).
fn keep_clean(cache: &mut HashMap<u64, Option<sled::IVec>>, page: u64, v: Option<sled::IVec>) {
    if cache.len() >= MAX_CLEAN_PAGES && !cache.contains_key(&page) {
        cache.clear();
    }
    cache.insert(page, v);
}
