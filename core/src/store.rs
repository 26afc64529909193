//! The sparse core store: every core of the process in one sled database.
//!
//! One sled tree holds everything (ordered writes, head record last: see [`CoreBatch`]), and
//! thousands of cores cost no file descriptors. Keys (big-endian integers, so that scans run
//! in order):
//! ```text
//! 'k' || core key (32)          → core id (u64 BE), allocated once per core
//! 'h' || id (8)                 → head record (below)
//! 'n' || id (8) || index (8)    → tree node: size (u64 LE) || hash (32)
//! 'b' || id (8) || seq (8)      → block bytes
//! ```
//! Head record (compact-encoding): `uint version(1) · uint length · uint fork · optionalBuffer
//! signature · optionalBuffer manifest · array(uint index · uint size · fixed32 hash) roots ·
//! uint contiguous · array(uint fork · uint cut) truncations`.
//!
//! Writes are ordered so that the head record comes last (see [`CoreBatch`]).
//! Only verified data is written here: callers pass the output of
//! [`crate::merkle::verify_proof`] or of our own writer.

use std::path::Path;

use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::merkle::{flat, Head, Node};

/// The store of all cores.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
}

/// What we keep about one core besides its nodes and blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreRecord {
    /// The verified signed head.
    pub head: Head,
    /// The encoded manifest, once known (non-compat cores).
    pub manifest: Option<Vec<u8>>,
    /// Blocks `[0, contiguous)` are all stored.
    pub contiguous: u64,
    /// The last truncations seen: `(new fork, first seq cut)`, oldest first (at most 16).
    pub truncations: Vec<(u64, u64)>,
}

impl Store {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let db = sled::Config::new()
            .path(path.as_ref())
            .cache_capacity(64 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        Self::from_db(db)
    }

    /// A store that lives in memory / a temp dir and vanishes when dropped (tests).
    pub fn temporary() -> Result<Self> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    /// Uses an already open sled database (shares it with other state).
    pub fn from_db(db: sled::Db) -> Result<Self> {
        let tree = db.open_tree("hypercore")?;
        Ok(Store { db, tree })
    }

    /// The sled database (for other state kept alongside).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Flushes everything to disk.
    pub async fn flush(&self) -> Result<()> {
        self.tree.flush_async().await?;
        Ok(())
    }

    /// The store of one core, created on first use.
    pub fn core(&self, key: &Key) -> Result<CoreStore> {
        let mut k = Vec::with_capacity(33);
        k.push(b'k');
        k.extend_from_slice(key.as_bytes());
        if let Some(v) = self.tree.get(&k)? {
            return Ok(CoreStore {
                tree: self.tree.clone(),
                id: decode_id(&v)?,
                key: *key,
            });
        }
        let id = self.db.generate_id()?;
        // Another task may have registered the same key meanwhile: keep whichever came first.
        match self
            .tree
            .compare_and_swap(&k, None as Option<&[u8]>, Some(&id.to_be_bytes()[..]))?
        {
            Ok(()) => Ok(CoreStore {
                tree: self.tree.clone(),
                id,
                key: *key,
            }),
            Err(cas) => Ok(CoreStore {
                tree: self.tree.clone(),
                id: decode_id(cas.current.as_deref().unwrap_or(&[]))?,
                key: *key,
            }),
        }
    }

    /// Whether a core is known.
    pub fn has_core(&self, key: &Key) -> Result<bool> {
        let mut k = vec![b'k'];
        k.extend_from_slice(key.as_bytes());
        Ok(self.tree.contains_key(k)?)
    }

    /// Every core key in the store.
    pub fn cores(&self) -> Result<Vec<Key>> {
        self.tree
            .scan_prefix(b"k")
            .map(|kv| {
                let (k, _) = kv?;
                Key::from_slice(k.get(1..).unwrap_or(&[]))
                    .map_err(|_| Error::corruption("bad core key entry"))
            })
            .collect()
    }

