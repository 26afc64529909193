//! Writing cores we hold the key pair of: create (manifest v1 by default, as JS hypercore 11
//! and Corestore do, or compat), append batches signed once, truncate.
//!
//! An append writes its blocks and the new tree nodes, then the new signed head last (see
//! `store::CoreBatch`): a crash leaves the core at the last length that was fully written.
//! The append is synced to disk before the new head is shown to peers, so a crash never
//! takes back a length a reader saw.

use std::sync::Arc;

use super::Replica;
use crate::crypto::KeyPair;
use crate::error::{Error, Result};
use crate::id::Key;
use crate::manifest::{Manifest, Verifier};
use crate::merkle::{append_root, flat, Head, Node};
use crate::replicate::Replicator;
use crate::store::CoreRecord;

impl Replicator {
    /// Opens (or creates) the core signed by `keys`. With `compat` the core key is the public
    /// key (old-style cores); otherwise it is the hash of a v1 single-signer manifest.
    pub fn create_core(&self, keys: KeyPair, compat: bool) -> Result<Arc<Replica>> {
        let manifest = Manifest::single_signer(keys.public_key());
        let key = if compat {
            Key(keys.public_key())
        } else {
            Key(manifest.hash())
        };
        let replica = self.register(key, Some(keys))?;
        replica.init_writer((!compat).then_some(manifest))?;
        Ok(replica)
    }
}

impl Replica {
    pub(crate) fn init_writer(&self, manifest: Option<Manifest>) -> Result<()> {
        let verifier = Verifier::new(*self.key(), manifest)?;
        self.with_state(|s| {
            if s.record.manifest.is_none() && !verifier.is_compat() {
                s.record.manifest = Some(verifier.manifest().to_bytes());
                let mut b = self.store().batch();
                b.record(s.record.clone());
                self.store().apply(b)?;
            }
            s.verifier = Some(verifier);
            Ok(())
        })
    }

    fn signer(&self) -> Result<&KeyPair> {
        self.writer
            .as_ref()
            .ok_or_else(|| Error::invalid(format!("core {} is not writable here", self.key())))
    }

    /// Appends blocks as one signed batch; returns the new length.
    pub fn append<B: AsRef<[u8]>>(&self, blocks: &[B]) -> Result<u64> {
        let kp = self.signer()?;
        let event = self.with_state(|s| {
            let verifier = s
                .verifier
                .clone()
                .ok_or_else(|| Error::invalid("writer not initialised"))?;
            let mut record = s.record.clone();
            let old_len = record.head.length;
            let mut roots = record.head.roots.clone();
            let mut nodes = Vec::with_capacity(blocks.len() * 2);
            let mut batch = self.store().batch();
            for (i, b) in blocks.iter().enumerate() {
                let seq = old_len + i as u64;
                let leaf = Node::leaf(seq, b.as_ref());
                nodes.push(leaf);
                append_root(&mut roots, &mut nodes, leaf);
                batch.block(seq, b.as_ref());
            }
            let length = old_len + blocks.len() as u64;
            let mut head = Head {
                length,
                fork: record.head.fork,
                roots,
                signature: None,
            };
            head.signature = Some(verifier.sign(kp, &head.tree_hash(), length, head.fork)?);
            batch.nodes(&nodes);
            if record.contiguous == old_len {
                record.contiguous = length;
            }
            record.head = head;
            batch.record(record.clone());
            self.store().apply(batch)?;
            // On disk before any peer can be shown the new head (`s.record`, then publish).
            self.store().sync()?;
            s.record = record;
            Ok(s.event())
        })?;
        self.publish(event);
        Ok(event.length)
    }

    /// Cuts the core back to `length` blocks and starts a new fork (JS `core.truncate`).
    pub fn truncate(&self, length: u64) -> Result<()> {
        let kp = self.signer()?;
        let _fork = self.fork_exclusive();
        let event = self.with_state(|s| {
            let verifier = s
                .verifier
                .clone()
                .ok_or_else(|| Error::invalid("writer not initialised"))?;
            if length > s.record.head.length {
                return Err(Error::invalid("cannot truncate beyond the length"));
            }
            let roots = flat::full_roots(length)
                .into_iter()
                .map(|i| {
                    self.store()
                        .node(i)?
                        .ok_or_else(|| Error::corruption(format!("writer lacks tree node {i}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let fork = s.record.head.fork + 1;
            let mut head = Head {
                length,
                fork,
                roots,
                signature: None,
            };
            head.signature = Some(verifier.sign(kp, &head.tree_hash(), length, fork)?);
            let mut record = s.record.clone();
            record.head = head;
            record.contiguous = record.contiguous.min(length);
            CoreRecord::push_truncation(&mut record.truncations, fork, length);
            self.store().truncate(length, record.clone(), &[])?;
            self.store().sync()?;
            s.record = record;
            Ok(s.event())
        })?;
        self.publish(event);
        Ok(())
    }
}
