//! Seed inputs for every target, made by the real encoders (and a few edge cases by hand).
//! `cargo run -p apiary-fuzz --bin seeds -- fuzz/corpus` writes them; the corpus in the
//! repository was written so.

use apiary_core::bee::block::encode_header;
use apiary_core::bee::{BeeWriter, Op};
use apiary_core::crypto::{self, KeyPair};
use apiary_core::encoding::Writer;
use apiary_core::manifest::{Manifest, ManifestSigner, Verifier};
use apiary_core::merkle::{BlockProof, Node, Proof, ProofRequest, UpgradeProof};
use apiary_core::replicate::{Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_core::wire::messages::{ChannelHandshake, Data, Message, Request, Sync};
use apiary_core::wire::mux::{encode_close, encode_message, encode_open, encode_reject, Batch};
use apiary_core::wire::noise::Handshake;
use apiary_core::Key;

use crate::merkle::{Tree, BLOCKS};

/// Seeds for the target `name`: `(file name, bytes)`.
pub fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    let list: Vec<Vec<u8>> = match name {
        "encoding" => encoding(),
        "secretstream" => secretstream(),
        "stream" => stream(),
        "noise" => noise(),
        "mux" => mux(),
        "messages" => messages(),
        "manifest" => manifests(),
        "bee_block" => bee_block(),
        "bee_walk" => bee_walk(),
        "merkle_proof" => merkle_proof(),
        "proof_bundle" => proof_bundle(),
        "swarm_frame" => swarm_frame(),
        _ => Vec::new(),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, b)| (format!("seed-{i:03}"), b))
        .collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn encoding() -> Vec<Vec<u8>> {
    let mut w = Writer::new();
    w.uint(7)
        .uint(0xfd)
        .uint(0x1_0000)
        .uint(u64::MAX)
        .buffer(b"abc")
        .optional_buffer(None)
        .string("héllo")
        .uint(3)
        .raw(&[1u8; 96]);
    let ops = [
        0u8, 0, 0, 0, 9, 10, 11, 0x4c, 7, 8, 0x3d, 2, 3, 4, 5, 6, 1, 14, 15,
    ];
    vec![
        cat(&[&[ops.len() as u8], &ops, &w.buf]),
        cat(&[&[3, 0, 0, 0], &[0xff, 1, 2]]),
        cat(&[&[2, 9, 0x1c], &[0xfe, 0xff, 0xff, 0xff, 0xff]]),
    ]
}

fn secretstream() -> Vec<Vec<u8>> {
    vec![
        cat(&[&[1, 6], b"\x00hello"]),
        cat(&[
            &[1, 4],
            b"\x02key",
            &[1, 3],
            b"\x00ab",
            &[0, 20],
            &[0u8; 20],
        ]),
        cat(&[
            &[2, 5],
            b"\x03four",
            &[3, 5],
            b"\x09four",
            &[1, 2],
            b"\x00x",
        ]),
        vec![0, 0],
    ]
}

fn stream() -> Vec<Vec<u8>> {
    // Genuine messages (op 1; the empty one is a keep-alive), then the same with a raw piece
    // (op 0: a frame header claiming 5 bytes) that breaks the stream after the first.
    let mut genuine = Vec::new();
    let mut broken = Vec::new();
    for (i, m) in [&b"hello"[..], b"", b"\x00\x01\x01\x0fhypercore/alpha"]
        .iter()
        .enumerate()
    {
        for out in [&mut genuine, &mut broken] {
            out.extend_from_slice(&[1, m.len() as u8]);
            out.extend_from_slice(m);
        }
        if i == 1 {
            broken.extend_from_slice(&[0, 3, 5, 0, 0]);
        }
    }
    vec![
        cat(&[&[0], &[32, 0, 0], &[9u8; 32]]),
        cat(&[&[1], &[5, 0, 0, 1, 2, 3, 4, 5]]),
        cat(&[&[2], &[56, 0, 0], &[0u8; 56]]),
        cat(&[&[5], &[3u8; 24], &[20, 0, 0], &[0u8; 20]]),
        cat(&[&[6], &genuine]),
        cat(&[&[7], &genuine]),
        cat(&[&[6], &broken]),
    ]
}

