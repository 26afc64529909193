//! The publisher's error type; `main` maps it to a message and an exit code.

use std::path::{Path, PathBuf};

/// What can go wrong in the publisher.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input from the user that cannot be used (name, key, JSON, file line).
    #[error("{0}")]
    BadInput(String),
    /// A bee or entry that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Another process (usually `apiary-publisher serve`) holds the data directory.
    #[error(
        "the data directory {} is in use by another apiary-publisher (is `serve` running?); \
         stop it, or add entries through its local page",
        .0.display()
    )]
    Busy(PathBuf),
    /// Our own files hold something we did not write.
    #[error("data corruption: {0}")]
    Corrupt(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is wrong.
    #[error("config: {0}")]
    Config(String),
    /// Talking to an aggregator failed.
    #[error("aggregator: {0}")]
    Remote(String),
    /// The protocol layer failed.
    #[error(transparent)]
    Core(#[from] apiary_core::Error),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Process exit code: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BadInput(_) | Error::NotFound(_) | Error::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
