//! A copy of the index's last commit, taken while the process runs (for `backup`).
//!
//! Tantivy never changes a segment file once written, and `meta.json` names the segments of
//! the last commit. With commits paused ([`Index::pause_commits`]) and tantivy's meta lock
//! held (its garbage collector takes that lock before deleting the files of merged-away
//! segments, so none disappears mid-copy), the files that `meta.json` names are copied, then
//! a `meta.json` listing exactly them. The checkpoints returned are those of that commit.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

use tantivy::collector::Count;
use tantivy::directory::{Directory, META_LOCK};
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use tantivy::Term;

use super::{Checkpoint, Index};
use crate::error::{Error, Result};

/// While held, the index writer does not commit (it queues what it is sent).
#[derive(Debug)]
pub struct CommitPause<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

/// What [`Index::copy_committed`] copied.
#[derive(Debug)]
pub struct IndexCopy {
    /// Each feed's checkpoint in the copied commit (z-base-32 key → checkpoint).
    pub checkpoints: HashMap<String, Checkpoint>,
    /// Entry documents in the copied commit.
    pub entries: u64,
    /// Segment files copied.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// tantivy's list of the files it manages (and may delete later): `.managed.json`.
const MANAGED: &str = ".managed.json";

impl Index {
    /// Stops commits until the pause is dropped; waits for a commit under way. Blocks: call
    /// it off the async workers.
    pub fn pause_commits(&self) -> CommitPause<'_> {
        CommitPause(self.gate.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Copies the last commit into the new directory `to`. Call it with commits paused
    /// (else the checkpoints returned may be newer than the files). Blocks.
    pub fn copy_committed(&self, _paused: &CommitPause<'_>, to: &Path) -> Result<IndexCopy> {
        let dir = self.index.directory();
        let _no_gc = dir
            .acquire_lock(&META_LOCK)
            .map_err(|e| Error::Index(format!("cannot hold the index meta lock: {e}")))?;
        let metas = self.index.load_metas()?;
        let checkpoints = self
            .committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        std::fs::create_dir(to).map_err(|e| io_at(to, e))?;
        let mut copied: HashSet<PathBuf> = HashSet::new();
        let mut bytes = 0;
        for seg in &metas.segments {
            for f in seg.list_files() {
                // list_files also names components a segment may not have (no deletes, no
                // temporary store): only what exists is part of it.
                let src = self.dir.join(&f);
                let dst = to.join(&f);
                match std::fs::copy(&src, &dst) {
                    Ok(n) => bytes += n,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_at(&src, e)),
                }
                sync_file(&dst)?;
                copied.insert(f);
            }
        }
        let mut meta = serde_json::to_vec_pretty(&metas)
            .map_err(|e| Error::Index(format!("encoding meta.json: {e}")))?;
        meta.push(b'\n');
        write_synced(&to.join("meta.json"), &meta)?;
        let managed = serde_json::to_vec(&copied)
            .map_err(|e| Error::Index(format!("encoding {MANAGED}: {e}")))?;
        write_synced(&to.join(MANAGED), &managed)?;
        sync_file(to)?;
        // The copy must open as an index and hold the documents its meta.json counts.
        let want: u64 = metas.segments.iter().map(|s| u64::from(s.num_docs())).sum();
        let searcher = tantivy::Index::open_in_dir(to)?.reader()?.searcher();
        if searcher.num_docs() != want {
            return Err(Error::Index(format!(
                "the copied index holds {} documents, its commit {want}",
                searcher.num_docs()
            )));
        }
        let q = TermQuery::new(
            Term::from_field_text(self.f.kind, "entry"),
            IndexRecordOption::Basic,
        );
        let entries = searcher.search(&q, &Count)? as u64;
        Ok(IndexCopy {
            checkpoints,
            entries,
            files: copied.len(),
            bytes,
        })
    }
}

fn io_at(path: &Path, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_at(path, e))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| io_at(path, e))?;
    sync_file(path)
}