    /// Deletes a core and everything stored for it.
    pub fn remove_core(&self, key: &Key) -> Result<()> {
        let mut k = vec![b'k'];
        k.extend_from_slice(key.as_bytes());
        let Some(v) = self.tree.get(&k)? else {
            return Ok(());
        };
        let id = decode_id(&v)?;
        for prefix in [b'n', b'b'] {
            let mut p = vec![prefix];
            p.extend_from_slice(&id.to_be_bytes());
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in self.tree.scan_prefix(&p).keys() {
                batch.remove(kv?);
                n += 1;
                if n >= 10_000 {
                    self.tree.apply_batch(std::mem::take(&mut batch))?;
                    n = 0;
                }
            }
            self.tree.apply_batch(batch)?;
        }
        let mut batch = sled::Batch::default();
        batch.remove(key_of(b'h', id, None));
        batch.remove(k);
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

fn decode_id(v: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = v.try_into().map_err(|_| Error::corruption("bad core id"))?;
    Ok(u64::from_be_bytes(arr))
}

fn key_of(kind: u8, id: u64, n: Option<u64>) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(kind);
    k.extend_from_slice(&id.to_be_bytes());
    if let Some(n) = n {
        k.extend_from_slice(&n.to_be_bytes());
    }
    k
}

fn encode_node(n: &Node) -> [u8; 40] {
    let mut v = [0u8; 40];
    v[..8].copy_from_slice(&n.size.to_le_bytes());
    v[8..].copy_from_slice(&n.hash);
    v
}

fn decode_node(index: u64, v: &[u8]) -> Result<Node> {
    let mut r = Reader::new(v, "stored node");
    let size = r.u64le()?;
    let hash = r.fixed32()?;
    if !r.is_empty() {
        return Err(Error::corruption(format!(
            "stored node {index} has trailing bytes"
        )));
    }
    Ok(Node { index, size, hash })
}

impl CoreRecord {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.uint(1)
            .uint(self.head.length)
            .uint(self.head.fork)
            .optional_buffer(self.head.signature.as_deref())
            .optional_buffer(self.manifest.as_deref())
            .uint(self.head.roots.len() as u64);
        for r in &self.head.roots {
            w.uint(r.index).uint(r.size).raw(&r.hash);
        }
        w.uint(self.contiguous);
        w.uint(self.truncations.len() as u64);
        for (fork, cut) in &self.truncations {
            w.uint(*fork).uint(*cut);
        }
        w.finish()
    }

