//! A hostile author: a correctly signed bee of 2^53 blocks (the most our verifier accepts,
//! `merkle::MAX_LENGTH`; any other length too, longer ones for the reader to refuse), served
//! over the real protocol (Noise, secretstream, protomux, hypercore messages) without holding
//! any of it.
//!
//! Block 0 is a hyperbee header; every other block is the same entry block `X` (key "k",
//! one tree level whose single key is block 1). All leaves from 1 on are equal, so a subtree
//! that does not contain leaf 0 has a hash that depends only on its depth, and a subtree on
//! the left spine (offset 0) is the spine node one level down joined with the full subtree
//! beside it. Every node of the tree is thus one of 2 × 54 precomputed nodes, and any proof
//! (`merkle::generate_proof` over that lookup) costs O(53).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use apiary_core::bee::{block, BeeBlock, TreeNode};
use apiary_core::crypto::KeyPair;
use apiary_core::manifest::{Manifest, Verifier};
use apiary_core::merkle::{flat, generate_proof, Head, Node, Proof, ProofRequest, UpgradeProof};
use apiary_core::wire::messages::{self, ChannelHandshake, Data, Message, Request, Sync};
use apiary_core::wire::mux::{self, MuxMessage};
use apiary_core::wire::secret_stream;
use apiary_core::{crypto, Key};
use tokio::net::TcpListener;

/// The value of every entry block.
pub const VALUE: &[u8] = br#"{"title":"huge"}"#;

/// A fabricated core of `length` blocks and what its server did.
pub struct HugeCore {
    key: Key,
    manifest: Manifest,
    /// Its length.
    pub length: u64,
    /// Block 0.
    pub header: Vec<u8>,
    /// Every block from 1 on.
    pub entry: Vec<u8>,
    /// The node of offset 0 at each depth (spans leaf 0).
    spine: Vec<Node>,
    /// A node of offset ≥ 1 at each depth (all its leaves are `entry`).
    full: Vec<Node>,
    head: Head,
    /// Requests answered with data.
    pub answered: AtomicU64,
    /// Requests answered with noData.
    pub refused: AtomicU64,
    /// Highest block index asked for, plus one.
    pub highest_block: AtomicU64,
}

impl HugeCore {
    /// Builds and signs a core of `length` blocks (at least 2) with a fresh key pair.
    pub fn new(length: u64) -> Arc<HugeCore> {
        assert!(length >= 2);
        let kp = KeyPair::generate();
        let manifest = Manifest::single_signer(kp.public_key());
        let key = Key(manifest.hash());
        let verifier = Verifier::new(key, Some(manifest.clone())).unwrap();
        let header = block::encode_header();
        let level = TreeNode {
            keys: vec![1],
            children: vec![],
        };
        let entry = BeeBlock::encode(b"k", Some(VALUE), &[level]);
        // Depths 0 ..= floor(log2(length)): the highest a node of this tree can be.
        let depths = 64 - length.leading_zeros();
        let mut spine = vec![Node::leaf(0, &header)];
        let mut full = vec![Node::leaf(1, &entry)];
        for d in 1..depths {
            let (s, f) = (spine[d as usize - 1], full[d as usize - 1]);
            // index(d-1, 0) and index(d-1, 1) are the children of index(d, 0);
            // index(d-1, 2) and index(d-1, 3) those of index(d, 1).
            let at = |n: Node, offset: u64| Node {
                index: flat::index(d - 1, offset),
                ..n
            };
            spine.push(Node::parent(&at(s, 0), &at(f, 1)));
            full.push(Node::parent(&at(f, 2), &at(f, 3)));
        }
        let mut core = HugeCore {
            key,
            manifest,
            length,
            header,
            entry,
            spine,
            full,
            head: Head::default(),
            answered: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            highest_block: AtomicU64::new(0),
        };
        let roots: Vec<Node> = flat::full_roots(length)
            .into_iter()
            .map(|r| core.node(r).unwrap())
            .collect();
        let mut head = Head {
            length,
            fork: 0,
            roots,
            signature: None,
        };
        head.signature = Some(verifier.sign(&kp, &head.tree_hash(), length, 0).unwrap());
        core.head = head;
        Arc::new(core)
    }

