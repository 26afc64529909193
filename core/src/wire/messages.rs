//! The hypercore replication messages (JS `hypercore/lib/messages.js` `wire.*`), carried on a
//! protomux channel `hypercore/alpha` whose id is the core's discovery key.
//!
//! Channel handshake: `uint flags(bit0 seeks) · fixed32 capability`. Message types:
//! ```text
//! 0 sync     uint flags(canUpgrade, uploading, downloading, hasManifest, allowPush) · uint fork
//!            · uint length · uint remoteLength
//! 1 request  uint flags(block, hash, seek, upgrade, manifest, priority) · uint id · uint fork
//!            · [uint index · uint nodes] · [uint index · uint nodes] · [uint bytes · uint padding]
//!            · [uint start · uint length] · [uint priority]
//! 2 cancel   uint request
//! 3 data     uint flags(block, hash, seek, upgrade, manifest) · uint request · uint fork
//!            · [uint index · buffer value · nodes] · [uint index · nodes] · [uint bytes · nodes]
//!            · [uint start · uint length · nodes · nodes additional · optionalBuffer signature]
//!            · [manifest]
//! 4 noData   uint request · [uint flags · [uint reason]]
//! 5 want / 6 unwant   uint start · uint length · [uint flags(any)]
//! 7 bitfield uint start · uint32array
//! 8 range    uint flags(drop, length-is-1) · uint start · [uint length]
//! 9 extension string name · raw
//! nodes = array(uint index · uint size · fixed32 hash)
//! ```

use crate::encoding::{Reader, Writer};
use crate::error::Result;
use crate::manifest::Manifest;
use crate::merkle::{BlockProof, HashProof, Node, Proof, SeekProof, UpgradeProof};

/// Message type ids on the hypercore channel.
pub mod ty {
    /// sync
    pub const SYNC: u64 = 0;
    /// request
    pub const REQUEST: u64 = 1;
    /// cancel
    pub const CANCEL: u64 = 2;
    /// data
    pub const DATA: u64 = 3;
    /// noData
    pub const NO_DATA: u64 = 4;
    /// want
    pub const WANT: u64 = 5;
    /// unwant
    pub const UNWANT: u64 = 6;
    /// bitfield
    pub const BITFIELD: u64 = 7;
    /// range
    pub const RANGE: u64 = 8;
    /// extension
    pub const EXTENSION: u64 = 9;
}

/// `noData` reason: the block or proof is not available.
pub const NOT_AVAILABLE: u64 = 1;
/// `noData` reason: the request was invalid.
pub const INVALID_REQUEST: u64 = 2;

/// The channel handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelHandshake {
    /// Whether byte seeks are supported.
    pub seeks: bool,
    /// Proof that the sender knows the core key.
    pub capability: [u8; 32],
}

impl ChannelHandshake {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(33);
        w.uint(u64::from(self.seeks)).raw(&self.capability);
        w.finish()
    }
    /// Decodes.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b, "channel handshake");
        let flags = r.uint()?;
        Ok(ChannelHandshake {
            seeks: flags & 1 != 0,
            capability: r.fixed32()?,
        })
    }
}

/// `sync`: our length and role flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sync {
    /// We can produce an upgrade proof from the peer's length.
    pub can_upgrade: bool,
    /// We serve.
    pub uploading: bool,
    /// We want data (JS closes idle channels where neither side downloads).
    pub downloading: bool,
    /// We hold a (non-compat) manifest.
    pub has_manifest: bool,
    /// We accept pushed data.
    pub allow_push: bool,
    /// Our fork.
    pub fork: u64,
    /// Our length.
    pub length: u64,
    /// The length we last heard from the peer (an acknowledgement).
    pub remote_length: u64,
}

/// `request`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Request id (1-based; reused).
    pub id: u64,
    /// Fork the requester believes in.
    pub fork: u64,
    /// `(block index, nodes)`.
    pub block: Option<(u64, u64)>,
    /// `(tree index, nodes)`.
    pub hash: Option<(u64, u64)>,
    /// `(bytes, padding)`.
    pub seek: Option<(u64, u64)>,
    /// `(start, length)`.
    pub upgrade: Option<(u64, u64)>,
    /// Also send the manifest.
    pub manifest: bool,
    /// Priority (0 = none).
    pub priority: u64,
}

