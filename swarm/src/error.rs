//! The one error type of this crate.

use std::path::Path;

/// What can go wrong with the DHT bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The DHT cannot run here (no Node.js ≥ 20 or npm, or the install failed). The process
    /// goes on without it: direct peers and dial-in still work.
    #[error("DHT unavailable: {reason}")]
    Unavailable {
        /// Why, in words a user can act on.
        reason: String,
    },
    /// A file of the bridge could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The bridge broke the pipe protocol (it is restarted).
    #[error("bridge protocol: {0}")]
    Protocol(String),
    /// The bridge is gone (shut down).
    #[error("the DHT bridge is shut down")]
    Closed,
}

impl Error {
    pub(crate) fn unavailable(reason: impl Into<String>) -> Self {
        Error::Unavailable {
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
