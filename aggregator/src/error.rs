//! The aggregator's error type, and the one place that maps error kinds to HTTP statuses.
//!
//! HTTP errors are JSON: `{"error": {"code": "bad_request", "message": "..."}}`, whether a
//! handler, a middleware (rate limit, request timeout) or axum itself (a rejected body, query
//! or path, an unknown route, a wrong method) refuses the request.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

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
    /// A request body that is not `application/json` where JSON is expected.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No such feed or entry, or no such endpoint.
    #[error("{0}")]
    NotFound(String),
    /// The endpoint exists, but not with this method (the `Allow` header lists those it has).
    #[error("this endpoint does not take this method; see the Allow header and /v1/openapi.json")]
    MethodNotAllowed,
    /// The request took longer than `request_timeout_ms`.
    #[error("the request took longer than {0} ms")]
    Timeout(u64),
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
    /// Another process holds the data directory.
    #[error("the data directory {} is in use by another apiary-aggregator", .path.display())]
    Locked {
        /// The data directory.
        path: std::path::PathBuf,
    },
    /// The search index failed (copying it for a backup).
    #[error("index: {0}")]
    Index(String),
    /// The search index failed (tantivy).
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// Our own stored state is not what we wrote.
    #[error("data corruption: {0}")]
    Corrupt(String),
    /// A bug of ours (e.g. a route and its handler disagree).
    #[error("internal: {0}")]
    Internal(String),
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

/// The stable `code` of an error response; clients branch on it, not on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The request cannot be served as asked (query, path, body, cursor, filter).
    BadRequest,
    /// A feed key that is not 52 z-base-32 or 64 hex characters (optionally as hyper://).
    BadKey,
    /// Over the rate limit.
    RateLimited,
    /// Missing or wrong admin token, or not on loopback when no token is configured.
    Unauthorized,
    /// No such feed, entry or endpoint.
    NotFound,
    /// The endpoint does not take this method.
    MethodNotAllowed,
    /// The request took longer than the server's request timeout.
    Timeout,
    /// No peer answered in time what the request needed from the network.
    PeerTimeout,
    /// The request conflicts with the server's state.
    Conflict,
    /// The request body is over the server's limit.
    TooLarge,
    /// The request body is not JSON.
    UnsupportedMediaType,
    /// The server failed; see its log.
    Internal,
    /// The server cannot serve this now (shutting down, a task gone, the block store
    /// closed, no peer has what the request needs).
    Unavailable,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: what kind of error.
    pub code: Code,
    /// For people: what exactly, and often what to do.
    pub message: String,
}

impl Error {
    /// The exit code of a process that ends with this error: 2 for what the user must fix (the
    /// configuration, a request the server refused), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::BadRequest(_) | Error::Locked { .. } => 2,
            _ => 1,
        }
    }

    /// HTTP status and stable code of each kind: the only such mapping.
    pub fn status(&self) -> (StatusCode, Code) {
        match self {
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, Code::BadRequest),
            Error::Core(apiary_core::Error::InvalidKey { .. }) => {
                (StatusCode::BAD_REQUEST, Code::BadKey)
            }
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, Code::TooLarge),
            Error::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::UnsupportedMediaType,
            ),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, Code::NotFound),
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, Code::MethodNotAllowed),
            Error::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, Code::Timeout),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, Code::Unauthorized),
            Error::Conflict(_) => (StatusCode::CONFLICT, Code::Conflict),
            Error::RateLimited => (StatusCode::TOO_MANY_REQUESTS, Code::RateLimited),
            Error::Unavailable(_) | Error::Locked { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable)
            }
            // What the network did not give in time, or at all: a later try may succeed.
            Error::Core(apiary_core::Error::Timeout { .. }) => {
                (StatusCode::GATEWAY_TIMEOUT, Code::PeerTimeout)
            }
            Error::Core(
                apiary_core::Error::NotAvailable { .. } | apiary_core::Error::Closed { .. },
            ) => (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
            Error::Config(_)
            | Error::Internal(_)
            | Error::Index(_)
            | Error::Tantivy(_)
            | Error::Corrupt(_)
            | Error::Core(_)
            | Error::Store(_)
            | Error::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
        }
    }
}

/// A JSON body axum could not take: too large (413), not declared as JSON (415), else 400.
impl From<JsonRejection> for Error {
    fn from(e: JsonRejection) -> Self {
        match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge(e.body_text()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Error::UnsupportedMediaType(e.body_text()),
            _ => Error::BadRequest(e.body_text()),
        }
    }
}

/// A query string that does not fit the endpoint's parameters.
impl From<QueryRejection> for Error {
    fn from(e: QueryRejection) -> Self {
        Error::BadRequest(e.body_text())
    }
}

/// A path whose parameters cannot be decoded (e.g. not UTF-8 once percent-decoded); a route
/// and handler that do not agree on the parameters is our bug.
impl From<PathRejection> for Error {
    fn from(e: PathRejection) -> Self {
        if e.status().is_server_error() {
            Error::Internal(e.body_text())
        } else {
            Error::BadRequest(e.body_text())
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
            },
        });
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn kinds_map_to_statuses_and_codes() {
        use apiary_core::Error as Core;
        let cases = [
            (
                Error::Core(Core::Timeout {
                    what: "block 7".into(),
                }),
                504,
                Code::PeerTimeout,
            ),
            (
                Error::Core(Core::NotAvailable { seq: 7 }),
                503,
                Code::Unavailable,
            ),
            (
                Error::Core(Core::Closed {
                    reason: "the store is closed".into(),
                }),
                503,
                Code::Unavailable,
            ),
            (
                Error::Core(Core::InvalidKey {
                    reason: "short".into(),
                }),
                400,
                Code::BadKey,
            ),
            (
                Error::Core(Core::DataCorruption { reason: "x".into() }),
                500,
                Code::Internal,
            ),
            (
                Error::Locked {
                    path: "/data".into(),
                },
                503,
                Code::Unavailable,
            ),
            (Error::Timeout(10), 408, Code::Timeout),
            (Error::Unavailable("x".into()), 503, Code::Unavailable),
            (Error::Io(std::io::Error::other("x")), 500, Code::Internal),
        ];
        for (e, status, code) in cases {
            assert_eq!(
                e.status(),
                (StatusCode::from_u16(status).unwrap(), code),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn a_peer_timeout_is_a_json_504() {
        let e = Error::Core(apiary_core::Error::Timeout {
            what: "block 7".into(),
        });
        let res = e.into_response();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "peer_timeout");
        assert_eq!(v["error"]["message"], "timed out: block 7");
    }

    #[test]
    fn the_source_of_an_index_error_is_kept() {
        let e = Error::from(tantivy::TantivyError::InvalidArgument("x".into()));
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().starts_with("index: "), "{e}");
    }
}