/// `data`: a proof answering request `request`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Data {
    /// The request id answered (0 = pushed).
    pub request: u64,
    /// The proof.
    pub proof: Proof,
    /// The manifest, if asked for.
    pub manifest: Option<Manifest>,
}

/// A decoded hypercore channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// type 0
    Sync(Sync),
    /// type 1
    Request(Request),
    /// type 2
    Cancel {
        /// id
        request: u64,
    },
    /// type 3
    Data(Box<Data>),
    /// type 4
    NoData {
        /// id
        request: u64,
        /// reason (0 = unspecified)
        reason: u64,
    },
    /// type 5
    Want {
        /// first block
        start: u64,
        /// count
        length: u64,
        /// any
        any: bool,
    },
    /// type 6
    Unwant {
        /// first block
        start: u64,
        /// count
        length: u64,
        /// any
        any: bool,
    },
    /// type 7
    Bitfield {
        /// first block (multiple of 32)
        start: u64,
        /// presence words, LSB first
        bitfield: Vec<u32>,
    },
    /// type 8
    Range {
        /// true = no longer have
        drop: bool,
        /// first block
        start: u64,
        /// count
        length: u64,
    },
    /// type 9
    Extension {
        /// name ('' = same as last)
        name: String,
        /// payload
        message: Vec<u8>,
    },
}

fn nodes(r: &mut Reader<'_>) -> Result<Vec<Node>> {
    let n = r.array_len(34)?;
    (0..n)
        .map(|_| {
            Ok(Node {
                index: r.uint()?,
                size: r.uint()?,
                hash: r.fixed32()?,
            })
        })
        .collect()
}

fn write_nodes(w: &mut Writer, ns: &[Node]) {
    w.uint(ns.len() as u64);
    for n in ns {
        w.uint(n.index).uint(n.size).raw(&n.hash);
    }
}

fn opt_flags(r: &mut Reader<'_>) -> Result<u64> {
    if r.is_empty() {
        Ok(0)
    } else {
        r.uint()
    }
}

impl Message {
    /// The type id.
    pub fn type_id(&self) -> u64 {
        match self {
            Message::Sync(_) => ty::SYNC,
            Message::Request(_) => ty::REQUEST,
            Message::Cancel { .. } => ty::CANCEL,
            Message::Data(_) => ty::DATA,
            Message::NoData { .. } => ty::NO_DATA,
            Message::Want { .. } => ty::WANT,
            Message::Unwant { .. } => ty::UNWANT,
            Message::Bitfield { .. } => ty::BITFIELD,
            Message::Range { .. } => ty::RANGE,
            Message::Extension { .. } => ty::EXTENSION,
        }
    }

