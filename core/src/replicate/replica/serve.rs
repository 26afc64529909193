//! Serving: what we answer to a peer's request, from our verified head and our store. Pure
//! apart from the store reads: the connection sends what this returns and keeps its own count
//! of invalid requests.

use super::Replica;
use crate::error::{Error, Result};
use crate::merkle::{generate_proof, ProofRequest};
use crate::wire::messages::{self, Data, Message, Request};

impl Replica {
    /// The answer to `r`: `data` with a proof, or `noData` carrying `r.id` and why —
    /// [`messages::NOT_AVAILABLE`] (another fork, a block we do not hold, a seek: we do not
    /// serve those) or [`messages::INVALID_REQUEST`] (nothing a tree of our length can prove:
    /// past the length, an upgrade out of range, an absurd node index).
    ///
    /// `Err` only when our own store fails.
    pub fn answer(&self, r: &Request) -> Result<Message> {
        let no_data = |reason| {
            Ok(Message::NoData {
                request: r.id,
                reason,
            })
        };
        let head = self.head();
        if r.fork != head.fork || r.seek.is_some() {
            return no_data(messages::NOT_AVAILABLE);
        }
        let store = self.store();
        let value = match r.block {
            Some(_) if !self.opts.serve_blocks => return no_data(messages::NOT_AVAILABLE),
            Some((i, _)) => match store.block(i)? {
                Some(v) => Some(v),
                None => return no_data(messages::NOT_AVAILABLE),
            },
            None => None,
        };
        let req = ProofRequest {
            block: r.block,
            hash: r.hash,
            upgrade: r.upgrade,
        };
        match generate_proof(&head, &req, value, |i| store.node(i)) {
            Ok(proof) => Ok(Message::Data(Box::new(Data {
                request: r.id,
                proof,
                manifest: if r.manifest { self.manifest() } else { None },
            }))),
            Err(Error::NotAvailable { .. }) => no_data(messages::NOT_AVAILABLE),
            Err(Error::Store(e)) => Err(Error::Store(e)),
            Err(_) => no_data(messages::INVALID_REQUEST),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::KeyPair;
    use crate::manifest::Verifier;
    use crate::merkle::{verify_proof, Head};
    use crate::replicate::{Replicator, ReplicatorOptions};
    use crate::store::Store;

    const LENGTH: u64 = 10;

    fn core() -> (Arc<Replica>, Vec<Vec<u8>>) {
        let rep = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default());
        let core = rep.create_core(KeyPair::generate(), false).unwrap();
        let blocks: Vec<Vec<u8>> = (0..LENGTH)
            .map(|i| format!("block {i}").into_bytes())
            .collect();
        core.append(&blocks).unwrap();
        (core, blocks)
    }

    fn no_data(m: Message) -> (u64, u64) {
        match m {
            Message::NoData { request, reason } => (request, reason),
            other => panic!("expected noData, got {other:?}"),
        }
    }

    #[test]
    fn a_replica_that_does_not_serve_blocks_answers_no_data_but_still_upgrades() {
        let opts = ReplicatorOptions {
            replica: crate::replicate::ReplicaOptions {
                serve_blocks: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let rep = Replicator::new(Store::temporary().unwrap(), opts);
        let core = rep.create_core(KeyPair::generate(), false).unwrap();
        core.append(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
        let r = Request {
            id: 9,
            block: Some((1, 0)),
            ..Request::default()
        };
        assert_eq!(
            no_data(core.answer(&r).unwrap()),
            (9, messages::NOT_AVAILABLE)
        );
        let r = Request {
            id: 10,
            upgrade: Some((0, 2)),
            ..Request::default()
        };
        assert!(matches!(core.answer(&r).unwrap(), Message::Data(_)));
    }

    #[test]
    fn a_block_past_the_length_is_not_available() {
        let (core, _) = core();
        for seq in [LENGTH, LENGTH + 1, u64::MAX] {
            let r = Request {
                id: 7,
                block: Some((seq, 0)),
                ..Request::default()
            };
            let a = no_data(core.answer(&r).unwrap());
            assert_eq!(a, (7, messages::NOT_AVAILABLE), "block {seq}");
        }
    }

    #[test]
    fn absurd_upgrades_are_invalid() {
        let (core, _) = core();
        for upgrade in [
            (0, LENGTH + 1),
            (LENGTH, 1),
            (0, 0),
            (0, u64::MAX),
            (u64::MAX, 1),
            (u64::MAX, u64::MAX),
            (1 << 62, 1 << 62),
        ] {
            let r = Request {
                id: 3,
                upgrade: Some(upgrade),
                ..Request::default()
            };
            let a = no_data(core.answer(&r).unwrap());
            assert_eq!(a, (3, messages::INVALID_REQUEST), "upgrade {upgrade:?}");
        }
    }

    #[test]
    fn absurd_hash_requests_are_invalid() {
        let (core, _) = core();
        for hash in [
            (u64::MAX, 0),
            (u64::MAX, u64::MAX),
            (2 * LENGTH, 0),
            (0, u64::MAX),
        ] {
            let r = Request {
                id: 9,
                hash: Some(hash),
                ..Request::default()
            };
            let a = no_data(core.answer(&r).unwrap());
            assert_eq!(a, (9, messages::INVALID_REQUEST), "hash {hash:?}");
        }
        // A block and a hash at once is not a request either.
        let r = Request {
            id: 10,
            block: Some((1, 0)),
            hash: Some((2, 0)),
            ..Request::default()
        };
        assert_eq!(
            no_data(core.answer(&r).unwrap()),
            (10, messages::INVALID_REQUEST)
        );
    }

    #[test]
    fn another_fork_or_a_seek_is_not_available() {
        let (core, _) = core();
        let other_fork = Request {
            id: 1,
            fork: 1,
            block: Some((0, 0)),
            ..Request::default()
        };
        let seek = Request {
            id: 2,
            seek: Some((5, 0)),
            ..Request::default()
        };
        assert_eq!(
            no_data(core.answer(&other_fork).unwrap()),
            (1, messages::NOT_AVAILABLE)
        );
        assert_eq!(
            no_data(core.answer(&seek).unwrap()),
            (2, messages::NOT_AVAILABLE)
        );
    }

    #[test]
    fn a_valid_block_comes_with_a_proof_a_new_reader_accepts() {
        let (core, blocks) = core();
        // A reader with nothing: the block, its path and the signed head in one proof.
        let r = Request {
            id: 5,
            block: Some((3, 64)),
            upgrade: Some((0, LENGTH)),
            manifest: true,
            ..Request::default()
        };
        let Message::Data(d) = core.answer(&r).unwrap() else {
            panic!("expected data");
        };
        assert_eq!(d.request, 5);
        let verifier = Verifier::new(*core.key(), d.manifest.clone()).unwrap();
        let v = verify_proof(&d.proof, &Head::default(), &verifier, |_| Ok(None)).unwrap();
        assert_eq!(v.block, Some((3, blocks[3].clone())));
        assert_eq!(v.head.map(|h| h.length), Some(LENGTH));
        // And a reader that holds the head (its roots are stored nodes): the block and the
        // one node under root 17 it lacks (18).
        let r = Request {
            id: 6,
            block: Some((8, 1)),
            ..Request::default()
        };
        let Message::Data(d) = core.answer(&r).unwrap() else {
            panic!("expected data");
        };
        assert!(d.manifest.is_none(), "not asked for");
        let head = core.head();
        let roots = |i| Ok(head.roots.iter().find(|n| n.index == i).copied());
        let v = verify_proof(&d.proof, &head, &verifier, roots).unwrap();
        assert_eq!(v.block, Some((8, blocks[8].clone())));
    }
}
