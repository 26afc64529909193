//! The spool: block payloads kept in plain files instead of sled, for a reader that drops
//! them once used (the aggregator's `retention = "index-only"`).
//!
//! sled never gives back the space of removed values (its segments are reused, its files do
//! not shrink), so a store that drops blocks after a while would still grow like one that
//! keeps them. Here a core's blocks go to files of [`SPAN`] consecutive seqs, and dropping
//! blocks deletes whole files: the space is back at once. Tree nodes and the head stay in
//! sled.
//!
//! Layout: `ROOT/<core id, 16 hex>/<first seq of the span, 16 hex>.blk`, each a sequence of
//! records `seq (u64 LE) · len (u32 LE) · bytes`, appended as blocks arrive (a later record
//! of a seq wins). Nothing is synced: like the store's staged pages, a block lost in a crash
//! is a verified copy the reader fetches again. A file is scanned when first used; a record
//! cut short by a crash ends the file there (it is truncated to the last whole record), and a
//! record whose seq is outside the file's span ends it too. Every read is checked by the
//! caller against the block's leaf hash in the tree ([`super::CoreStore::block`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Seqs per file: a 100k-block bee is 391 files, deleted as the index passes them.
pub(crate) const SPAN: u64 = 256;
/// Open files kept, over all cores (a process following 10k feeds must not hold a
/// descriptor per feed).
const OPEN_FILES: usize = 64;
const HEADER: usize = 12;
/// Largest record we read back (a hypercore block is far smaller).
const MAX_BLOCK: u32 = 64 << 20;

/// One span file: where each of its blocks is.
#[derive(Debug)]
struct SpanFile {
    at: HashMap<u64, (u64, u32)>,
    end: u64,
}

/// The open span files of every core, at most [`OPEN_FILES`]: when full it is emptied
/// (access is mostly sequential, so the files in use are opened again at once).
#[derive(Debug, Default)]
pub(crate) struct Handles {
    /// By (core id, first seq of the span).
    open: HashMap<(u64, u64), Arc<File>>,
}

impl Handles {
    fn get(&mut self, at: (u64, u64), path: impl FnOnce() -> PathBuf) -> Result<Arc<File>> {
        if let Some(f) = self.open.get(&at) {
            return Ok(f.clone());
        }
        if self.open.len() >= OPEN_FILES {
            self.open.clear();
        }
        let path = path();
        let f = Arc::new(
            OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(|e| io("opening", &path, e))?,
        );
        self.open.insert(at, f.clone());
        Ok(f)
    }

    fn close(&mut self, at: (u64, u64)) {
        self.open.remove(&at);
    }
}

/// One core's spool.
#[derive(Debug)]
pub(crate) struct CoreSpool {
    id: u64,
    dir: PathBuf,
    files: BTreeMap<u64, SpanFile>,
    loaded: bool,
    handles: Arc<std::sync::Mutex<Handles>>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("spool: {what} {}: {e}", path.display()),
    ))
}

fn span_of(seq: u64) -> u64 {
    seq - seq % SPAN
}

impl CoreSpool {
    /// The spool of core `id` under `root` (nothing is read until it is used).
    pub(crate) fn new(root: &Path, id: u64, handles: Arc<std::sync::Mutex<Handles>>) -> Self {
        CoreSpool {
            id,
            dir: root.join(format!("{id:016x}")),
            files: BTreeMap::new(),
            loaded: false,
            handles,
        }
    }

    fn handle(&self, start: u64) -> Result<Arc<File>> {
        super::lock(&self.handles).get((self.id, start), || self.path(start))
    }

    fn forget(&mut self, start: u64) -> Result<()> {
        super::lock(&self.handles).close((self.id, start));
        remove(&self.path(start))
    }

    fn path(&self, start: u64) -> PathBuf {
        self.dir.join(format!("{start:016x}.blk"))
    }