    /// Decodes a message of type `ty`. Unknown types give `Ok(None)` (ignored, as JS does).
    pub fn decode(ty: u64, b: &[u8]) -> Result<Option<Self>> {
        let mut r = Reader::new(b, "hypercore message");
        let r = &mut r;
        let m = match ty {
            ty::SYNC => {
                let flags = r.uint()?;
                Message::Sync(Sync {
                    can_upgrade: flags & 1 != 0,
                    uploading: flags & 2 != 0,
                    downloading: flags & 4 != 0,
                    has_manifest: flags & 8 != 0,
                    allow_push: flags & 16 != 0,
                    fork: r.uint()?,
                    length: r.uint()?,
                    remote_length: r.uint()?,
                })
            }
            ty::REQUEST => {
                let flags = r.uint()?;
                let id = r.uint()?;
                let fork = r.uint()?;
                let mut pair = |bit: u64| -> Result<Option<(u64, u64)>> {
                    if flags & bit != 0 {
                        Ok(Some((r.uint()?, r.uint()?)))
                    } else {
                        Ok(None)
                    }
                };
                let block = pair(1)?;
                let hash = pair(2)?;
                let seek = pair(4)?;
                let upgrade = pair(8)?;
                let priority = if flags & 32 != 0 { r.uint()? } else { 0 };
                Message::Request(Request {
                    id,
                    fork,
                    block,
                    hash,
                    seek,
                    upgrade,
                    manifest: flags & 16 != 0,
                    priority,
                })
            }
            ty::CANCEL => Message::Cancel { request: r.uint()? },
            ty::DATA => {
                let flags = r.uint()?;
                let request = r.uint()?;
                let fork = r.uint()?;
                let block = if flags & 1 != 0 {
                    Some(BlockProof {
                        index: r.uint()?,
                        value: r.buffer()?.to_vec(),
                        nodes: nodes(r)?,
                    })
                } else {
                    None
                };
                let hash = if flags & 2 != 0 {
                    Some(HashProof {
                        index: r.uint()?,
                        nodes: nodes(r)?,
                    })
                } else {
                    None
                };
                let seek = if flags & 4 != 0 {
                    Some(SeekProof {
                        bytes: r.uint()?,
                        nodes: nodes(r)?,
                    })
                } else {
                    None
                };
                let upgrade = if flags & 8 != 0 {
                    Some(UpgradeProof {
                        start: r.uint()?,
                        length: r.uint()?,
                        nodes: nodes(r)?,
                        additional_nodes: nodes(r)?,
                        signature: r.optional_buffer()?.map(<[u8]>::to_vec),
                    })
                } else {
                    None
                };
                let manifest = if flags & 16 != 0 {
                    Some(Manifest::decode(r)?)
                } else {
                    None
                };
                Message::Data(Box::new(Data {
                    request,
                    proof: Proof {
                        fork,
                        block,
                        hash,
                        seek,
                        upgrade,
                    },
                    manifest,
                }))
            }
            ty::NO_DATA => {
                let request = r.uint()?;
                let flags = opt_flags(r)?;
                let reason = if flags & 1 != 0 { r.uint()? } else { 0 };
                Message::NoData { request, reason }
            }
            ty::WANT | ty::UNWANT => {
                let start = r.uint()?;
                let length = r.uint()?;
                let any = opt_flags(r)? & 1 != 0;
                if ty == ty::WANT {
                    Message::Want { start, length, any }
                } else {
                    Message::Unwant { start, length, any }
                }
            }
            ty::BITFIELD => {
                let start = r.uint()?;
                let n = r.array_len(4)?;
                let bitfield = (0..n).map(|_| r.u32le()).collect::<Result<_>>()?;
                Message::Bitfield { start, bitfield }
            }
            ty::RANGE => {
                let flags = r.uint()?;
                let start = r.uint()?;
                let length = if flags & 2 != 0 { 1 } else { r.uint()? };
                Message::Range {
                    drop: flags & 1 != 0,
                    start,
                    length,
                }
            }
            ty::EXTENSION => Message::Extension {
                name: r.string()?.to_owned(),
                message: r.rest().to_vec(),
            },
            _ => return Ok(None),
        };
        Ok(Some(m))
    }

