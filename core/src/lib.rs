//! apiary-core: the Hypercore v11 + Hyperbee protocol, implemented from the wire up.
//!
//! - [`id`]: core keys (z-base-32, hex, `hyper://`) and discovery keys.
//! - [`crypto`]: BLAKE2b hashes, namespaces, Ed25519.
//! - [`encoding`]: compact-encoding, the byte format of the wire messages.
//! - [`manifest`]: manifests and signature verification (manifest v1 and compat cores).
//! - [`merkle`]: flat-tree math, proof generation and verification.
//! - [`wire`]: Noise, secret-stream, protomux and the hypercore messages; a
//!   [`wire::FramedSession`] is what replication runs on.
//! - [`tid`]: time-sortable ids and the microsecond clock.
//! - [`transport`]: where sessions come from (TCP: dial, accept, listen).
//! - [`replicate`]: cores, connections and the replicator; [`bee`]: Hyperbee on a core.
//! - [`bundle`]: proof bundles, a `get` anyone can check against the author's key.

pub mod bee;
pub mod bundle;
pub mod crypto;
pub mod encoding;
pub mod error;
pub mod id;
pub mod manifest;
pub mod merkle;
pub mod replicate;
pub mod store;
pub mod tid;
pub mod transport;
pub mod wire;

pub use error::{Error, Result};
pub use id::{DiscoveryKey, Key};
