//! Hyperbee: a B-tree stored in the blocks of a core (JS `hyperbee` 2).
//!
//! [`Bee`] reads over a [`Replica`]: each call fetches only the blocks it walks (the root
//! block, the blocks holding the keys it compares, the child nodes it descends into), so a
//! `get` on a large remote bee downloads a handful of blocks. Decoded blocks are cached.
//!
//! ```no_run
//! # async fn run(replica: std::sync::Arc<apiary_core::replicate::Replica>) -> apiary_core::Result<()> {
//! use apiary_core::bee::{Bee, RangeOptions};
//! let bee = Bee::new(replica);
//! let snap = bee.snapshot();                     // the current version
//! if let Some(e) = snap.get(b"some-key").await? {
//!     println!("{} = {:?}", e.seq, e.value);
//! }
//! let newest = snap.range(RangeOptions { reverse: true, limit: Some(10), ..Default::default() }).await?;
//! # Ok(()) }
//! ```

pub mod block;
mod history;
mod iter;
pub(crate) mod walk;
mod writer;
pub use block::{BeeBlock, NodeRef, TreeNode};
pub use history::{HistoryEntry, HistoryOptions, OpKind};
pub use iter::{DiffEntry, RangeIter, RangeOptions};
pub use writer::{BeeWriter, Op, Written};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::replicate::Replica;

/// An entry: its seq (block), full key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The block that wrote it.
    pub seq: u64,
    /// The key (with a sub's prefix removed when read through a sub).
    pub key: Vec<u8>,
    /// The value (`None` for a put of an empty value).
    pub value: Option<Vec<u8>>,
}

const CACHE_ENTRIES: usize = 8192;

/// A two-generation cache of decoded blocks: cheap, and keeps what is used often.
#[derive(Default)]
struct BlockCache {
    young: HashMap<u64, Arc<BeeBlock>>,
    old: HashMap<u64, Arc<BeeBlock>>,
    capacity: usize,
}

impl BlockCache {
    fn get(&mut self, seq: u64) -> Option<Arc<BeeBlock>> {
        if let Some(b) = self.young.get(&seq) {
            return Some(b.clone());
        }
        let b = self.old.remove(&seq)?;
        self.insert(b.clone());
        Some(b)
    }
    fn insert(&mut self, b: Arc<BeeBlock>) {
        if self.capacity == 0 {
            return;
        }
        if self.young.len() >= self.capacity {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(b.seq, b);
    }
}

/// A bee over a core.
pub struct Bee {
    core: Arc<Replica>,
    cache: Mutex<BlockCache>,
    fork: Mutex<u64>,
}

impl std::fmt::Debug for Bee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bee({})", self.core.key())
    }
}

impl Bee {
    /// A bee reading `core`, caching up to 8192 decoded blocks (twice that at most).
    pub fn new(core: Arc<Replica>) -> Self {
        Self::with_cache(core, CACHE_ENTRIES)
    }

    /// A bee with a cache of `capacity` decoded blocks (0 = no cache), for processes that
    /// hold many bees.
    pub fn with_cache(core: Arc<Replica>, capacity: usize) -> Self {
        let fork = core.fork();
        Bee {
            core,
            cache: Mutex::new(BlockCache {
                capacity,
                ..BlockCache::default()
            }),
            fork: Mutex::new(fork),
        }
    }

    /// The core underneath.
    pub fn core(&self) -> &Arc<Replica> {
        &self.core
    }

    /// The current version: `max(1, length)`, as JS reports it.
    pub fn version(&self) -> u64 {
        self.core.length().max(1)
    }

