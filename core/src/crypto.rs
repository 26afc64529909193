//! Hashes and signatures, exactly as JS `hypercore-crypto` computes them.
//!
//! - BLAKE2b-256, optionally keyed (libsodium `crypto_generichash`).
//! - Merkle hashes with type prefixes: leaf `0x00`, parent `0x01`, root set `0x02`, sizes and
//!   indices as fixed u64 LE.
//! - Namespaces: `ns[i] = B256(B256(name) || i)`.
//! - Ed25519 detached signatures over 32-byte seeds (a JS secret key is `seed || public key`).

use std::sync::OnceLock;

use blake2::digest::consts::U32;
use blake2::digest::{FixedOutput, Mac, Update};
use blake2::{Blake2b, Blake2bMac};
use ed25519_dalek::Signer;

use crate::error::{Error, Result};

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// BLAKE2b-256 over the concatenation of `parts`.
pub fn hash(parts: &[&[u8]]) -> Hash {
    let mut h = Blake2b::<U32>::default();
    for p in parts {
        Update::update(&mut h, p);
    }
    h.finalize_fixed().into()
}

/// Keyed BLAKE2b-256 (key of 1..=64 bytes) over the concatenation of `parts`.
pub fn hash_keyed(key: &[u8], parts: &[&[u8]]) -> Hash {
    // Keys come from our own code (32 or 64 bytes), so construction cannot fail; fall back to
    // an unkeyed hash that can never match rather than panic if a caller passes a bad length.
    match <Blake2bMac<U32> as blake2::digest::KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            for p in parts {
                Mac::update(&mut m, p);
            }
            m.finalize().into_bytes().into()
        }
        Err(_) => hash(&[b"invalid key length", key]),
    }
}

/// JS `crypto.namespace(name, count)`.
pub fn namespace(name: &str, count: u8) -> Vec<Hash> {
    let base = hash(&[name.as_bytes()]);
    (0..count).map(|i| hash(&[&base, &[i]])).collect()
}

/// The hypercore namespaces: `[TREE, REPLICATE_INITIATOR, REPLICATE_RESPONDER, MANIFEST,
/// DEFAULT_NAMESPACE, DEFAULT_ENCRYPTION]`.
#[derive(Debug)]
pub struct Caps {
    /// Prefix of every signable.
    pub tree: Hash,
    /// Capability namespace of the initiator.
    pub replicate_initiator: Hash,
    /// Capability namespace of the responder.
    pub replicate_responder: Hash,
    /// Prefix of a manifest hash.
    pub manifest: Hash,
    /// A signer's namespace when none is given.
    pub default_namespace: Hash,
}

/// The hypercore namespaces, computed once.
pub fn caps() -> &'static Caps {
    static CAPS: OnceLock<Caps> = OnceLock::new();
    CAPS.get_or_init(|| {
        let ns = namespace("hypercore", 5);
        let get = |i: usize| ns.get(i).copied().unwrap_or_default();
        Caps {
            tree: get(0),
            replicate_initiator: get(1),
            replicate_responder: get(2),
            manifest: get(3),
            default_namespace: get(4),
        }
    })
}

/// Leaf hash of a block: `B256(0x00 || u64le(len) || block)`.
pub fn leaf_hash(block: &[u8]) -> Hash {
    hash(&[&[0u8], &(block.len() as u64).to_le_bytes(), block])
}

/// Parent hash: `B256(0x01 || u64le(size) || left || right)`, left = the lower index.
pub fn parent_hash(size: u64, left: &Hash, right: &Hash) -> Hash {
    hash(&[&[1u8], &size.to_le_bytes(), left, right])
}

/// Hash of a root set: `B256(0x02 || (hash || u64le(index) || u64le(size))*)`.
pub fn tree_hash<'a>(roots: impl IntoIterator<Item = (u64, u64, &'a Hash)>) -> Hash {
    let mut h = Blake2b::<U32>::default();
    Update::update(&mut h, &[2u8]);
    for (index, size, node_hash) in roots {
        Update::update(&mut h, node_hash);
        Update::update(&mut h, &index.to_le_bytes());
        Update::update(&mut h, &size.to_le_bytes());
    }
    h.finalize_fixed().into()
}

/// The replication capability: `B256(REPLICATE_<role> || core key; key = handshake hash)`.
pub fn capability(is_initiator: bool, core_key: &[u8; 32], handshake_hash: &[u8]) -> Hash {
    let c = caps();
    let ns = if is_initiator {
        &c.replicate_initiator
    } else {
        &c.replicate_responder
    };
    hash_keyed(handshake_hash, &[ns, core_key])
}

