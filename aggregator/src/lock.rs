//! The data directory's lock: one aggregator at a time uses a data directory.
//!
//! An advisory lock (`flock` on unix) on `<data_dir>/lock`, taken before anything else in
//! the directory is opened and held while the process runs; the system drops it when the
//! process ends, however it ends. sled locks its database too, but tells a failure to only
//! in text; this lock tells "in use" apart from every other failure by the error's kind.

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

/// Takes the lock of `dir` (made if missing), or [`Error::Locked`] when another process
/// holds it.
pub fn lock(dir: &Path) -> Result<DirLock> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(FILE))?;
    match fs4::FileExt::try_lock_exclusive(&file) {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(e) if held_elsewhere(&e) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(Error::Io(e)),
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
        let data = dir.path().join("data");
        let held = lock(&data).unwrap();
        // Another open file is another holder, in this process too.
        match lock(&data) {
            Err(e @ Error::Locked { .. }) => {
                assert_eq!(e.exit_code(), 2);
                assert!(e.to_string().contains("in use"), "{e}");
                assert!(e.to_string().contains(&data.display().to_string()), "{e}");
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        lock(&data).unwrap();
    }

    #[test]
    fn other_failures_keep_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        // A data directory that is a file: not "in use".
        match lock(&file) {
            Err(Error::Io(e)) => assert_ne!(e.kind(), io::ErrorKind::WouldBlock),
            other => panic!("{other:?}"),
        }
        assert!(held_elsewhere(&fs4::lock_contended_error()));
        assert!(!held_elsewhere(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
    }
}
