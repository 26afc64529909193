//! Proof bundles: what lets anyone check an aggregator's answer against the author's key
//! alone. A bundle proves that the author signed a log of `tree.length` blocks, that these
//! blocks are in it, and that a hyperbee `get(key)` at bee version `version` reads exactly
//! these blocks and ends at `result` (a value, or the key's absence).
//!
//! # Format (`apiary-bee-proof/1`, JSON)
//!
//! ```text
//! {
//!   "format":  "apiary-bee-proof/1",
//!   "feed":    hex of the 32-byte core key,
//!   "tree": {                                the signed head the proof is against
//!     "length": L, "fork": F,
//!     "roots": [{"index", "size", "hash"}],  flat-tree roots of L blocks, left to right
//!     "signature": hex | null,               over (tree hash, L, F), as hypercore 11 signs
//!     "manifest":  hex | null                the encoded manifest when the key is its hash
//!   },
//!   "version": V,                            the bee version (1 ≤ V ≤ L) the lookup runs at
//!   "key":     the bee key (full, with any sub prefix), as a JSON string (UTF-8)
//!   "blocks": [{"seq", "data": base64}],     every block the lookup reads, by seq, once
//!   "nodes":  [{"index", "size", "hash"}],   tree nodes the blocks' leaves need to reach
//!                                            the roots, each once, by index; none that
//!                                            can be computed from the blocks
//!   "result": {"found": true, "seq": S, "value": base64 | null} | {"found": false}
//! }
//! ```
//!
//! Hashes, signatures, keys and manifests are lowercase hex; block bytes and values are
//! standard base64 with padding. Numbers are below 2^53.
//!
//! # Checking one ([`verify`])
//! 1. The manifest (if any) must hash to `feed`, or be the compat form; the signature must
//!    hold over the tree hash of `roots`, `length` and `fork`; the roots must be the full
//!    roots of `length`.
//! 2. Each block's leaf is hashed up to its root: a node above a leaf of the bundle is
//!    computed from its children, any other is taken from `nodes`; every root reached must
//!    equal the signed one. A node or block the checks do not use is refused.
//! 3. The lookup runs over the blocks alone, exactly as hyperbee's `get` at `version`: the
//!    root node is level 0 of block `version − 1`; at each node, a block whose own key is
//!    the key ends the lookup (absent when it is a deletion); otherwise binary search over
//!    the keys of the node (each key is the key of the block it points at), and descend
//!    into the child the search ends on; no child means absent. Every block it reads must be
//!    in the bundle, and `result` must be what it ends on.
//!
//! When the blocks are not at hand (an index-only aggregator whose feed has no peer online),
//! [`build_inclusion`] proves less: that a block of this hash is in the signed log (see
//! `inclusion.rs` for that format).
//!
//! [`build`] makes a bundle from a replica; both run in `apiary-aggregator verify` and under
//! `/v1/proofs`, and `tests/js/verify-bundle.js` checks the same format with the JS stack's own
//! hashing and hyperbee decoding.

mod build;
mod format;
mod inclusion;
mod verify;

pub use build::build;
pub use format::{Bundle, BundleResult, BundleTree, JsonBlock, JsonNode, FORMAT};
pub use inclusion::{
    build_inclusion, verify_inclusion, Inclusion, ProvenInclusion, INCLUSION_FORMAT,
};
pub use verify::{verify, Proven};

#[cfg(test)]
mod tests;