/// Verifies a detached Ed25519 signature. A malformed key or signature is just "invalid".
/// Strict, as libsodium (JS hypercore's verifier) is: a small-order public key or a
/// non-canonical signature is refused, so a core that only verifies here cannot exist.
pub fn verify_signature(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    vk.verify_strict(message, &sig).is_ok()
}

/// An Ed25519 key pair. Debug output never shows the secret.
#[derive(Clone)]
pub struct KeyPair {
    signing: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", hex::encode(self.public_key()))
    }
}

impl KeyPair {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        KeyPair {
            signing: ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }
    /// The key pair of a 32-byte seed (libsodium `crypto_sign_seed_keypair`).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        KeyPair {
            signing: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }
    /// From a JS 64-byte secret key (`seed || public key`); the public half must match.
    pub fn from_secret_key(sk: &[u8]) -> Result<Self> {
        let seed: [u8; 32] = sk
            .get(..32)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::invalid("a secret key is 32 or 64 bytes"))?;
        let kp = KeyPair::from_seed(&seed);
        match sk.len() {
            32 => Ok(kp),
            64 if sk.get(32..) == Some(&kp.public_key()[..]) => Ok(kp),
            _ => Err(Error::invalid("secret key does not match its public key")),
        }
    }
    /// The 32-byte seed.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }
    /// The JS form of the secret key: `seed || public key`.
    pub fn secret_key(&self) -> [u8; 64] {
        self.signing.to_keypair_bytes()
    }
    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }
    /// A detached signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

#[cfg(test)]
mod strict_tests {
    use super::*;

    #[test]
    fn a_small_order_key_verifies_nothing() {
        // The identity point (a small-order key): with R = identity and s = 0, a plain
        // (cofactorless, non-strict) check passes for every message.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut sig = [0u8; 64];
        sig[0] = 1;
        assert!(!verify_signature(&identity, b"anything", &sig));
        let kp = KeyPair::generate();
        let good = kp.sign(b"m");
        assert!(verify_signature(&kp.public_key(), b"m", &good));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hx(h: &[u8]) -> String {
        hex::encode(h)
    }

    #[test]
    fn namespaces_match_js() {
        let c = caps();
        assert_eq!(
            hx(&c.tree),
            "9fac70b50ca14efc4e91c833b204e75b8b5aad8b5881bfc0adb5ef38a3275b9c"
        );
        assert_eq!(
            hx(&c.replicate_initiator),
            "51812a2a359b50369536775df89e18e47740f3db72ac0ae70b29594c194dc316"
        );
        assert_eq!(
            hx(&c.replicate_responder),
            "0438492d02970cc13528ac0262bca0074e0926260256865accc0bf15bd79127d"
        );
        assert_eq!(
            hx(&c.manifest),
            "e64b7108eacce47cfc61ac850568f55f8b15b82ec5ed78c4ec597b036e2a1498"
        );
        assert_eq!(
            hx(&c.default_namespace),
            "4144eea531e483d54e0c14f4ca68e0644f355343ff6fcb0f005200e12cd747cb"
        );
        let ss = namespace("hyperswarm/secret-stream", 3);
        assert_eq!(
            hx(&ss[0]),
            "a931a0155b5c09e6d28628236af83c4b8a6af9af60986edeede9dc5d63192bf7"
        );
        assert_eq!(
            hx(&ss[1]),
            "742c9d833d430af4c48a8705e91631eecf295442bbca18996e597097723b1061"
        );
        assert_eq!(
            hx(&namespace("corestore", 1)[0]),
            "ac5c4cbfb1064776404637a280c71fac823281d351ebeced03151743270def29"
        );
    }

    #[test]
    fn hashes_and_keys_match_js() {
        assert_eq!(
            hx(&leaf_hash(b"a")),
            "423177bd3da55c6ac57419beff9c763bab05e12a6d8908b38b7fc14360228d4a"
        );
        let kp = KeyPair::from_seed(&[1u8; 32]);
        assert_eq!(
            hx(&kp.public_key()),
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        let sig = kp.sign(b"msg");
        assert!(verify_signature(&kp.public_key(), b"msg", &sig));
        assert!(!verify_signature(&kp.public_key(), b"msh", &sig));
        assert!(!verify_signature(&[0u8; 32], b"msg", &sig[..10]));
        let again = KeyPair::from_secret_key(&kp.secret_key()).unwrap();
        assert_eq!(again.public_key(), kp.public_key());
        assert!(KeyPair::from_secret_key(&[0u8; 64]).is_err());
    }

    #[test]
    fn empty_tree_hash() {
        assert_eq!(tree_hash(std::iter::empty()), hash(&[&[2u8]]));
    }
}