    /// Scans the core's files once.
    fn load(&mut self) -> Result<()> {
        if self.loaded {
            return Ok(());
        }
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.loaded = true;
                return Ok(());
            }
            Err(e) => return Err(io("reading", &self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io("reading", &self.dir, e))?;
            let name = entry.file_name();
            let start = name
                .to_str()
                .and_then(|n| n.strip_suffix(".blk"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .filter(|s| s % SPAN == 0);
            if let Some(start) = start {
                let f = scan(&entry.path(), start)?;
                self.files.insert(start, f);
            }
        }
        self.loaded = true;
        Ok(())
    }

    /// Appends block `seq`.
    pub(crate) fn put(&mut self, seq: u64, value: &[u8]) -> Result<()> {
        self.load()?;
        let len = u32::try_from(value.len())
            .ok()
            .filter(|&l| l <= MAX_BLOCK)
            .ok_or_else(|| Error::invalid("block too large for the spool"))?;
        let start = span_of(seq);
        if !self.files.contains_key(&start) {
            std::fs::create_dir_all(&self.dir).map_err(|e| io("creating", &self.dir, e))?;
            let end = self
                .handle(start)?
                .metadata()
                .map_err(|e| io("reading", &self.path(start), e))?
                .len();
            self.files.insert(
                start,
                SpanFile {
                    at: HashMap::new(),
                    end,
                },
            );
        }
        let file = self.handle(start)?;
        let f = self
            .files
            .get_mut(&start)
            .ok_or_else(|| Error::invalid("spool file vanished"))?;
        let mut rec = Vec::with_capacity(HEADER + value.len());
        rec.extend_from_slice(&seq.to_le_bytes());
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(value);
        (&*file)
            .write_all(&rec)
            .map_err(|e| io("writing", &self.dir, e))?;
        f.at.insert(seq, (f.end + HEADER as u64, len));
        f.end += rec.len() as u64;
        Ok(())
    }

    /// Block `seq`, if spooled (unchecked: the caller checks it against the tree).
    pub(crate) fn get(&mut self, seq: u64) -> Result<Option<Vec<u8>>> {
        self.load()?;
        let start = span_of(seq);
        let Some(f) = self.files.get(&start) else {
            return Ok(None);
        };
        let Some(&(offset, len)) = f.at.get(&seq) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; len as usize];
        self.handle(start)?
            .read_exact_at(&mut buf, offset)
            .map_err(|e| io("reading", &self.path(start), e))?;
        Ok(Some(buf))
    }

    /// Whether block `seq` is spooled.
    pub(crate) fn has(&mut self, seq: u64) -> Result<bool> {
        self.load()?;
        Ok(self
            .files
            .get(&span_of(seq))
            .is_some_and(|f| f.at.contains_key(&seq)))
    }

    /// Blocks spooled.
    pub(crate) fn count(&mut self) -> Result<u64> {
        self.load()?;
        Ok(self.files.values().map(|f| f.at.len() as u64).sum())
    }

    /// Deletes the files whose every seq is below `before`; returns the blocks they held.
    pub(crate) fn drop_below(&mut self, before: u64) -> Result<u64> {
        self.load()?;
        let gone: Vec<u64> = self
            .files
            .keys()
            .copied()
            .take_while(|&s| s + SPAN <= before)
            .collect();
        let mut dropped = 0;
        for start in gone {
            if let Some(f) = self.files.remove(&start) {
                dropped += f.at.len() as u64;
            }
            self.forget(start)?;
        }
        Ok(dropped)
    }

