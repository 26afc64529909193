//! Hyperbee block format (JS `hyperbee/lib/messages.js`, protobuf).
//!
//! ```text
//! Header    1 protocol: string ("hyperbee") · 2 metadata: Metadata (optional)
//! Metadata  1 contentFeed: bytes · 2 userData: bytes
//! Node      1 index: bytes (an encoded YoloIndex) · 2 key: bytes · 3 value: bytes (optional)
//! YoloIndex 1 levels: repeated Level
//! Level     1 keys: packed uint64 (entry seqs) · 2 children: packed uint64 (seq, offset pairs)
//! ```
//! Block 0 is the header; block `s ≥ 1` is one put or del. The tree node `(seq, offset)` is
//! `levels[offset]` of block `seq`; the root of version `v` is level 0 of block `v − 1`.
//! A block is a deletion when it has no value and its own seq is in none of its levels.

use prost::Message as _;

use crate::error::{Error, Result};

/// The header (block 0).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    /// Always "hyperbee".
    #[prost(string, required, tag = "1")]
    pub protocol: String,
    /// Optional metadata.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<Metadata>,
}

/// Header metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    /// Key of a content core (hyperdrive).
    #[prost(bytes = "vec", optional, tag = "1")]
    pub content_feed: Option<Vec<u8>>,
    /// Free-form.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub user_data: Option<Vec<u8>>,
}

/// One entry block.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeMessage {
    /// Encoded [`YoloIndex`].
    #[prost(bytes = "vec", required, tag = "1")]
    pub index: Vec<u8>,
    /// The entry's key (full, with any sub prefix).
    #[prost(bytes = "vec", required, tag = "2")]
    pub key: Vec<u8>,
    /// The value (absent for deletions).
    #[prost(bytes = "vec", optional, tag = "3")]
    pub value: Option<Vec<u8>>,
}

/// The tree nodes a block carries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct YoloIndex {
    /// Tree nodes, by offset.
    #[prost(message, repeated, tag = "1")]
    pub levels: Vec<LevelMessage>,
}

/// One tree node on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LevelMessage {
    /// Entry seqs, in key order.
    #[prost(uint64, repeated, packed = "true", tag = "1")]
    pub keys: Vec<u64>,
    /// Child pointers, flattened `(seq, offset)` pairs.
    #[prost(uint64, repeated, packed = "true", tag = "2")]
    pub children: Vec<u64>,
}

/// A pointer to a tree node: level `offset` of block `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeRef {
    /// Block holding the node.
    pub seq: u64,
    /// Level within the block.
    pub offset: u64,
}

/// A decoded tree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    /// Entry seqs, in key order.
    pub keys: Vec<u64>,
    /// Children (none for a leaf, `keys.len() + 1` otherwise).
    pub children: Vec<NodeRef>,
}

/// A decoded entry block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeeBlock {
    /// Its seq.
    pub seq: u64,
    /// Full key.
    pub key: Vec<u8>,
    /// Value, if any.
    pub value: Option<Vec<u8>>,
    /// Tree nodes by offset.
    pub levels: Vec<TreeNode>,
}

fn bad(seq: u64, reason: impl std::fmt::Display) -> Error {
    Error::Decode {
        what: "bee node",
        reason: format!("block {seq}: {reason}"),
    }
}

