//! The data directory's lock: one process at a time opens a data directory (a `serve`, or a
//! command run in the CLI's own process).
//!
//! An advisory lock (`flock` on unix) on `<data_dir>/lock`, taken before the store is opened
//! and held while [`crate::Bees`] lives; the system drops it when the process ends, however
//! it ends. sled locks its database too, but tells a failure to only in text; this lock
//! tells "in use" ([`Error::Busy`], which sends a CLI command to `serve`) apart from every
//! other failure by the error's kind.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::{Error, Result};

/// The lock file in a data directory.
pub const FILE: &str = "lock";

/// A held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Takes the lock of `dir` (which exists), or [`Error::Busy`] when another process holds it.
pub fn lock(dir: &Path) -> Result<DirLock> {
    let path = dir.join(FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match fs4::FileExt::try_lock_exclusive(&file) {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(e) if held_elsewhere(&e) => Err(Error::Busy(dir.to_path_buf())),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Whether a failed non-blocking lock failed because another holds it (EWOULDBLOCK, which
/// is EAGAIN on Linux; on Windows, ERROR_LOCK_VIOLATION).
fn held_elsewhere(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || e.raw_os_error().is_some()
            && e.raw_os_error() == fs4::lock_contended_error().raw_os_error()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        // Another open file is another holder, in this process too.
        match lock(dir.path()) {
            Err(Error::Busy(d)) => assert_eq!(d, dir.path()),
            other => panic!("{other:?}"),
        }
        drop(held);
        lock(dir.path()).unwrap();
        assert!(held_elsewhere(&fs4::lock_contended_error()));
        assert!(!held_elsewhere(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
        // A directory that is not there: an error of the file, not "in use".
        match lock(&dir.path().join("missing")) {
            Err(e @ Error::Io { .. }) => assert_eq!(e.code(), "io"),
            other => panic!("{other:?}"),
        }
    }
}
