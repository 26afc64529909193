//! `backup`: a consistent snapshot of the data directory, taken by the running aggregator.
//!
//! The running process holds sled's lock, so another process cannot read the state; the
//! `backup DIR` subcommand asks the running one (`POST /v1/admin/backup {"dir"}`, admin
//! only), which writes a complete data directory into `DIR`:
//! 1. index commits pause (the writer queues what feeds send; reads go on);
//! 2. the last commit's tantivy files are copied (`index/`), with the checkpoints it holds;
//! 3. the sled state trees (follows, feed counters, identity) are copied key by key, and
//!    every core of the block store through the store's own API: the head record first, then
//!    the nodes and blocks it covers (pages only grow until a truncation, which changes the
//!    fork: the core is copied again), then that head — so the copy is a store whose heads
//!    never point past missing data, and which holds every block the index covers;
//! 4. commits resume, and `backup.json` (what was copied, and each feed's checkpoint) is
//!    written last: a directory without it is not a finished backup.
//!
//! Restore: start an aggregator with `--data-dir DIR`. It resumes every feed from the
//! checkpoints of the copied commit and fetches what came after from its peers; re-ingest
//! upserts by (feed, key), so nothing is doubled.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use apiary_core::store::{CoreStore, Store};
use apiary_core::Key;
use serde_json::{json, Value};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::Aggregator;

/// Written last into a finished backup.
pub const MANIFEST: &str = "backup.json";

/// One backup at a time.
static RUNNING: AtomicBool = AtomicBool::new(false);

struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Blocks (and tree nodes) staged in the copy before they are handed to its store.
const BATCH_BLOCKS: u64 = 1024;

/// Takes a backup into `dir` (absolute; new, or an empty directory). Returns the manifest.
pub async fn take(agg: Arc<Aggregator>, dir: PathBuf) -> Result<Value> {
    if RUNNING.swap(true, Ordering::AcqRel) {
        return Err(Error::Conflict("a backup is already running".into()));
    }
    let one = Running;
    let made = prepare_target(&agg.cfg.data_dir, &dir)?;
    let rt = tokio::runtime::Handle::current();
    // All in the blocking task, so that a client that goes away (dropping this future)
    // neither lets a second backup start early nor leaves a failed one behind.
    tokio::task::spawn_blocking(move || {
        let _one = one;
        let res = snapshot(&agg, &dir, &rt);
        if res.is_err() {
            remove_partial(&dir, made);
        }
        res
    })
    .await
    .unwrap_or_else(|e| Err(Error::Unavailable(format!("the backup task failed: {e}"))))
}

/// Removes what a failed backup wrote (the directory was empty, or absent: `made`).
fn remove_partial(dir: &Path, made: bool) {
    for part in ["index", "state", MANIFEST] {
        let p = dir.join(part);
        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
    }
    if made {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Checks the target and makes it if missing (true then). Refuses a relative path (400); a
/// non-empty directory, a file, one inside the data directory or holding it, or one this
/// process may not make or write (409: the request is well formed, the filesystem is in the
/// way).
fn prepare_target(data_dir: &Path, dir: &Path) -> Result<bool> {
    if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
        return Err(Error::BadRequest(format!(
            "the backup directory must be an absolute path without '..', got {}",
            dir.display()
        )));
    }
    let data = data_dir
        .canonicalize()
        .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("data dir: {e}"))))?;
    let target = resolve(dir);
    if target.starts_with(&data) || data.starts_with(&target) {
        return Err(Error::Conflict(format!(
            "the backup directory {} must be outside the data directory {}",
            dir.display(),
            data.display()
        )));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Conflict(format!(
                    "{} is not empty: a backup goes into a new or empty directory",
                    dir.display()
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| target_error(dir, e))?;
            Ok(true)
        }
        Err(e) => Err(target_error(dir, e)),
    }
}

/// An error reaching or making the target: the client's to fix by choosing another one when
/// it is about that path (a name too long, no permission, a file in the way), else ours.
fn target_error(dir: &Path, e: std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    let why = format!("cannot use {} as the backup directory: {e}", dir.display());
    match e.kind() {
        K::InvalidInput | K::InvalidFilename => Error::BadRequest(why),
        K::PermissionDenied
        | K::ReadOnlyFilesystem
        | K::NotADirectory
        | K::IsADirectory
        | K::AlreadyExists
        | K::NotFound => Error::Conflict(why),
        _ => io_at(dir, e),
    }
}

