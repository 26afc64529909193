//! Manifests: [`Manifest::from_bytes`] and what a reader does with a manifest a peer sent
//! (build a [`Verifier`] for the key it hashes to, verify a signature the peer also sent,
//! including the multisig container).
//!
//! Input: `u16 len · len bytes of manifest · signature bytes`.

use apiary_core::crypto;
use apiary_core::encoding::Reader;
use apiary_core::manifest::{Manifest, Verifier};
use apiary_core::Key;

use crate::Input;

/// The target.
pub fn fuzz(data: &[u8]) {
    let mut input = Input::new(data);
    let bytes = input.chunk16();
    let signature = input.rest();
    // As part of a larger message (the `data` message carries one).
    let _ = Manifest::decode(&mut Reader::new(bytes, "fuzz"));
    let Ok(m) = Manifest::from_bytes(bytes) else {
        return;
    };
    let again = m.to_bytes();
    assert_eq!(
        Manifest::from_bytes(&again).ok().as_ref(),
        Some(&m),
        "re-encoded manifest differs"
    );
    let key = Key(m.hash());
    let Ok(v) = Verifier::new(key, Some(m)) else {
        return;
    };
    let tree_hash = crypto::hash(&[b"fuzz tree"]);
    let _ = v.signable(&tree_hash, 5, 0);
    // Only the seeds' key pairs (seeds 1..=5) ever signed anything, so nothing else may
    // verify, unless the manifest itself lets a prologue through without a signature.
    let ok = v.verify(&tree_hash, 5, 0, Some(signature)).is_ok();
    let prologue = v
        .manifest()
        .prologue
        .is_some_and(|(h, len)| h == tree_hash && len == 5);
    let known = v.manifest().signers.iter().any(|s| {
        (1..=5u8).any(|b| crypto::KeyPair::from_seed(&[b; 32]).public_key() == s.public_key)
    });
    assert!(
        !ok || prologue || known,
        "a signature verified without a signer's key"
    );
    let _ = v.verify(&tree_hash, 5, 0, None);
}
