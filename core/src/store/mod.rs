//! The sparse core store: every core of the process in one sled database.
//!
//! One sled tree holds everything, and thousands of cores cost no file descriptors. Keys
//! (big-endian integers, so that scans run in order):
//! ```text
//! 'v'                           → store format (u8): 2
//! 'k' || core key (32)          → core id (u64 BE), allocated once per core
//! 'h' || id (8)                 → head record (below)
//! 'N' || id (8) || page (8)     → node page: tree nodes 32·page .. 32·page + 32 (page.rs)
//! 'B' || id (8) || page (8)     → block page: blocks 16·page .. 16·page + 16 (page.rs)
//! 'b' || id (8) || seq (8)      → a block larger than 1 KiB, flagged "external" in its page
//! ```
//! Head record (compact-encoding): `uint version(1) · uint length · uint fork · optionalBuffer
//! signature · optionalBuffer manifest · array(uint index · uint size · fixed32 hash) roots ·
//! uint contiguous · array(uint fork · uint cut) truncations`.
//!
//! With a spool ([`Store::with_spool`]) block payloads go to files instead (`spool.rs`), so
//! that dropping them gives the disk space back; the rest stays here.
//!
//! Format 1 (before pages: `'n'` per node and `'b'` per block) is migrated on open.
//!
//! Writes are staged per core in memory (`staged.rs`) and handed to a write-behind thread
//! (`behind.rs`) when a page fills, when the stage grows past a small budget, every second,
//! on [`Store::flush`], and always before a head record, which is written only once the
//! pages before it are in sled (see [`CoreStore::apply`]). sled recovers a prefix of its log
//! after a crash, so the head record never points past blocks and nodes that are missing;
//! staged pages lost in a crash hold only verified copies a reader fetches again.
//! Only verified data is written here: callers pass the output of
//! [`crate::merkle::verify_proof`] or of our own writer.

mod behind;
mod core_store;
mod migrate;
mod page;
mod record;
mod spool;
mod staged;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub use core_store::{CoreBatch, CoreStore};
pub use record::{CoreRecord, MAX_TRUNCATIONS};

use crate::error::{Error, Result};
use crate::id::Key;
use behind::Behind;
use staged::Staged;

/// Current store format (the `'v'` key).
const FORMAT: u8 = 2;
/// How often staged pages are written to sled when nothing else writes them.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The store of all cores.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    shared: Arc<Shared>,
}

/// What every clone of a [`Store`] and its flusher thread share.
#[derive(Debug)]
struct Shared {
    tree: sled::Tree,
    /// The staging area of every core opened so far, by core id.
    staged: Mutex<HashMap<u64, Arc<Mutex<Staged>>>>,
    behind: Behind,
    /// Where block payloads go instead of sled ([`Store::with_spool`]), and each core's
    /// spool once used.
    spool: Option<PathBuf>,
    spools: Mutex<HashMap<u64, Arc<Mutex<spool::CoreSpool>>>>,
    handles: Arc<Mutex<spool::Handles>>,
}

impl Shared {
    /// Hands every core's dirty pages to the write-behind thread; `age`: also forget idle
    /// cores' clean pages (the flusher's tick).
    fn send_staged(&self, age: bool) -> Result<()> {
        let all: Vec<(u64, Arc<Mutex<Staged>>)> = lock(&self.staged)
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        for (id, s) in all {
            let mut st = lock(&s);
            let writes = st.take(true);
            self.behind.write(&s, id, writes)?;
            if age {
                st.age();
            }
        }
        Ok(())
    }

    /// Writes every core's dirty pages to sled and waits until they are there.
    fn flush_staged(&self) -> Result<()> {
        self.send_staged(false)?;
        self.behind.barrier()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Err(e) = self.flush_staged() {
            tracing::warn!("store: staged pages not written on close: {e}");
        }
        self.behind.close();
    }
}