fn noise() -> Vec<Vec<u8>> {
    // Genuine messages for the raw modes.
    let mut i = Handshake::new(true, KeyPair::from_seed(&[3u8; 32]));
    let mut r = Handshake::new(false, KeyPair::from_seed(&[4u8; 32]));
    let m1 = i.write_message().expect("m1");
    r.read_message(&m1).expect("m1 read");
    let m2 = r.write_message().expect("m2");
    vec![
        vec![0, 0, 0],
        vec![1, 0, 0],
        cat(&[&[0, 1, 1], &[0]]),
        cat(&[&[1, 1, 0x80]]),
        cat(&[&[2, 32], &m1, &[64], &[0u8; 64]]),
        cat(&[&[3, 96], &m2]),
        cat(&[&[2, 32], &[0u8; 32]]),
        cat(&[&[2, 32], &[0xffu8; 32]]),
    ]
}

fn mux() -> Vec<Vec<u8>> {
    let mut b = Batch::new();
    b.push(1, 0, b"sync");
    b.push(1, 8, b"range");
    b.push(2, 3, b"data");
    let mut control = Writer::new();
    control.uint(0).uint(0).uint(0).uint(2).raw(&[3, 5]);
    vec![
        encode_open(1, "hypercore/alpha", Some(&[7u8; 32]), &[1; 33]),
        encode_open(300, "x", None, &[]),
        encode_reject(2),
        encode_close(70000),
        encode_message(1, 3, b"payload"),
        b.finish().expect("a batch"),
        control.finish(),
        vec![0, 0, 0, 3, 0, 0, 0],
        Vec::new(),
    ]
}

fn sample_proof() -> Proof {
    let node = Node {
        index: 5,
        size: 300,
        hash: [9u8; 32],
    };
    Proof {
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
            additional_nodes: vec![node],
            signature: Some(vec![1u8; 68]),
        }),
    }
}

fn messages() -> Vec<Vec<u8>> {
    let msgs = vec![
        Message::Sync(Sync {
            can_upgrade: true,
            uploading: true,
            downloading: true,
            has_manifest: true,
            allow_push: false,
            fork: 2,
            length: 100_000,
            remote_length: 5,
        }),
        Message::Request(Request {
            id: 3,
            fork: 0,
            block: Some((10, 2)),
            hash: Some((5, 1)),
            seek: Some((1000, 0)),
            upgrade: Some((0, 300)),
            manifest: true,
            priority: 1,
        }),
        Message::Cancel { request: 9 },
        Message::Data(Box::new(Data {
            request: 3,
            proof: sample_proof(),
            manifest: Some(Manifest::single_signer([4u8; 32])),
        })),
        Message::NoData {
            request: 4,
            reason: 1,
        },
        Message::Want {
            start: 0,
            length: 2_097_152,
            any: true,
        },
        Message::Unwant {
            start: 5,
            length: 1,
            any: false,
        },
        Message::Bitfield {
            start: 64,
            bitfield: vec![1, 0xffff_ffff],
        },
        Message::Range {
            drop: true,
            start: 7,
            length: 70,
        },
        Message::Range {
            drop: false,
            start: 0,
            length: 1,
        },
        Message::Extension {
            name: "x".into(),
            message: vec![1, 2],
        },
    ];
    let mut out: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| cat(&[&[m.type_id() as u8], &m.encode()]))
        .collect();
    let hs = ChannelHandshake {
        seeks: true,
        capability: [5u8; 32],
    };
    out.push(cat(&[&[12], &hs.encode()]));
    out.push(vec![4, 7]);
    out
}