    fn decode(b: &[u8]) -> Result<Self> {
        let corrupt = |e: Error| Error::corruption(format!("core head record: {e}"));
        let mut r = Reader::new(b, "core head record");
        let version = r.uint().map_err(corrupt)?;
        if version != 1 {
            return Err(Error::corruption(format!(
                "unknown head record version {version}"
            )));
        }
        let length = r.uint().map_err(corrupt)?;
        let fork = r.uint().map_err(corrupt)?;
        let signature = r.optional_buffer().map_err(corrupt)?.map(<[u8]>::to_vec);
        let manifest = r.optional_buffer().map_err(corrupt)?.map(<[u8]>::to_vec);
        let n = r.array_len(34).map_err(corrupt)?;
        let roots = (0..n)
            .map(|_| {
                Ok(Node {
                    index: r.uint()?,
                    size: r.uint()?,
                    hash: r.fixed32()?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map_err(corrupt)?;
        let contiguous = r.uint().map_err(corrupt)?;
        let n = r.array_len(2).map_err(corrupt)?;
        let truncations = (0..n)
            .map(|_| Ok((r.uint()?, r.uint()?)))
            .collect::<Result<Vec<_>>>()
            .map_err(corrupt)?;
        Ok(CoreRecord {
            head: Head {
                length,
                fork,
                roots,
                signature,
            },
            manifest,
            contiguous,
            truncations,
        })
    }
}

/// One core's part of the store.
#[derive(Clone, Debug)]
pub struct CoreStore {
    tree: sled::Tree,
    id: u64,
    key: Key,
}

/// A set of writes to one core. Applied as plain inserts in order with the head record
/// last: sled recovers a prefix of its log after a crash, so the head never points past
/// blocks and nodes that are missing. (A `sled::Batch` per block would force two log
/// writes and a `sync_file_range` each: half the CPU of a full download.)
#[derive(Debug, Default)]
pub struct CoreBatch {
    items: Vec<(Vec<u8>, Vec<u8>)>,
    record: Option<CoreRecord>,
}

impl CoreBatch {
    /// Puts tree nodes.
    pub fn nodes(&mut self, core: &CoreStore, nodes: &[Node]) {
        for n in nodes {
            self.items.push((
                key_of(b'n', core.id, Some(n.index)),
                encode_node(n).to_vec(),
            ));
        }
    }
    /// Puts a block.
    pub fn block(&mut self, core: &CoreStore, seq: u64, value: &[u8]) {
        self.items
            .push((key_of(b'b', core.id, Some(seq)), value.to_vec()));
    }
    /// Replaces the head record.
    pub fn record(&mut self, record: CoreRecord) {
        self.record = Some(record);
    }
}

impl CoreStore {
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
        self.tree
            .get(key_of(b'n', self.id, Some(index)))?
            .map(|v| decode_node(index, &v))
            .transpose()
    }

    /// A stored block.
    pub fn block(&self, seq: u64) -> Result<Option<sled::IVec>> {
        Ok(self.tree.get(key_of(b'b', self.id, Some(seq)))?)
    }

    /// Whether a block is stored.
    pub fn has_block(&self, seq: u64) -> Result<bool> {
        Ok(self.tree.contains_key(key_of(b'b', self.id, Some(seq)))?)
    }

    /// Number of blocks stored.
    pub fn block_count(&self) -> usize {
        self.tree.scan_prefix(key_of(b'b', self.id, None)).count()
    }

    /// First stored block at or after `seq`, and first missing one after a run (for
    /// availability announcements). Returns `[start, end)` of the next stored run.
    pub fn next_run(&self, seq: u64, limit: u64) -> Result<Option<(u64, u64)>> {
        let mut iter = self
            .tree
            .range(key_of(b'b', self.id, Some(seq))..key_of(b'b', self.id, Some(limit)));
        let mut start = None;
        let mut end = 0;
        for kv in iter.by_ref() {
            let (k, _) = kv?;
            let s = k
                .get(9..17)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| Error::corruption("bad block key"))?;
            match start {
                None => {
                    start = Some(s);
                    end = s + 1;
                }
                Some(_) if s == end => end += 1,
                Some(_) => break,
            }
        }
        Ok(start.map(|s| (s, end)))
    }

    /// Starts a batch of writes.
    pub fn batch(&self) -> CoreBatch {
        CoreBatch::default()
    }

    /// Applies a batch: blocks and nodes first, the head record last.
    pub fn apply(&self, b: CoreBatch) -> Result<()> {
        for (k, v) in b.items {
            self.tree.insert(k, v)?;
        }
        if let Some(r) = b.record {
            self.tree.insert(key_of(b'h', self.id, None), r.encode())?;
        }
        Ok(())
    }

    /// Deletes every block from `seq` on and every node spanning them, and writes `record`
    /// and the (verified) nodes `keep` of the new tree, in one batch (used when the author
    /// truncates the core).
    pub fn truncate(&self, seq: u64, record: CoreRecord, keep: &[Node]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for k in self
            .tree
            .range(key_of(b'b', self.id, Some(seq))..key_of(b'b', self.id.wrapping_add(1), None))
            .keys()
        {
            batch.remove(k?);
        }
        let leaf = seq.saturating_mul(2);
        for k in self
            .tree
            .range(key_of(b'n', self.id, Some(leaf))..key_of(b'n', self.id.wrapping_add(1), None))
            .keys()
        {
            batch.remove(k?);
        }
        // Ancestors of leaf 2·seq that sit left of it also span cut blocks.
        let mut cur = leaf;
        for _ in 0..64 {
            cur = flat::parent(cur);
            if cur < leaf {
                batch.remove(key_of(b'n', self.id, Some(cur)));
            }
        }
        // sled applies a batch as a map: the inserts below win over removals of the same key.
        for n in keep {
            batch.insert(key_of(b'n', self.id, Some(n.index)), &encode_node(n)[..]);
        }
        batch.insert(key_of(b'h', self.id, None), record.encode());
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip_and_corruption() {
        let r = CoreRecord {
            head: Head {
                length: 5,
                fork: 1,
                roots: vec![
                    Node {
                        index: 3,
                        size: 10,
                        hash: [1; 32],
                    },
                    Node {
                        index: 8,
                        size: 2,
                        hash: [2; 32],
                    },
                ],
                signature: Some(vec![9; 68]),
            },
            manifest: Some(vec![1, 2, 3]),
            contiguous: 3,
            truncations: vec![(1, 2)],
        };
        assert_eq!(CoreRecord::decode(&r.encode()).unwrap(), r);
        let mut bad = r.encode();
        bad.truncate(bad.len() - 3);
        assert!(matches!(
            CoreRecord::decode(&bad),
            Err(Error::DataCorruption { .. })
        ));
    }

    #[test]
    fn cores_nodes_blocks_truncate_remove() {
        let s = Store::temporary().unwrap();
        let k1 = Key([1; 32]);
        let k2 = Key([2; 32]);
        let c1 = s.core(&k1).unwrap();
        let c2 = s.core(&k2).unwrap();
        assert_eq!(s.core(&k1).unwrap().id, c1.id);
        let mut b = c1.batch();
        for i in 0..8u64 {
            b.block(&c1, i, format!("b{i}").as_bytes());
            b.nodes(&c1, &[Node::leaf(i, format!("b{i}").as_bytes())]);
        }
        b.nodes(
            &c1,
            &[
                Node {
                    index: 3,
                    size: 8,
                    hash: [0; 32],
                },
                Node {
                    index: 7,
                    size: 16,
                    hash: [0; 32],
                },
            ],
        );
        c1.apply(b).unwrap();
        let mut b = c2.batch();
        b.block(&c2, 0, b"other");
        c2.apply(b).unwrap();
        assert_eq!(c1.block_count(), 8);
        assert_eq!(c1.next_run(0, 100).unwrap(), Some((0, 8)));
        assert_eq!(&c1.block(3).unwrap().unwrap()[..], b"b3");
        c1.truncate(5, CoreRecord::default(), &[]).unwrap();
        assert_eq!(c1.block_count(), 5);
        assert!(c1.node(10).unwrap().is_none());
        assert!(
            c1.node(7).unwrap().is_none(),
            "root spanning cut blocks is gone"
        );
        assert!(c1.node(3).unwrap().is_some(), "node of kept blocks stays");
        assert!(c1.node(8).unwrap().is_some());
        assert_eq!(c2.block_count(), 1, "other cores untouched");
        s.remove_core(&k1).unwrap();
        assert!(!s.has_core(&k1).unwrap());
        assert_eq!(s.cores().unwrap(), vec![k2]);
    }
}