    /// Forgets every block from `seq` on (the author truncated): later files are deleted,
    /// the one holding `seq` is rewritten with the blocks before it.
    pub(crate) fn truncate(&mut self, seq: u64) -> Result<()> {
        self.load()?;
        let later: Vec<u64> = self.files.range(seq..).map(|(s, _)| *s).collect();
        for start in later {
            self.files.remove(&start);
            self.forget(start)?;
        }
        let start = span_of(seq);
        if start == seq {
            return Ok(());
        }
        let Some(f) = self.files.remove(&start) else {
            return Ok(());
        };
        let mut keep: Vec<(u64, Vec<u8>)> = Vec::new();
        let file = self.handle(start)?;
        for (&s, &(offset, len)) in f.at.iter().filter(|(s, _)| **s < seq) {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| io("reading", &self.path(start), e))?;
            keep.push((s, buf));
        }
        drop(file);
        self.forget(start)?;
        for (s, b) in keep {
            self.put(s, &b)?;
        }
        Ok(())
    }

    /// Deletes the core's spool.
    pub(crate) fn remove_all(&mut self) -> Result<()> {
        let starts: Vec<u64> = self.files.keys().copied().collect();
        for start in starts {
            super::lock(&self.handles).close((self.id, start));
        }
        self.files.clear();
        self.loaded = true;
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing", &self.dir, e)),
        }
    }
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path, e)),
    }
}

/// Reads the records of a span file; a torn or foreign tail is cut off.
fn scan(path: &Path, start: u64) -> Result<SpanFile> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| io("opening", path, e))?;
    let size = file.metadata().map_err(|e| io("reading", path, e))?.len();
    let mut at = HashMap::new();
    let mut pos = 0u64;
    let mut header = [0u8; HEADER];
    while pos + HEADER as u64 <= size {
        file.read_exact_at(&mut header, pos)
            .map_err(|e| io("reading", path, e))?;
        let (s, l) = header.split_at(8);
        let seq = u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
        let len = u32::from_le_bytes(l.try_into().unwrap_or([0; 4]));
        let body = pos + HEADER as u64;
        if span_of(seq) != start || len > MAX_BLOCK || body + u64::from(len) > size {
            break;
        }
        at.insert(seq, (body, len));
        pos = body + u64::from(len);
    }
    if pos < size {
        tracing::warn!(
            "spool: {} ends in {} bytes that are not a whole record; cut",
            path.display(),
            size - pos
        );
        file.set_len(pos).map_err(|e| io("truncating", path, e))?;
    }
    Ok(SpanFile { at, end: pos })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn put_get_drop_truncate_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let h = Arc::new(std::sync::Mutex::new(Handles::default()));
        let spool = || CoreSpool::new(dir.path(), 7, h.clone());
        let mut s = spool();
        for seq in 0..3000u64 {
            s.put(seq, format!("block {seq}").as_bytes()).unwrap();
        }
        s.put(5, b"again").unwrap();
        assert_eq!(s.get(5).unwrap().unwrap(), b"again");
        assert_eq!(s.get(2999).unwrap().unwrap(), b"block 2999");
        assert!(s.get(3000).unwrap().is_none());
        assert_eq!(s.count().unwrap(), 3000);
        // Below 2500: the files up to 2304 are whole.
        assert_eq!(s.drop_below(2500).unwrap(), 2304);
        assert!(!s.has(2303).unwrap());
        assert!(s.has(2304).unwrap());
        s.truncate(2600).unwrap();
        assert!(s.has(2599).unwrap() && !s.has(2600).unwrap());
        assert_eq!(s.count().unwrap(), 296);
        // Reopened: the same blocks; then a torn record at the end is cut off.
        let mut s = spool();
        assert_eq!(s.count().unwrap(), 296);
        assert_eq!(s.get(2599).unwrap().unwrap(), b"block 2599");
        let path = s.path(2560);
        drop(s);
        h.lock().unwrap().open.clear();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&2700u64.to_le_bytes()).unwrap();
        f.write_all(&100u32.to_le_bytes()).unwrap();
        f.write_all(b"short").unwrap();
        drop(f);
        let mut s = spool();
        assert!(!s.has(2700).unwrap());
        s.put(2700, b"whole").unwrap();
        let mut s = spool();
        assert_eq!(s.get(2700).unwrap().unwrap(), b"whole");
        assert_eq!(s.get(2599).unwrap().unwrap(), b"block 2599");
        s.remove_all().unwrap();
        assert!(!dir.path().join(format!("{:016x}", 7)).exists());
    }
}