/// `p` with its longest existing ancestor resolved (symlinks), the rest appended.
fn resolve(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p;
    loop {
        if let Ok(c) = cur.canonicalize() {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

fn io_at(path: &Path, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

/// Steps 1–4 of the module docs. Blocks.
fn snapshot(agg: &Aggregator, dir: &Path, rt: &tokio::runtime::Handle) -> Result<Value> {
    let started = Instant::now();
    let paused = agg.index.pause_commits();
    let index = agg.index.copy_committed(&paused, &dir.join("index"))?;
    let src = agg.replicator().store();
    let db = sled::Config::new()
        .path(dir.join("state"))
        .cache_capacity(64 * 1024 * 1024)
        .open()?;
    let keys = copy_trees(src.db(), &db)?;
    let copied = copy_store(src, Store::from_db(db.clone())?, rt)?;
    drop(paused);
    db.flush()?;
    drop(db);
    // Per feed: the checkpoint of the copied commit, and the blocks copied (the store copy
    // follows the index copy, so it may hold more: a restore indexes those from its own
    // store before it needs a peer).
    let mut names: Vec<&String> = index
        .checkpoints
        .keys()
        .chain(copied.lengths.keys())
        .collect();
    names.sort();
    names.dedup();
    let feeds: Vec<Value> = names
        .into_iter()
        .map(|feed| {
            let cp = index.checkpoints.get(feed).copied().unwrap_or_default();
            json!({
                "feed": feed,
                "indexedVersion": cp.version,
                "fork": cp.fork,
                "length": copied.lengths.get(feed).copied().unwrap_or(0),
                "contiguous": copied.contiguous.get(feed).copied().unwrap_or(0),
            })
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    let manifest = json!({
        "format": 1,
        "createdAt": crate::extract::format_time(now),
        "apiaryVersion": env!("CARGO_PKG_VERSION"),
        "dir": dir,
        "from": agg.cfg.data_dir,
        "entries": index.entries,
        "feeds": feeds,
        "index": {"files": index.files, "bytes": index.bytes},
        "store": {"cores": copied.cores, "blocks": copied.blocks, "bytes": copied.bytes},
        "stateKeys": keys,
        "tookMs": started.elapsed().as_millis() as u64,
    });
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::Corrupt(format!("encoding {MANIFEST}: {e}")))?;
    let path = dir.join(MANIFEST);
    std::fs::write(&path, text).map_err(|e| io_at(&path, e))?;
    for p in [path.as_path(), dir] {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_at(p, e))?;
    }
    tracing::info!(dir = %dir.display(), entries = index.entries, blocks = copied.blocks, "backup taken");
    Ok(manifest)
}

/// Copies every sled tree but the block store's (copied by [`copy_store`]); returns the
/// number of keys. These trees are small, and each record is whole on its own.
fn copy_trees(src: &sled::Db, dst: &sled::Db) -> Result<u64> {
    let mut n = 0;
    for name in src.tree_names() {
        if name.as_ref() == b"hypercore" {
            continue;
        }
        let (from, to) = (src.open_tree(&name)?, dst.open_tree(&name)?);
        for kv in from.iter() {
            let (k, v) = kv?;
            to.insert(k, v)?;
            n += 1;
        }
    }
    Ok(n)
}

#[derive(Debug, Default)]
struct Copied {
    cores: u64,
    blocks: u64,
    bytes: u64,
    /// Each core's length in the copy, by z-base-32 key.
    lengths: std::collections::HashMap<String, u64>,
    /// Each core's blocks held from block 0 without a gap, by z-base-32 key: a head can be
    /// ahead of the blocks fetched so far, and a restore indexes only up to a gap before it
    /// needs a peer.
    contiguous: std::collections::HashMap<String, u64>,
}

fn copy_store(src: &Store, dst: Store, rt: &tokio::runtime::Handle) -> Result<Copied> {
    let mut out = Copied::default();
    for key in src.cores()? {
        if src.has_core(&key)? {
            copy_core(src, &dst, &key, &mut out)?;
            out.cores += 1;
        }
    }
    rt.block_on(dst.flush())?;
    Ok(out)
}

/// One core: its head, then what the head covers, then the head into the copy. A
/// truncation meanwhile (the fork moved) throws the copy away and starts over.
fn copy_core(src: &Store, dst: &Store, key: &Key, out: &mut Copied) -> Result<()> {
    for _ in 0..3 {
        let from = src.core(key)?;
        let record = from.record()?;
        let to = dst.core(key)?;
        let (blocks, bytes, contiguous) = copy_covered(&from, &to, record.head.length)?;
        if from.record()?.head.fork == record.head.fork {
            out.lengths.insert(key.to_z32(), record.head.length);
            out.contiguous.insert(key.to_z32(), contiguous);
            let mut b = to.batch();
            b.record(record);
            to.apply(b)?;
            out.blocks += blocks;
            out.bytes += bytes;
            return Ok(());
        }
        dst.remove_core(key)?;
    }
    Err(Error::Unavailable(format!(
        "feed {key} was truncated by its author three times during the backup; try again"
    )))
}

/// Copies the tree nodes and blocks of the first `length` blocks that are stored (a sparse
/// core has gaps). Returns (blocks, bytes, blocks from 0 before the first gap).
fn copy_covered(from: &CoreStore, to: &CoreStore, length: u64) -> Result<(u64, u64, u64)> {
    let (mut blocks, mut bytes) = (0, 0);
    let mut contiguous = None;
    let mut batch = to.batch();
    let mut staged = 0;
    for seq in 0..length {
        // Leaf 2·seq and the parent right of it (odd indexes): every node of a tree of
        // `length` blocks is below 2·length.
        for index in [2 * seq, 2 * seq + 1] {
            if let Some(n) = from.node(index)? {
                batch.nodes(&[n]);
            }
        }
        if let Some(b) = from.block(seq)? {
            bytes += b.len() as u64;
            blocks += 1;
            batch.block(seq, &b);
        } else if contiguous.is_none() {
            contiguous = Some(seq);
        }
        staged += 1;
        if staged >= BATCH_BLOCKS {
            to.apply(std::mem::take(&mut batch))?;
            staged = 0;
        }
    }
    to.apply(batch)?;
    Ok((blocks, bytes, contiguous.unwrap_or(length)))
}

/// The `backup DIR` subcommand: asks the aggregator at the config's `http` address.
pub async fn request(cfg: &Config, dir: &Path) -> Result<()> {
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    };
    let dir_text = dir
        .to_str()
        .ok_or_else(|| Error::BadRequest(format!("{} is not UTF-8", dir.display())))?;
    let addr = cfg.http_addr()?;
    // A wildcard listen address is reached on loopback.
    let ip = match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!(
        "http://{}/v1/admin/backup",
        SocketAddr::new(ip, addr.port())
    );
    let mut req = reqwest::Client::new()
        .post(&url)
        .json(&json!({ "dir": dir_text }));
    if let Some(t) = &cfg.admin_token {
        req = req.bearer_auth(t);
    }
    println!("asking the aggregator at {url} for a backup into {dir_text} …");
    let resp = req.send().await.map_err(|e| {
        Error::Unavailable(format!(
            "no aggregator answers at {url} ({e}): backup asks the running aggregator, found by \
             `http` in its config (--config FILE or --http ADDR)"
        ))
    })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let why = body["error"]["message"]
            .as_str()
            .unwrap_or("no reason given")
            .to_owned();
        return Err(match status.as_u16() {
            400 => Error::BadRequest(why),
            401 => Error::Unauthorized(why),
            409 => Error::Conflict(why),
            _ => Error::Unavailable(format!("the backup failed ({status}): {why}")),
        });
    }
    println!(
        "backup done: {} entries of {} feed(s), {} blocks, in {} ms",
        body["entries"],
        body["feeds"].as_array().map_or(0, Vec::len),
        body["store"]["blocks"],
        body["tookMs"]
    );
    println!("restore: apiary-aggregator --data-dir {dir_text}   (in place of the data directory)");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_must_be_new_or_empty_and_apart_from_the_data() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let bad = |dir: &Path| prepare_target(&data, dir).unwrap_err();
        assert!(matches!(bad(Path::new("rel/dir")), Error::BadRequest(_)));
        assert!(matches!(
            bad(&t.path().join("a/../b")),
            Error::BadRequest(_)
        ));
        assert!(matches!(bad(&data.join("inside")), Error::Conflict(_)));
        assert!(
            matches!(bad(t.path()), Error::Conflict(_)),
            "holds the data"
        );
        let full = t.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("f"), b"x").unwrap();
        assert!(matches!(bad(&full), Error::Conflict(_)));
        let new = t.path().join("new/deeper");
        assert!(prepare_target(&data, &new).unwrap(), "made");
        assert!(!prepare_target(&data, &new).unwrap(), "empty: used as is");
        // Through a symlink into the data directory: still inside.
        std::os::unix::fs::symlink(&data, t.path().join("link")).unwrap();
        assert!(matches!(bad(&t.path().join("link/x")), Error::Conflict(_)));
        // A file in the way, and a name no filesystem takes: theirs to fix, not a 500.
        std::fs::write(t.path().join("file"), b"x").unwrap();
        assert!(matches!(bad(&t.path().join("file/x")), Error::Conflict(_)));
        assert!(matches!(
            bad(&t.path().join("n".repeat(300))),
            Error::BadRequest(_)
        ));
    }
}
