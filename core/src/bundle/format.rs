//! The JSON form of a bundle (see the format in [`super`]) and its conversions: hex for
//! hashes, keys and signatures, base64 for block bytes and values. Decoding checks sizes and
//! encodings and nothing else; what the bytes prove is [`super::verify`]'s job.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::crypto::Hash;
use crate::error::{Error, Result};
use crate::merkle::Node;

/// The `format` every bundle of this version carries.
pub const FORMAT: &str = "apiary-bee-proof/1";

/// A proof bundle, as served and as read by the verifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// [`FORMAT`].
    pub format: String,
    /// The core key, hex.
    pub feed: String,
    /// The signed head the proof is against.
    pub tree: BundleTree,
    /// The bee version the lookup runs at.
    pub version: u64,
    /// The bee key looked up (full, with any sub prefix).
    pub key: String,
    /// Every block the lookup reads, by seq.
    pub blocks: Vec<JsonBlock>,
    /// The tree nodes the blocks need to reach the signed roots, by index.
    pub nodes: Vec<JsonNode>,
    /// What the lookup ends on.
    pub result: BundleResult,
}

/// The signed head of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleTree {
    /// Blocks in the signed log.
    pub length: u64,
    /// Its fork.
    pub fork: u64,
    /// The full roots of `length`, left to right.
    pub roots: Vec<JsonNode>,
    /// The signature over (tree hash, length, fork), hex.
    pub signature: Option<String>,
    /// The encoded manifest, hex, when the key is a manifest hash.
    pub manifest: Option<String>,
}

/// A block: its seq and bytes (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonBlock {
    /// Block number.
    pub seq: u64,
    /// The bytes, base64.
    pub data: String,
}

/// A Merkle tree node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonNode {
    /// Flat-tree index.
    pub index: u64,
    /// Bytes under it.
    pub size: u64,
    /// Its hash, hex.
    pub hash: String,
}

/// What the lookup ends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleResult {
    /// Whether the key is in the bee at `version`.
    pub found: bool,
    /// The block that wrote it (when found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Its value, base64 (when found; `null` for a put of no value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

fn bad(what: &str, reason: impl std::fmt::Display) -> Error {
    Error::Decode {
        what: "proof bundle",
        reason: format!("{what}: {reason}"),
    }
}

pub(super) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(super) fn from_b64(what: &str, s: &str) -> Result<Vec<u8>> {
    STANDARD.decode(s).map_err(|e| bad(what, e))
}

pub(super) fn from_hex<const N: usize>(what: &str, s: &str) -> Result<[u8; N]> {
    let v = hex::decode(s).map_err(|e| bad(what, e))?;
    v.try_into()
        .map_err(|v: Vec<u8>| bad(what, format!("{} bytes, not {N}", v.len())))
}

impl JsonNode {
    pub(super) fn of(n: &Node) -> Self {
        JsonNode {
            index: n.index,
            size: n.size,
            hash: hex::encode(n.hash),
        }
    }

    pub(super) fn node(&self) -> Result<Node> {
        let hash: Hash = from_hex("node hash", &self.hash)?;
        Ok(Node {
            index: self.index,
            size: self.size,
            hash,
        })
    }
}