impl BeeBlock {
    /// Decodes block `seq` (≥ 1).
    pub fn decode(seq: u64, bytes: &[u8]) -> Result<Self> {
        let node = NodeMessage::decode(bytes).map_err(|e| bad(seq, e))?;
        let index = YoloIndex::decode(node.index.as_slice()).map_err(|e| bad(seq, e))?;
        let count = index.levels.len() as u64;
        let levels = index
            .levels
            .into_iter()
            .enumerate()
            .map(|(offset, l)| {
                if l.children.len() % 2 != 0 {
                    return Err(bad(seq, "odd number of child pointers"));
                }
                let children: Vec<NodeRef> = l
                    .children
                    .chunks_exact(2)
                    .map(|c| NodeRef {
                        seq: c.first().copied().unwrap_or(0),
                        offset: c.get(1).copied().unwrap_or(0),
                    })
                    .collect();
                if !children.is_empty() && children.len() != l.keys.len() + 1 {
                    return Err(bad(seq, "a tree node needs one more child than keys"));
                }
                // Block 0 is the header. A later block is fine here: in a JS batch with
                // deletes, a node left behind in an earlier block of the batch points at the
                // later ones (two deletes after 54 puts make one). Walks refuse pointers past
                // their version (`Snapshot::node`, `key_of`).
                if children.iter().any(|c| c.seq == 0) || l.keys.contains(&0) {
                    return Err(bad(seq, "a tree node points at the header block"));
                }
                // A node cannot be its own child, nor point at a level the block lacks. A
                // child earlier in the same block is allowed: JS hyperbee writes batches with
                // deletes that way (a 20k-entry JS bee with a put/del batch has one); longer
                // cycles are stopped by the walks' node budget (`iter.rs`).
                if children
                    .iter()
                    .any(|c| c.seq == seq && (c.offset == offset as u64 || c.offset >= count))
                {
                    return Err(bad(
                        seq,
                        "a tree node points at itself or at a missing level",
                    ));
                }
                Ok(TreeNode {
                    keys: l.keys,
                    children,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BeeBlock {
            seq,
            key: node.key,
            value: node.value,
            levels,
        })
    }

    /// True for a `del` block.
    pub fn is_deletion(&self) -> bool {
        self.value.is_none() && !self.levels.iter().any(|l| l.keys.contains(&self.seq))
    }

    /// Tree node at `offset`.
    pub fn level(&self, offset: u64) -> Result<&TreeNode> {
        usize::try_from(offset)
            .ok()
            .and_then(|o| self.levels.get(o))
            .ok_or_else(|| bad(self.seq, format!("no tree node at offset {offset}")))
    }

    /// Encodes (the writer's side).
    pub fn encode(key: &[u8], value: Option<&[u8]>, levels: &[TreeNode]) -> Vec<u8> {
        let index = YoloIndex {
            levels: levels
                .iter()
                .map(|l| LevelMessage {
                    keys: l.keys.clone(),
                    children: l.children.iter().flat_map(|c| [c.seq, c.offset]).collect(),
                })
                .collect(),
        };
        NodeMessage {
            index: index.encode_to_vec(),
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
        .encode_to_vec()
    }
}

/// Decodes and checks the header block.
pub fn decode_header(bytes: &[u8]) -> Result<Header> {
    let h = Header::decode(bytes).map_err(|e| bad(0, e))?;
    if h.protocol != "hyperbee" {
        return Err(bad(
            0,
            format!("not a hyperbee (protocol {:?})", h.protocol),
        ));
    }
    Ok(h)
}

/// The header block a new bee starts with.
pub fn encode_header() -> Vec<u8> {
    Header {
        protocol: "hyperbee".into(),
        metadata: None,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_bytes_match_js() {
        assert_eq!(encode_header(), b"\x0a\x08hyperbee");
        assert!(decode_header(b"\x0a\x08hyperbee").is_ok());
        assert!(decode_header(b"\x0a\x03foo").is_err());
    }

    #[test]
    fn block_roundtrip_and_deletion() {
        let levels = vec![TreeNode {
            keys: vec![1, 3],
            children: vec![],
        }];
        let b = BeeBlock::decode(3, &BeeBlock::encode(b"k", Some(b"v"), &levels)).unwrap();
        assert_eq!(b.key, b"k");
        assert!(!b.is_deletion());
        let d = BeeBlock::decode(
            4,
            &BeeBlock::encode(
                b"k",
                None,
                &[TreeNode {
                    keys: vec![1],
                    children: vec![],
                }],
            ),
        )
        .unwrap();
        assert!(d.is_deletion());
        assert!(
            BeeBlock::decode(2, &BeeBlock::encode(b"k", None, &levels)).is_ok(),
            "a pointer at a later block is decoded (walks check it against their version)"
        );
        let header = vec![TreeNode {
            keys: vec![0, 1],
            children: vec![],
        }];
        assert!(BeeBlock::decode(3, &BeeBlock::encode(b"k", None, &header)).is_err());
    }

    /// Found by tests/soak: JS hyperbee wrote this block 55 for `del k00000` in a batch
    /// `[del k00000, del k00044]` after `k00000`…`k00053` were put in one batch (blocks
    /// 1–54). Its second level points at (56, 1), the block after it; refusing that kept the
    /// aggregator from ever reading the block, and its feed stopped there for good.
    #[test]
    fn a_js_batch_node_pointing_at_a_later_block_of_the_batch_decodes() {
        let bytes = hex::decode(
            "0a2c0a0a0a0802030405060708090a1e0a080a0f14191e232c3212123700130018001d00220027\
             0038013602360312066b3030303030",
        )
        .unwrap();
        let b = BeeBlock::decode(55, &bytes).unwrap();
        assert_eq!(b.key, b"k00000");
        assert!(b.is_deletion());
        assert!(b.levels[1]
            .children
            .contains(&NodeRef { seq: 56, offset: 1 }));
    }

    /// Found by the `bee_walk` fuzz target (fuzz/corpus/bee_walk/regression-self-child): a
    /// root whose last child was itself made every range read over the bee loop forever.
    #[test]
    fn a_child_pointer_back_into_its_own_block_is_refused() {
        let node = |keys: Vec<u64>, children: Vec<(u64, u64)>| TreeNode {
            keys,
            children: children
                .into_iter()
                .map(|(seq, offset)| NodeRef { seq, offset })
                .collect(),
        };
        let leaf = node(vec![1], vec![]);
        // The crashing input's block 38: the root's last child is (38, 0), the root itself.
        let root = |last: (u64, u64)| node(vec![2, 3], vec![(33, 1), (38, 1), last]);
        let good = BeeBlock::encode(
            b"k",
            Some(b"v"),
            &[root((38, 2)), leaf.clone(), leaf.clone()],
        );
        assert!(BeeBlock::decode(38, &good).is_ok());
        for last in [(38, 0), (38, 3)] {
            let b = BeeBlock::encode(b"k", Some(b"v"), &[root(last), leaf.clone(), leaf.clone()]);
            let e = BeeBlock::decode(38, &b).expect_err("a cycle or a missing level");
            assert!(e.to_string().contains("points at itself"), "{e}");
        }
        // A node pointing at an earlier level of its block is how JS writes some batches:
        // accepted here (a cycle that way is stopped by the walks' node budget).
        let back = node(vec![1], vec![(1, 0), (38, 0)]);
        let b = BeeBlock::encode(b"k", None, &[root((38, 2)), leaf, back]);
        assert!(BeeBlock::decode(38, &b).is_ok());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), seq in 1u64..100) {
            let _ = BeeBlock::decode(seq, &bytes);
            let _ = decode_header(&bytes);
        }
    }
}
