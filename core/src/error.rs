//! The one error type of apiary-core.

use std::io;

/// Everything that can go wrong in apiary-core.
///
/// Input from the network, the disk or a user never panics: it ends up as one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key, id or URL that is not a valid 32-byte Hypercore key.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What was wrong with it.
        reason: String,
    },
    /// Bytes that do not decode as the message they claim to be.
    #[error("malformed {what}: {reason}")]
    Decode {
        /// Which codec refused the bytes (e.g. "request message").
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The remote peer broke the protocol (a bad capability, an unexpected message, ...).
    #[error("protocol violation: {reason}")]
    Protocol {
        /// What the peer did.
        reason: String,
    },
    /// A proof, hash or signature that does not verify. Nothing was stored.
    #[error("verification failed: {reason}")]
    Verification {
        /// What did not match.
        reason: String,
    },
    /// The Noise handshake or the encrypted stream failed.
    #[error("encryption: {reason}")]
    Crypto {
        /// What failed.
        reason: String,
    },
    /// Data read back from our own store is not what we wrote.
    #[error("data corruption in the store: {reason}")]
    DataCorruption {
        /// What was found.
        reason: String,
    },
    /// The block is not available from any connected peer.
    #[error("block {seq} is not available")]
    NotAvailable {
        /// The block index.
        seq: u64,
    },
    /// A request got no answer in time from any peer.
    #[error("timed out: {what}")]
    Timeout {
        /// What we were waiting for.
        what: String,
    },
    /// The connection or session is closed.
    #[error("closed: {reason}")]
    Closed {
        /// Why, when known.
        reason: String,
    },
    /// A caller asked for something that cannot be done (e.g. a version beyond the length).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// Why it was refused.
        reason: String,
    },
    /// The core was truncated by its author while a read was in progress.
    #[error("the core was truncated to {length} (fork {fork})")]
    Truncated {
        /// The new fork id.
        fork: u64,
        /// The length the core was cut back to.
        length: u64,
    },
    /// The sled store failed.
    #[error("store: {0}")]
    Store(#[from] sled::Error),
    /// Socket or file I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    pub(crate) fn decode(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Decode {
            what,
            reason: reason.into(),
        }
    }
    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        Error::Protocol {
            reason: reason.into(),
        }
    }
    pub(crate) fn verification(reason: impl Into<String>) -> Self {
        Error::Verification {
            reason: reason.into(),
        }
    }
    pub(crate) fn corruption(reason: impl Into<String>) -> Self {
        Error::DataCorruption {
            reason: reason.into(),
        }
    }
    pub(crate) fn crypto(reason: impl Into<String>) -> Self {
        Error::Crypto {
            reason: reason.into(),
        }
    }
    pub(crate) fn closed(reason: impl Into<String>) -> Self {
        Error::Closed {
            reason: reason.into(),
        }
    }
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            reason: reason.into(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