    /// Encodes the message body (without the protomux channel and type prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Message::Sync(s) => {
                let flags = u64::from(s.can_upgrade)
                    | u64::from(s.uploading) << 1
                    | u64::from(s.downloading) << 2
                    | u64::from(s.has_manifest) << 3
                    | u64::from(s.allow_push) << 4;
                w.uint(flags)
                    .uint(s.fork)
                    .uint(s.length)
                    .uint(s.remote_length);
            }
            Message::Request(q) => {
                let flags = u64::from(q.block.is_some())
                    | u64::from(q.hash.is_some()) << 1
                    | u64::from(q.seek.is_some()) << 2
                    | u64::from(q.upgrade.is_some()) << 3
                    | u64::from(q.manifest) << 4
                    | u64::from(q.priority != 0) << 5;
                w.uint(flags).uint(q.id).uint(q.fork);
                for (a, b) in [q.block, q.hash, q.seek, q.upgrade].into_iter().flatten() {
                    w.uint(a).uint(b);
                }
                if q.priority != 0 {
                    w.uint(q.priority);
                }
            }
            Message::Cancel { request } => {
                w.uint(*request);
            }
            Message::Data(d) => {
                let p = &d.proof;
                let flags = u64::from(p.block.is_some())
                    | u64::from(p.hash.is_some()) << 1
                    | u64::from(p.seek.is_some()) << 2
                    | u64::from(p.upgrade.is_some()) << 3
                    | u64::from(d.manifest.is_some()) << 4;
                w.uint(flags).uint(d.request).uint(p.fork);
                if let Some(b) = &p.block {
                    w.uint(b.index).buffer(&b.value);
                    write_nodes(&mut w, &b.nodes);
                }
                if let Some(h) = &p.hash {
                    w.uint(h.index);
                    write_nodes(&mut w, &h.nodes);
                }
                if let Some(s) = &p.seek {
                    w.uint(s.bytes);
                    write_nodes(&mut w, &s.nodes);
                }
                if let Some(u) = &p.upgrade {
                    w.uint(u.start).uint(u.length);
                    write_nodes(&mut w, &u.nodes);
                    write_nodes(&mut w, &u.additional_nodes);
                    w.optional_buffer(u.signature.as_deref());
                }
                if let Some(m) = &d.manifest {
                    m.encode(&mut w);
                }
            }
            Message::NoData { request, reason } => {
                w.uint(*request).uint(u64::from(*reason != 0));
                if *reason != 0 {
                    w.uint(*reason);
                }
            }
            Message::Want { start, length, any } | Message::Unwant { start, length, any } => {
                w.uint(*start).uint(*length);
                if *any {
                    w.uint(1);
                }
            }
            Message::Bitfield { start, bitfield } => {
                w.uint(*start).uint(bitfield.len() as u64);
                for word in bitfield {
                    w.raw(&word.to_le_bytes());
                }
            }
            Message::Range {
                drop,
                start,
                length,
            } => {
                w.uint(u64::from(*drop) | u64::from(*length == 1) << 1)
                    .uint(*start);
                if *length != 1 {
                    w.uint(*length);
                }
            }
            Message::Extension { name, message } => {
                w.string(name).raw(message);
            }
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(m: Message) {
        let b = m.encode();
        assert_eq!(Message::decode(m.type_id(), &b).unwrap(), Some(m));
    }

    #[test]
    fn roundtrips() {
        roundtrip(Message::Sync(Sync {
            can_upgrade: true,
            uploading: true,
            downloading: true,
            has_manifest: false,
            allow_push: false,
            fork: 2,
            length: 100_000,
            remote_length: 5,
        }));
        roundtrip(Message::Request(Request {
            id: 3,
            fork: 0,
            block: Some((10, 2)),
            upgrade: Some((0, 300)),
            manifest: true,
            ..Request::default()
        }));
        let node = Node {
            index: 5,
            size: 300,
            hash: [9u8; 32],
        };
        roundtrip(Message::Data(Box::new(Data {
            request: 3,
            proof: Proof {
                fork: 1,
                block: Some(BlockProof {
                    index: 2,
                    value: b"hello".to_vec(),
                    nodes: vec![node],
                }),
                hash: None,
                seek: None,
                upgrade: Some(UpgradeProof {
                    start: 0,
                    length: 9,
                    nodes: vec![node, node],
                    additional_nodes: vec![],
                    signature: Some(vec![1u8; 68]),
                }),
            },
            manifest: Some(Manifest::single_signer([4u8; 32])),
        })));
        roundtrip(Message::NoData {
            request: 4,
            reason: 1,
        });
        roundtrip(Message::NoData {
            request: 4,
            reason: 0,
        });
        roundtrip(Message::Range {
            drop: false,
            start: 0,
            length: 1,
        });
        roundtrip(Message::Range {
            drop: true,
            start: 7,
            length: 70,
        });
        roundtrip(Message::Bitfield {
            start: 64,
            bitfield: vec![1, 0xffff_ffff],
        });
        roundtrip(Message::Want {
            start: 0,
            length: 2_097_152,
            any: false,
        });
        roundtrip(Message::Extension {
            name: "x".into(),
            message: vec![1, 2],
        });
        // noData without flags (older peers)
        assert_eq!(
            Message::decode(ty::NO_DATA, &[7]).unwrap(),
            Some(Message::NoData {
                request: 7,
                reason: 0
            })
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(t in 0u64..12, bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::decode(t, &bytes);
        }
    }
}