    /// The core key.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Tree node `i`, if the tree has it.
    pub fn node(&self, i: u64) -> Option<Node> {
        if i >= 2 * self.length || flat::right_span(i) / 2 >= self.length {
            return None;
        }
        let d = flat::depth(i) as usize;
        let n = if flat::offset(i) == 0 {
            self.spine.get(d)
        } else {
            self.full.get(d)
        }?;
        Some(Node { index: i, ..*n })
    }

    /// Block `seq`.
    pub fn block(&self, seq: u64) -> Option<Vec<u8>> {
        match seq {
            0 => Some(self.header.clone()),
            s if s < self.length => Some(self.entry.clone()),
            _ => None,
        }
    }

    /// The answer to a request: a proof built from the lookup, or noData.
    pub fn answer(&self, r: &Request) -> Message {
        if let Some((i, _)) = r.block {
            self.highest_block
                .fetch_max(i.saturating_add(1), Ordering::Relaxed);
        }
        let req = ProofRequest {
            block: r.block,
            hash: r.hash,
            upgrade: r.upgrade,
        };
        let value = r.block.and_then(|(i, _)| self.block(i));
        let proof = (r.fork == 0 && r.seek.is_none())
            .then(|| generate_proof(&self.head, &req, value, |i| Ok(self.node(i))).ok())
            .flatten()
            .or_else(|| self.whole_upgrade(r));
        match proof {
            Some(proof) => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                Message::Data(Box::new(Data {
                    request: r.id,
                    proof,
                    manifest: r.manifest.then(|| self.manifest.clone()),
                }))
            }
            None => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Message::NoData {
                    request: r.id,
                    reason: messages::INVALID_REQUEST,
                }
            }
        }
    }

    /// An upgrade from 0 to the full length: every root and the signature. `generate_proof`
    /// refuses lengths past `MAX_LENGTH`; this sends them anyway, for the reader to refuse.
    fn whole_upgrade(&self, r: &Request) -> Option<Proof> {
        let whole = r.block.is_none() && r.hash.is_none() && r.upgrade == Some((0, self.length));
        whole.then(|| Proof {
            fork: 0,
            upgrade: Some(UpgradeProof {
                start: 0,
                length: self.length,
                nodes: self.head.roots.clone(),
                additional_nodes: Vec::new(),
                signature: self.head.signature.clone(),
            }),
            ..Proof::default()
        })
    }

    /// Serves the core on a fresh loopback port. Returns the address.
    pub async fn serve(self: &Arc<Self>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let core = self.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let core = core.clone();
                tokio::spawn(async move {
                    let _ = core.session(sock).await;
                });
            }
        });
        addr
    }

    async fn session(&self, sock: tokio::net::TcpStream) -> Option<()> {
        let mut s = secret_stream(sock, false, KeyPair::generate(), "huge".into())
            .await
            .ok()?;
        let hash = s.info.handshake_hash;
        while let Some(Ok(frame)) = s.incoming.recv().await {
            let mut out = mux::Batch::new();
            for m in mux::decode_frame(&frame).ok()? {
                match m {
                    MuxMessage::Open { .. } => {
                        let hs = ChannelHandshake {
                            seeks: false,
                            capability: crypto::capability(false, self.key.as_bytes(), &hash),
                        };
                        let dk = self.key.discovery_key();
                        let open = mux::encode_open(
                            1,
                            "hypercore/alpha",
                            Some(dk.as_bytes()),
                            &hs.encode(),
                        );
                        s.outgoing.send(open).await.ok()?;
                        let sync = Message::Sync(Sync {
                            can_upgrade: true,
                            uploading: true,
                            has_manifest: true,
                            length: self.length,
                            ..Sync::default()
                        });
                        out.push(1, messages::ty::SYNC, &sync.encode());
                    }
                    MuxMessage::Message { ty, payload, .. } => {
                        if let Ok(Some(Message::Request(r))) = Message::decode(ty, &payload) {
                            let m = self.answer(&r);
                            out.push(1, m.type_id(), &m.encode());
                        }
                    }
                    _ => {}
                }
            }
            if let Some(f) = out.finish() {
                s.outgoing.send(f).await.ok()?;
            }
        }
        Some(())
    }
}
