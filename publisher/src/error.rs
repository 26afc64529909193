//! The publisher's error type, and the one place that maps its kinds to codes, exit codes
//! and HTTP statuses.
//!
//! Every error has a short `code` ([`Error::code`]); the exit code of the CLI and the HTTP
//! status of the local page follow from it, each from one table, so an error relayed by a
//! `serve` (which arrives as its code) fails as it would have here. Errors travel as
//! `{"error": {"code", "message"}}`, on the control socket and from the page alike.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use serde_json::{json, Value};

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

    /// A short name of the kind: what clients branch on (the control socket's and the page's
    /// error replies), and what the exit code and the HTTP status follow from.
    pub fn code(&self) -> &str {
        match self {
            Error::BadInput(_) => "bad_input",
            Error::NotFound(_) => "not_found",
            Error::Busy(_) => "busy",
            Error::Corrupt(_) => "corrupt",
            Error::Io { .. } => "io",
            Error::Config(_) => "config",
            Error::Remote(_) => "remote",
            // What the network did not give in time, or at all: a later try may succeed.
            Error::Core(apiary_core::Error::Timeout { .. }) => "peer_timeout",
            Error::Core(
                apiary_core::Error::NotAvailable { .. } | apiary_core::Error::Closed { .. },
            ) => "unavailable",
            Error::Core(_) => "core",
            Error::Control(_) => "control",
            Error::Relayed { code, .. } => code,
        }
    }

    /// Process exit code: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        exit_code_of(self.code())
    }

    /// The HTTP status of this error on the local page.
    pub fn http_status(&self) -> StatusCode {
        http_status_of(self.code())
    }

    /// `{"error": {"code", "message"}}`.
    pub fn to_json(&self) -> Value {
        error_json(self.code(), &self.to_string())
    }
}

/// `{"error": {"code", "message"}}`: every error reply, of the control socket (also for
/// its own codes, such as `bad_request`) and of the page.
pub(crate) fn error_json(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// The HTTP status of an error code: one table, like the exit codes.
fn http_status_of(code: &str) -> StatusCode {
    match code {
        "bad_input" | "config" | "bad_request" | "too_long" => StatusCode::BAD_REQUEST,
        "not_found" => StatusCode::NOT_FOUND,
        "busy" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "peer_timeout" => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_exit_codes_and_statuses_locally_and_relayed() {
        use apiary_core::Error as Core;
        let cases = [
            (Error::BadInput("x".into()), "bad_input", 2, 400),
            (Error::Config("x".into()), "config", 2, 400),
            (Error::NotFound("x".into()), "not_found", 2, 404),
            (Error::Busy("/d".into()), "busy", 1, 503),
            (Error::Corrupt("x".into()), "corrupt", 1, 500),
            (
                Error::Core(Core::Timeout { what: "x".into() }),
                "peer_timeout",
                1,
                504,
            ),
            (
                Error::Core(Core::NotAvailable { seq: 1 }),
                "unavailable",
                1,
                503,
            ),
            (
                Error::Core(Core::Closed { reason: "x".into() }),
                "unavailable",
                1,
                503,
            ),
            (
                Error::Core(Core::Io(std::io::Error::other("x"))),
                "core",
                1,
                500,
            ),
            (Error::Control("x".into()), "control", 1, 500),
        ];
        for (e, code, exit, status) in cases {
            assert_eq!(
                (e.code(), e.exit_code(), e.http_status().as_u16()),
                (code, exit, status),
                "{e}"
            );
            let relayed = Error::Relayed {
                code: code.into(),
                message: e.to_string(),
            };
            assert_eq!(
                (relayed.exit_code(), relayed.http_status()),
                (e.exit_code(), e.http_status())
            );
            assert_eq!(e.to_json()["error"]["code"], code);
            assert_eq!(e.to_json()["error"]["message"], e.to_string());
        }
    }
}