/// Locks a mutex, also after a panic elsewhere (the data is pages, valid at every step).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        Self::open_db(db, None)
    }

    /// As [`Store::from_db`], with block payloads written to files under `spool` instead
    /// of sled (see `spool.rs`): for a reader that drops blocks once used
    /// ([`CoreStore::drop_blocks`] then deletes whole files, and the disk space is back at
    /// once). Blocks already in sled stay readable.
    pub fn with_spool(db: sled::Db, spool: PathBuf) -> Result<Self> {
        Self::open_db(db, Some(spool))
    }

    fn open_db(db: sled::Db, spool: Option<PathBuf>) -> Result<Self> {
        let tree = db.open_tree("hypercore")?;
        match tree.get(b"v")?.as_deref() {
            Some([FORMAT]) => {}
            Some(v) => {
                return Err(Error::corruption(format!(
                    "store format {v:?} is not one this version reads ({FORMAT})"
                )))
            }
            None => {
                migrate::from_format_1(&tree)?;
                tree.insert(b"v", &[FORMAT])?;
            }
        }
        let behind = Behind::spawn(tree.clone())?;
        let shared = Arc::new(Shared {
            tree,
            staged: Mutex::new(HashMap::new()),
            behind,
            spool,
            spools: Mutex::new(HashMap::new()),
            handles: Arc::default(),
        });
        spawn_flusher(Arc::downgrade(&shared));
        Ok(Store { db, shared })
    }

    /// The first write error of the store, if any. sled cannot write again after one
    /// (it keeps the error), so only reopening the store clears it.
    pub fn write_error(&self) -> Option<String> {
        self.shared.behind.failure()
    }

    /// The sled database (for other state kept alongside).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn tree(&self) -> &sled::Tree {
        &self.shared.tree
    }

    /// Writes staged pages and flushes everything to disk.
    pub async fn flush(&self) -> Result<()> {
        self.shared.flush_staged()?;
        self.tree().flush_async().await?;
        Ok(())
    }

    /// The store of one core, created on first use.
    pub fn core(&self, key: &Key) -> Result<CoreStore> {
        let k = core_key(key);
        let id = match self.tree().get(&k)? {
            Some(v) => decode_id(&v)?,
            None => {
                let id = self.db.generate_id()?;
                // Another task may have registered the same key meanwhile: keep whichever
                // came first.
                match self.tree().compare_and_swap(
                    &k,
                    None as Option<&[u8]>,
                    Some(&id.to_be_bytes()[..]),
                )? {
                    Ok(()) => id,
                    Err(cas) => decode_id(cas.current.as_deref().unwrap_or(&[]))?,
                }
            }
        };
        let staged = lock(&self.shared.staged).entry(id).or_default().clone();
        let spool = self.spool_of(id);
        Ok(CoreStore::new(
            self.tree().clone(),
            id,
            *key,
            (staged, spool),
            self.shared.clone(),
        ))
    }

    fn spool_of(&self, id: u64) -> Option<Arc<Mutex<spool::CoreSpool>>> {
        let root = self.shared.spool.as_ref()?;
        Some(
            lock(&self.shared.spools)
                .entry(id)
                .or_insert_with(|| {
                    let handles = self.shared.handles.clone();
                    Arc::new(Mutex::new(spool::CoreSpool::new(root, id, handles)))
                })
                .clone(),
        )
    }

    /// Whether a core is known.
    pub fn has_core(&self, key: &Key) -> Result<bool> {
        Ok(self.tree().contains_key(core_key(key))?)
    }

    /// Every core key in the store.
    pub fn cores(&self) -> Result<Vec<Key>> {
        self.tree()
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
        let k = core_key(key);
        let Some(v) = self.tree().get(&k)? else {
            return Ok(());
        };
        let id = decode_id(&v)?;
        let staged = lock(&self.shared.staged).remove(&id);
        if let Some(s) = staged {
            lock(&s).clear();
        }
        if let Some(sp) = self.spool_of(id) {
            lock(&sp).remove_all()?;
            lock(&self.shared.spools).remove(&id);
        }
        // Pages of this core already on their way to sled land before the removal.
        self.shared.behind.barrier()?;
        for prefix in [b'N', b'B', b'b'] {
            remove_prefix(self.tree(), &key_of(prefix, id, None))?;
        }
        let mut batch = sled::Batch::default();
        batch.remove(key_of(b'h', id, None));
        batch.remove(k);
        self.tree().apply_batch(batch)?;
        Ok(())
    }
}

/// Writes staged pages every [`FLUSH_EVERY`] until the store is dropped, so that an idle
/// core's few staged blocks neither sit in memory for long nor wait for the next write.
fn spawn_flusher(shared: Weak<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("apiary-store-flush".into())
        .spawn(move || loop {
            std::thread::sleep(FLUSH_EVERY);
            let Some(s) = shared.upgrade() else { break };
            if let Err(e) = s.send_staged(true) {
                tracing::warn!("store: writing staged pages failed: {e}");
            }
        });
    if let Err(e) = spawned {
        // Pages are still written by the next head record, a full stage or `flush`.
        tracing::warn!("store: no flusher thread: {e}");
    }
}

fn remove_prefix(tree: &sled::Tree, prefix: &[u8]) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for k in tree.scan_prefix(prefix).keys() {
        batch.remove(k?);
        n += 1;
        if n >= 10_000 {
            tree.apply_batch(std::mem::take(&mut batch))?;
            n = 0;
        }
    }
    tree.apply_batch(batch)?;
    Ok(())
}

fn core_key(key: &Key) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(b'k');
    k.extend_from_slice(key.as_bytes());
    k
}

fn decode_id(v: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = v.try_into().map_err(|_| Error::corruption("bad core id"))?;
    Ok(u64::from_be_bytes(arr))
}

/// `kind || id || n` (big-endian), or `kind || id` without `n`.
fn key_of(kind: u8, id: u64, n: Option<u64>) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(kind);
    k.extend_from_slice(&id.to_be_bytes());
    if let Some(n) = n {
        k.extend_from_slice(&n.to_be_bytes());
    }
    k
}

/// The last 8 bytes of a 17-byte key as an integer.
fn key_tail(k: &[u8]) -> Result<u64> {
    k.get(9..17)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::corruption("bad store key"))
}