fn manifests() -> Vec<Vec<u8>> {
    let kp = KeyPair::from_seed(&[5u8; 32]);
    let single = Manifest::single_signer(kp.public_key());
    let signer = |b: u8| ManifestSigner {
        namespace: [b; 32],
        public_key: KeyPair::from_seed(&[b; 32]).public_key(),
    };
    let multi = Manifest {
        version: 2,
        allow_patch: true,
        quorum: 2,
        signers: vec![signer(1), signer(2), signer(3)],
        prologue: Some(([6u8; 32], 3)),
        linked: vec![[7u8; 32]],
        user_data: Some(b"user".to_vec()),
    };
    let v0 = Manifest {
        version: 0,
        allow_patch: false,
        quorum: 1,
        signers: vec![signer(4)],
        prologue: None,
        linked: Vec::new(),
        user_data: None,
    };
    let v0_prologue = Manifest {
        version: 0,
        allow_patch: false,
        quorum: 0,
        signers: Vec::new(),
        prologue: Some(([8u8; 32], 0)),
        linked: Vec::new(),
        user_data: None,
    };
    let v0_multi = Manifest {
        quorum: 2,
        signers: vec![signer(1), signer(2)],
        allow_patch: true,
        ..v0.clone()
    };
    let th = crypto::hash(&[b"fuzz tree"]);
    let sig = Verifier::new(Key(single.hash()), Some(single.clone()))
        .and_then(|v| v.sign(&kp, &th, 5, 0))
        .expect("a signature");
    let with = |m: &Manifest, sig: &[u8]| {
        let b = m.to_bytes();
        cat(&[&(b.len() as u16).to_le_bytes(), &b, sig])
    };
    let mut multisig = Writer::new();
    multisig.uint(2);
    for i in 0..2u64 {
        multisig.uint(i).raw(&[i as u8; 64]).uint(0);
    }
    multisig.uint(0);
    vec![
        with(&single, &sig),
        with(&multi, &multisig.buf),
        with(&v0, &[1u8; 64]),
        with(&v0_prologue, &[]),
        with(&v0_multi, &cat(&[&[1, 0, 1], &[2u8; 64]])),
        vec![1, 0, 9],
    ]
}

fn bee_block() -> Vec<Vec<u8>> {
    use apiary_core::bee::{BeeBlock, NodeRef, TreeNode};
    let leaf = TreeNode {
        keys: vec![1, 3],
        children: vec![],
    };
    let inner = TreeNode {
        keys: vec![2],
        children: vec![NodeRef { seq: 1, offset: 0 }, NodeRef { seq: 4, offset: 1 }],
    };
    let with = |seq: u16, b: Vec<u8>| cat(&[&seq.to_le_bytes(), &b]);
    vec![
        with(
            3,
            BeeBlock::encode(b"key", Some(b"value"), std::slice::from_ref(&leaf)),
        ),
        with(4, BeeBlock::encode(b"k", None, &[inner, leaf])),
        with(
            2,
            BeeBlock::encode(
                b"gone",
                None,
                &[TreeNode {
                    keys: vec![1],
                    children: vec![],
                }],
            ),
        ),
        with(0, encode_header()),
        with(1, b"\x0a\x00\x12\x01a".to_vec()),
    ]
}