    /// The current version's view.
    pub fn snapshot(&self) -> Snapshot<'_> {
        self.checkout(self.version())
    }

    /// The view of an older version (version `v` = the first `v` blocks).
    pub fn checkout(&self, version: u64) -> Snapshot<'_> {
        Snapshot {
            bee: self,
            version,
            prefix: Vec::new(),
        }
    }

    /// Checks block 0 is a hyperbee header.
    pub async fn header(&self) -> Result<block::Header> {
        let raw = self.core.get(0).await?;
        block::decode_header(&raw)
    }

    /// Block `seq` decoded (cached).
    pub async fn block(&self, seq: u64) -> Result<Arc<BeeBlock>> {
        if seq == 0 {
            return Err(Error::invalid("block 0 is the header, not an entry"));
        }
        {
            // A truncation may have replaced blocks: drop the cache when the fork moves.
            let fork = self.core.fork();
            let mut f = self.fork.lock().unwrap_or_else(|p| p.into_inner());
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if *f != fork {
                *f = fork;
                c.young.clear();
                c.old.clear();
            }
            if let Some(b) = c.get(seq) {
                return Ok(b);
            }
        }
        let raw = self.core.get(seq).await?;
        let b = Arc::new(BeeBlock::decode(seq, &raw)?);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(b.clone());
        Ok(b)
    }
}

/// A bee at one version, optionally under a sub prefix.
#[derive(Debug, Clone)]
pub struct Snapshot<'a> {
    bee: &'a Bee,
    version: u64,
    prefix: Vec<u8>,
}

impl<'a> Snapshot<'a> {
    /// The version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A view of the keys under `name` (JS `bee.sub(name)`: prefix `name || 0x00`, nested subs
    /// concatenate).
    pub fn sub(&self, name: &[u8]) -> Snapshot<'a> {
        let mut prefix = self.prefix.clone();
        prefix.extend_from_slice(name);
        prefix.push(0);
        Snapshot {
            bee: self.bee,
            version: self.version,
            prefix,
        }
    }

    fn check_version(&self) -> Result<()> {
        let len = self.bee.core.length();
        if self.version > len.max(1) {
            return Err(Error::invalid(format!(
                "version {} is beyond the length {len}",
                self.version
            )));
        }
        Ok(())
    }

    /// The root node of this version, if the tree is not empty.
    async fn root(&self) -> Result<Option<(NodeRef, Arc<BeeBlock>)>> {
        self.check_version()?;
        if self.version < 2 {
            return Ok(None);
        }
        let seq = self.version - 1;
        let b = self.bee.block(seq).await?;
        if b.levels.is_empty() {
            return Err(Error::invalid(format!(
                "version {} ends inside a batch and has no tree root",
                self.version
            )));
        }
        Ok(Some((NodeRef { seq, offset: 0 }, b)))
    }

    async fn node(&self, r: NodeRef) -> Result<(Arc<BeeBlock>, usize)> {
        if r.seq >= self.version {
            return Err(Error::Decode {
                what: "bee node",
                reason: format!("pointer to block {} beyond version {}", r.seq, self.version),
            });
        }
        let b = self.bee.block(r.seq).await?;
        b.level(r.offset)?;
        Ok((b, r.offset as usize))
    }

    async fn key_of(&self, seq: u64) -> Result<Arc<BeeBlock>> {
        if seq >= self.version {
            return Err(Error::Decode {
                what: "bee node",
                reason: format!("key {seq} beyond version {}", self.version),
            });
        }
        self.bee.block(seq).await
    }

    fn entry(&self, b: &BeeBlock) -> Entry {
        Entry {
            seq: b.seq,
            key: b.key.get(self.prefix.len()..).unwrap_or(&[]).to_vec(),
            value: b.value.clone(),
        }
    }

    /// The newest entry under `key` at this version: the walk of [`walk::get`], fetching
    /// each block it asks for (at most one per level and comparison, like JS hyperbee).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        self.check_version()?;
        let mut full = self.prefix.clone();
        full.extend_from_slice(key);
        let mut have: HashMap<u64, Arc<BeeBlock>> = HashMap::new();
        loop {
            match walk::get(&full, self.version, |s| have.get(&s).cloned())? {
                walk::Walk::Need(seq) => {
                    let b = self.bee.block(seq).await?;
                    have.insert(seq, b);
                }
                walk::Walk::Found(b) => return Ok(Some(self.entry(&b))),
                walk::Walk::Absent => return Ok(None),
            }
        }
    }
}
