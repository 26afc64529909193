//! The publisher's error type; [`crate::run`] maps it to a message and an exit code.

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
    /// Another process holds the data directory and no `serve` answers on its control socket
    /// (a `serve` that answers runs the command instead).
    #[error(
        "the data directory {} is in use by another apiary-publisher, and no `serve` answers \
         on its control socket {}; wait for the other command to finish, or stop it",
        .0.display(),
        crate::control::socket_path(.0).display()
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
    /// The control socket between the CLI and a running `serve` failed (not the command).
    #[error("control socket: {0}")]
    Control(String),
    /// The error a running `serve` reported for a command it ran for us: printed as it is,
    /// with the exit code its `code` maps to, so the CLI fails as it would have locally.
    #[error("{message}")]
    Relayed {
        /// One of the codes of [`Error::code`].
        code: String,
        /// The message, as `serve` formatted it.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A short name of the kind, for the control socket's error replies.
    pub fn code(&self) -> &str {
        match self {
            Error::BadInput(_) => "bad_input",
            Error::NotFound(_) => "not_found",
            Error::Busy(_) => "busy",
            Error::Corrupt(_) => "corrupt",
            Error::Io { .. } => "io",
            Error::Config(_) => "config",
            Error::Remote(_) => "remote",
            Error::Core(_) => "core",
            Error::Control(_) => "control",
            Error::Relayed { code, .. } => code,
        }
    }

    /// Process exit code: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        exit_code_of(self.code())
    }
}

/// The exit code of an error code: 2 for the user's mistakes (including a malformed control
/// request), 1 for everything else. One table, so relayed errors exit as local ones do.
fn exit_code_of(code: &str) -> u8 {
    match code {
        "bad_input" | "not_found" | "config" | "bad_request" | "too_long" => 2,
        _ => 1,
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