/// A real bee (enough keys for the tree to split and rebalance), written by [`BeeWriter`],
/// as a `bee_walk` input.
fn bee_walk() -> Vec<Vec<u8>> {
    let rt = crate::runtime();
    let blocks = rt.block_on(async {
        let store = Store::temporary().expect("a store");
        let rep = Replicator::new(store, ReplicatorOptions::default());
        let core = rep
            .create_core(KeyPair::from_seed(&[6u8; 32]), true)
            .expect("a core");
        let w = BeeWriter::new(core.clone()).expect("a writer");
        for i in 0..30u32 {
            w.put(
                format!("k{:02}", (i * 7) % 31).as_bytes(),
                format!("v{i}").as_bytes(),
            )
            .await
            .expect("put");
        }
        for i in 0..6u32 {
            w.del(format!("k{:02}", i * 3).as_bytes())
                .await
                .expect("del");
        }
        w.batch(vec![
            Op::Put {
                key: b"sub\x00a".to_vec(),
                value: b"1".to_vec(),
            },
            Op::Put {
                key: b"sub\x00b".to_vec(),
                value: b"2".to_vec(),
            },
        ])
        .await
        .expect("batch");
        let mut blocks = Vec::new();
        for seq in 1..core.length() {
            blocks.push(core.get(seq).await.expect("a block"));
        }
        blocks
    });
    let walk = |flags: u8, probe: &[u8], blocks: &[Vec<u8>]| {
        let mut out = vec![flags, probe.len() as u8];
        out.extend_from_slice(probe);
        for b in blocks {
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(b);
        }
        out
    };
    vec![
        walk(0x30, b"k10", &blocks),
        walk(0x16, b"sub", &blocks),
        walk(0, b"k01", blocks.get(..8).unwrap_or(&[])),
        walk(1, b"", &[b"\x0a\x08hyperbee".to_vec()]),
        walk(0, b"x", &[]),
    ]
}

/// Each honest bundle as it is, then a few one-edit inputs (the fuzzer finds the rest).
fn proof_bundle() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0u8..6).map(|i| vec![i]).collect();
    for (first, op) in [
        (0u8, 0u8),
        (1, 1),
        (2, 11),
        (3, 7),
        (4, 12),
        (5, 14),
        (0, 4),
    ] {
        out.push(vec![first, op, 1, 5, 0, 3]);
    }
    out
}

fn merkle_proof() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let reqs: Vec<(u8, ProofRequest)> = vec![
        // Blocks under what we hold, no upgrade.
        (
            BLOCKS as u8,
            ProofRequest {
                block: Some((3, 3)),
                ..Default::default()
            },
        ),
        (
            20,
            ProofRequest {
                block: Some((19, 2)),
                ..Default::default()
            },
        ),
        // Upgrades from nothing and from a prefix, with and without a block.
        (
            0,
            ProofRequest {
                upgrade: Some((0, BLOCKS)),
                ..Default::default()
            },
        ),
        (
            0,
            ProofRequest {
                block: Some((5, 0)),
                upgrade: Some((0, 9)),
                ..Default::default()
            },
        ),
        (
            9,
            ProofRequest {
                upgrade: Some((9, 20)),
                ..Default::default()
            },
        ),
        (
            16,
            ProofRequest {
                block: Some((30, 0)),
                upgrade: Some((16, BLOCKS - 16)),
                ..Default::default()
            },
        ),
        (
            BLOCKS as u8,
            ProofRequest {
                hash: Some((6, 1)),
                ..Default::default()
            },
        ),
    ];
    for manifest in [false, true] {
        let tree = Tree::get(manifest);
        for (local, req) in &reqs {
            let Ok(proof) = tree.prove(req) else {
                continue;
            };
            let m = Message::Data(Box::new(Data {
                request: 1,
                proof,
                manifest: None,
            }));
            out.push(cat(&[&[*local, u8::from(manifest)], &m.encode()]));
        }
    }
    out
}

fn swarm_frame() -> Vec<Vec<u8>> {
    use apiary_swarm::frame::{encode_data, Frame};
    let mut wire = Vec::new();
    Frame::Control(br#"{"ev":"ready"}"#.to_vec()).encode_into(&mut wire);
    encode_data(7, b"message", &mut wire);
    encode_data(8, b"", &mut wire);
    let mut oversized = (apiary_swarm::frame::MAX_BODY as u32 + 1)
        .to_le_bytes()
        .to_vec();
    oversized.extend_from_slice(&[1, 9, 0, 0, 0]);
    vec![
        cat(&[&[0], &wire]),
        cat(&[&[3], &wire]),
        cat(&[&[1], &oversized]),
        vec![0, 2, 0, 0, 0, 9, 9],
        vec![0, 1, 0, 0, 0, 1],
    ]
}
