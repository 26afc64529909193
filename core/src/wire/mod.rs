//! The wire: encrypted framed transport, protomux channels and hypercore messages.
//!
//! - [`noise`] and [`secretstream`]: the cryptography of `@hyperswarm/secret-stream`.
//! - [`stream`]: TCP (or any byte stream) → an authenticated [`stream::FramedSession`].
//! - [`mux`]: protomux frames and batches.
//! - [`messages`]: the hypercore channel messages.

pub mod messages;
pub mod mux;
pub mod noise;
pub mod secretstream;
pub mod stream;

pub use stream::{secret_stream, FramedSession, Incoming, Origin, SessionInfo};
