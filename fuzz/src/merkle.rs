//! Merkle proofs: [`verify_proof`] on attacker-chosen proofs, as a reader runs it on every
//! `data` message, against a real signed tree.
//!
//! Input: `u8 local length · u8 flags · body of a data message`. The tree has [`BLOCKS`]
//! blocks signed by a key only the target knows; we hold its first `local length` blocks
//! (mod `BLOCKS + 1`) with every node under them. Flag bit 0: the core has a manifest (else
//! it is compat). A proof that verifies must be the truth: every node it hands back for
//! storing, the block and the new head are those of the real tree.

use std::collections::HashMap;
use std::sync::OnceLock;

use apiary_core::crypto::KeyPair;
use apiary_core::manifest::{Manifest, Verifier};
use apiary_core::merkle::{
    append_root, flat, generate_proof, verify_proof, Head, Node, Proof, ProofRequest,
};
use apiary_core::wire::messages::{ty, Message};
use apiary_core::Key;

use crate::Input;

/// Blocks in the real tree.
pub const BLOCKS: u64 = 37;

/// A real signed tree: its blocks, nodes, and the signed head at every length.
#[derive(Debug)]
pub struct Tree {
    /// Block values.
    pub blocks: Vec<Vec<u8>>,
    /// Every node by index.
    pub nodes: HashMap<u64, Node>,
    /// `heads[l]`: the signed head of the first `l` blocks.
    pub heads: Vec<Head>,
    /// Verifies its signatures.
    pub verifier: Verifier,
}

impl Tree {
    fn new(manifest: bool) -> Tree {
        let kp = KeyPair::from_seed(&[42u8; 32]);
        let verifier = if manifest {
            let m = Manifest::single_signer(kp.public_key());
            Verifier::new(Key(m.hash()), Some(m))
        } else {
            Verifier::new(Key(kp.public_key()), None)
        }
        .expect("a verifier");
        let blocks: Vec<Vec<u8>> = (0..BLOCKS)
            .map(|i| format!("block {i}").repeat(i as usize % 5 + 1).into_bytes())
            .collect();
        let mut nodes = HashMap::new();
        let mut roots = Vec::new();
        let mut heads = vec![Head::default()];
        for (i, b) in blocks.iter().enumerate() {
            let mut created = Vec::new();
            let leaf = Node::leaf(i as u64, b);
            created.push(leaf);
            append_root(&mut roots, &mut created, leaf);
            for n in created {
                nodes.insert(n.index, n);
            }
            let mut head = Head {
                length: i as u64 + 1,
                fork: 0,
                roots: roots.clone(),
                signature: None,
            };
            head.signature = Some(
                verifier
                    .sign(&kp, &head.tree_hash(), head.length, 0)
                    .expect("signing"),
            );
            heads.push(head);
        }
        Tree {
            blocks,
            nodes,
            heads,
            verifier,
        }
    }

    /// The compat tree (`false`) or the manifest one (`true`).
    pub fn get(manifest: bool) -> &'static Tree {
        static TREES: OnceLock<[Tree; 2]> = OnceLock::new();
        let t = TREES.get_or_init(|| [Tree::new(false), Tree::new(true)]);
        &t[usize::from(manifest)]
    }

    /// The proof a server holding the whole tree sends for `req` (for seeds).
    pub fn prove(&self, req: &ProofRequest) -> apiary_core::Result<Proof> {
        let head = self.heads.last().expect("a head");
        let value = req
            .block
            .and_then(|(i, _)| self.blocks.get(i as usize).cloned());
        generate_proof(head, req, value, |i| Ok(self.nodes.get(&i).copied()))
    }
}

/// The target.
pub fn fuzz(data: &[u8]) {
    run(data);
}

/// Runs one input; returns whether the proof verified.
pub fn run(data: &[u8]) -> bool {
    let mut input = Input::new(data);
    let local_len = u64::from(input.u8()) % (BLOCKS + 1);
    let flags = input.u8();
    let body = input.rest();
    let Ok(Some(Message::Data(d))) = Message::decode(ty::DATA, body) else {
        return false;
    };
    let tree = Tree::get(flags & 1 != 0);
    let local = &tree.heads[local_len as usize];
    let held = |i: u64| flat::right_span(i) / 2 < local_len;
    let Ok(v) = verify_proof(&d.proof, local, &tree.verifier, |i| {
        Ok(if held(i) {
            tree.nodes.get(&i).copied()
        } else {
            None
        })
    }) else {
        return false;
    };
    for n in &v.nodes {
        assert_eq!(
            tree.nodes.get(&n.index),
            Some(n),
            "a verified proof hands back a node that is not the tree's"
        );
    }
    if let Some((seq, value)) = &v.block {
        assert_eq!(
            tree.blocks.get(*seq as usize),
            Some(value),
            "a verified proof hands back a block that is not the tree's"
        );
    }
    if let Some(head) = &v.head {
        assert!(head.length > local_len);
        assert_eq!(
            tree.heads.get(head.length as usize).map(|h| &h.roots),
            Some(&head.roots),
            "a verified upgrade gives roots that are not the tree's"
        );
    }
    true
}
