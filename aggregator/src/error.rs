//! The aggregator's error type, and the one place that maps error kinds to HTTP statuses.
//!
//! HTTP errors are JSON: `{"error": {"code": "bad_request", "message": "..."}}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request that cannot be served as asked (bad key, cursor, query, filter, body).
    #[error("{0}")]
    BadRequest(String),
    /// A request body over `max_body_bytes`.
    #[error("{0}")]
    TooLarge(String),
    /// No such feed or entry.
    #[error("{0}")]
    NotFound(String),
    /// Missing or wrong admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// The request conflicts with the state: a backup into a non-empty directory, or while
    /// another runs.
    #[error("{0}")]
    Conflict(String),
    /// Over the rate limit.
    #[error("too many requests; slow down")]
    RateLimited,
    /// The configuration is wrong.
    #[error("config: {0}")]
    Config(String),
    /// The search index failed.
    #[error("index: {0}")]
    Index(String),
    /// Our own stored state is not what we wrote.
    #[error("data corruption: {0}")]
    Corrupt(String),
    /// The server is shutting down or a task is gone.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The protocol layer.
    #[error(transparent)]
    Core(#[from] apiary_core::Error),
    /// sled.
    #[error("state store: {0}")]
    Store(#[from] sled::Error),
    /// I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        Error::Index(e.to_string())
    }
}

impl Error {
    /// HTTP status and stable code of each kind: the only such mapping.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::Core(apiary_core::Error::InvalidKey { .. }) => {
                (StatusCode::BAD_REQUEST, "bad_key")
            }
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Config(_)
            | Error::Index(_)
            | Error::Corrupt(_)
            | Error::Core(_)
            | Error::Store(_)
            | Error::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        let body = Json(json!({"error": {"code": code, "message": self.to_string()}}));
        if matches!(self, Error::TooLarge(_)) {
            // The rest of the body was not read, so this connection cannot carry another
            // request: say so, or a client reusing it sees it cut mid-request.
            return (status, [(header::CONNECTION, "close")], body).into_response();
        }
        (status, body).into_response()
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
