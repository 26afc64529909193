//! Manifests (who may sign a core) and signature verification.
//!
//! Wire format (compact-encoding, JS `hypercore/lib/messages.js` `manifest`):
//! ```text
//! v1..3: uint version · uint flags(bit0 allowPatch, bit1 prologue, bit2 linked, bit3 userData)
//!        · uint hash(0 = blake2b) · uint quorum · array(signer)
//!        · [fixed32 prologueHash · uint prologueLength] · [array(fixed32) linked] · [buffer userData]
//! v0:    uint 0 · uint hash · uint type: 0 → fixed32 prologueHash;
//!        1 → one signer; 2 → uint flags · uint quorum · array(signer)
//! signer: uint signature(0 = ed25519) · fixed32 namespace · fixed32 publicKey
//! ```
//! The core key of a non-compat core is `B256(MANIFEST || encode(manifest))`. A *compat* core's key
//! is its single signer's public key; it signs an 80-byte signable with a raw signature, where a
//! manifest core signs 112 bytes (`TREE || ctx || treeHash || u64 length || u64 fork`) and, from
//! v1 on, wraps signatures in a multisig container: `array(uint signer · fixed64 sig · uint patch)
//! · array(node) patch` (68 bytes for one signer).

use crate::crypto::{self, Hash};
use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::id::Key;

/// One signer of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSigner {
    /// Signing namespace (the ctx of a v0 signable).
    pub namespace: Hash,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
}

/// A core's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// 0..=3.
    pub version: u64,
    /// Whether signers may sign patched trees.
    pub allow_patch: bool,
    /// How many signers must sign.
    pub quorum: u64,
    /// The signers.
    pub signers: Vec<ManifestSigner>,
    /// A prefix `(tree hash, length)` that needs no signature.
    pub prologue: Option<(Hash, u64)>,
    /// Linked cores (v2+).
    pub linked: Vec<[u8; 32]>,
    /// Free-form data (v2+).
    pub user_data: Option<Vec<u8>>,
}

const WHAT: &str = "manifest";

impl Manifest {
    /// The manifest JS hypercore 11 and Corestore make for one key pair: v1, one signer in the
    /// default namespace, quorum 1.
    pub fn single_signer(public_key: [u8; 32]) -> Self {
        Manifest {
            version: 1,
            allow_patch: false,
            quorum: 1,
            signers: vec![ManifestSigner {
                namespace: crypto::caps().default_namespace,
                public_key,
            }],
            prologue: None,
            linked: Vec::new(),
            user_data: None,
        }
    }

    /// Encodes as JS does.
    pub fn encode(&self, w: &mut Writer) {
        w.uint(self.version);
        if self.version == 0 {
            w.uint(0); // hash: blake2b
            if let (Some((hash, _)), true) = (&self.prologue, self.signers.is_empty()) {
                w.uint(0).raw(hash);
            } else if self.quorum == 1 && self.signers.len() == 1 && !self.allow_patch {
                w.uint(1);
                encode_signers(w, &self.signers, false);
            } else {
                w.uint(2)
                    .uint(u64::from(self.allow_patch))
                    .uint(self.quorum);
                encode_signers(w, &self.signers, true);
            }
            return;
        }
        let flags = u64::from(self.allow_patch)
            | (u64::from(self.prologue.is_some()) << 1)
            | (u64::from(!self.linked.is_empty()) << 2)
            | (u64::from(self.user_data.is_some()) << 3);
        w.uint(flags).uint(0).uint(self.quorum);
        encode_signers(w, &self.signers, true);
        if let Some((hash, length)) = &self.prologue {
            w.raw(hash).uint(*length);
        }
        if !self.linked.is_empty() {
            w.uint(self.linked.len() as u64);
            for k in &self.linked {
                w.raw(k);
            }
        }
        if let Some(d) = &self.user_data {
            w.buffer(d);
        }
    }

    /// The encoded bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }

    /// Decodes one manifest from the reader.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.uint()?;
        let hash_id = |r: &mut Reader<'_>| -> Result<()> {
            match r.uint()? {
                0 => Ok(()),
                n => Err(Error::decode(WHAT, format!("unknown hash id {n}"))),
            }
        };
        if version == 0 {
            hash_id(r)?;
            let mut m = Manifest {
                version: 0,
                allow_patch: false,
                quorum: 1,
                signers: Vec::new(),
                prologue: None,
                linked: Vec::new(),
                user_data: None,
            };
            match r.uint()? {
                0 => {
                    m.quorum = 0;
                    m.prologue = Some((r.fixed32()?, 0));
                }
                1 => m.signers.push(decode_signer(r)?),
                2 => {
                    m.allow_patch = r.uint()? & 1 != 0;
                    m.quorum = r.uint()?;
                    m.signers = decode_signers(r)?;
                }
                t => return Err(Error::decode(WHAT, format!("unknown v0 type {t}"))),
            }
            return Ok(m);
        }
        if version > 3 {
            return Err(Error::decode(WHAT, format!("unknown version {version}")));
        }
        let flags = r.uint()?;
        hash_id(r)?;
        let quorum = r.uint()?;
        let signers = decode_signers(r)?;
        let prologue = if flags & 2 != 0 {
            Some((r.fixed32()?, r.uint()?))
        } else {
            None
        };
        let linked = if flags & 4 != 0 {
            let n = r.array_len(32)?;
            (0..n).map(|_| r.fixed32()).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let user_data = if flags & 8 != 0 {
            Some(r.buffer()?.to_vec())
        } else {
            None
        };
        Ok(Manifest {
            version,
            allow_patch: flags & 1 != 0,
            quorum,
            signers,
            prologue,
            linked,
            user_data,
        })
    }

    /// Decodes a whole buffer as one manifest.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b, WHAT);
        let m = Manifest::decode(&mut r)?;
        if !r.is_empty() {
            return Err(Error::decode(WHAT, "trailing bytes"));
        }
        Ok(m)
    }

    /// `B256(MANIFEST || encode(manifest))`: the core key of a non-compat core.
    pub fn hash(&self) -> Hash {
        crypto::hash(&[&crypto::caps().manifest, &self.to_bytes()])
    }
}

fn encode_signers(w: &mut Writer, signers: &[ManifestSigner], as_array: bool) {
    if as_array {
        w.uint(signers.len() as u64);
    }
    for s in signers {
        w.uint(0).raw(&s.namespace).raw(&s.public_key);
    }
}

fn decode_signer(r: &mut Reader<'_>) -> Result<ManifestSigner> {
    match r.uint()? {
        0 => Ok(ManifestSigner {
            namespace: r.fixed32()?,
            public_key: r.fixed32()?,
        }),
        n => Err(Error::decode(WHAT, format!("unknown signature id {n}"))),
    }
}

fn decode_signers(r: &mut Reader<'_>) -> Result<Vec<ManifestSigner>> {
    let n = r.array_len(65)?;
    (0..n).map(|_| decode_signer(r)).collect()
}

/// Checks signatures of a core: built from its key and (for non-compat cores) its manifest.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: Key,
    manifest: Manifest,
    compat: bool,
}

impl Verifier {
    /// A verifier for `key` given the manifest the peer sent (or none). Refuses a manifest whose
    /// hash is not the key, unless it is the compat form (one signer whose public key is the key).
    /// With no manifest the core is taken to be compat, as JS does.
    pub fn new(key: Key, manifest: Option<Manifest>) -> Result<Self> {
        let manifest = manifest.unwrap_or_else(|| Manifest::single_signer(key.0));
        let compat = manifest.signers.len() == 1
            && manifest.signers.first().map(|s| s.public_key) == Some(key.0);
        if !compat && manifest.hash() != key.0 {
            return Err(Error::verification(
                "the manifest does not hash to the core key",
            ));
        }
        Ok(Verifier {
            key,
            manifest,
            compat,
        })
    }

    /// True for a compat core (key = public key, raw signatures over 80 bytes).
    pub fn is_compat(&self) -> bool {
        self.compat
    }

    /// The manifest (the compat default for compat cores).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bytes a signer signs for a tree of `length` blocks with `tree_hash` at `fork`.
    pub fn signable(&self, tree_hash: &Hash, length: u64, fork: u64) -> Vec<u8> {
        let tree = &crypto::caps().tree;
        let mut out = Vec::with_capacity(112);
        out.extend_from_slice(tree);
        if !self.compat {
            match (self.manifest.version, self.manifest.signers.first()) {
                (0, Some(s)) => out.extend_from_slice(&s.namespace),
                _ => out.extend_from_slice(&self.key.0),
            }
        }
        out.extend_from_slice(tree_hash);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&fork.to_le_bytes());
        out
    }

    /// Verifies `signature` for the tree `(tree_hash, length, fork)`.
    pub fn verify(
        &self,
        tree_hash: &Hash,
        length: u64,
        fork: u64,
        signature: Option<&[u8]>,
    ) -> Result<()> {
        if !self.compat && self.manifest.version >= 1 {
            if let Some((hash, plen)) = &self.manifest.prologue {
                if length <= *plen {
                    return if length == *plen && hash == tree_hash {
                        Ok(())
                    } else {
                        Err(Error::verification(
                            "tree does not match the manifest prologue",
                        ))
                    };
                }
            }
        }
        let sig = signature.ok_or_else(|| Error::verification("no signature"))?;
        let signable = self.signable(tree_hash, length, fork);
        let single_raw = self.compat
            || (self.manifest.version == 0
                && self.manifest.signers.len() == 1
                && !self.manifest.allow_patch);
        if single_raw {
            let pk = self
                .manifest
                .signers
                .first()
                .map(|s| s.public_key)
                .unwrap_or(self.key.0);
            return if crypto::verify_signature(&pk, &signable, sig) {
                Ok(())
            } else {
                Err(Error::verification("bad signature"))
            };
        }
        self.verify_multi(&signable, sig)
    }

    fn verify_multi(&self, signable: &[u8], sig: &[u8]) -> Result<()> {
        let quorum = self.manifest.quorum;
        if quorum == 0 {
            return Err(Error::verification("manifest has quorum 0"));
        }
        // The whole container is decoded first, as JS does (its proofs, then the patch
        // nodes), and must end there: bytes that no check reads would let a signature be
        // altered and still pass.
        let mut r = Reader::new(sig, "multisig");
        let n = r.array_len(66)?;
        let mut proofs = Vec::with_capacity(n);
        for _ in 0..n {
            let (signer, signature, patched) = if self.manifest.version == 0 {
                let flags = r.uint()?;
                let signer = r.uint()?;
                let s = r.fixed64()?;
                (signer, s, flags & 1 != 0)
            } else {
                let signer = r.uint()?;
                let s = r.fixed64()?;
                (signer, s, r.uint()? != 0)
            };
            if patched {
                return Err(Error::verification("patched signatures are not supported"));
            }
            proofs.push((signer, signature));
        }
        if r.array_len(34)? != 0 || !r.is_empty() {
            return Err(Error::verification(
                "the signature carries patch nodes or trailing bytes",
            ));
        }
        let mut used = vec![false; self.manifest.signers.len()];
        let mut valid = 0u64;
        for (signer, signature) in proofs {
            let idx = usize::try_from(signer).unwrap_or(usize::MAX);
            let (Some(slot), Some(s)) = (used.get_mut(idx), self.manifest.signers.get(idx)) else {
                return Err(Error::verification(format!(
                    "signature from unknown signer {signer}"
                )));
            };
            if *slot {
                return Err(Error::verification("two signatures from one signer"));
            }
            *slot = true;
            if !crypto::verify_signature(&s.public_key, signable, &signature) {
                return Err(Error::verification(format!(
                    "bad signature from signer {signer}"
                )));
            }
            valid += 1;
            if valid >= quorum {
                return Ok(());
            }
        }
        Err(Error::verification(format!(
            "{valid} valid signatures, quorum is {quorum}"
        )))
    }

    /// Produces the signature a core signed by `kp` carries (raw for compat and single-signer v0,
    /// the multisig container otherwise).
    pub fn sign(
        &self,
        kp: &crypto::KeyPair,
        tree_hash: &Hash,
        length: u64,
        fork: u64,
    ) -> Result<Vec<u8>> {
        let idx = self
            .manifest
            .signers
            .iter()
            .position(|s| s.public_key == kp.public_key())
            .ok_or_else(|| Error::invalid("this key pair is not a signer of the core"))?;
        let sig = kp.sign(&self.signable(tree_hash, length, fork));
        if self.compat || self.manifest.version == 0 {
            return Ok(sig.to_vec());
        }
        let mut w = Writer::with_capacity(68);
        w.uint(1).uint(idx as u64).raw(&sig).uint(0).uint(0);
        Ok(w.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_signer_vector() {
        let kp = crypto::KeyPair::from_seed(&[1u8; 32]);
        let m = Manifest::single_signer(kp.public_key());
        let bytes = m.to_bytes();
        assert_eq!(bytes.len(), 70);
        assert_eq!(
            hex::encode(&bytes),
            "0100000101004144eea531e483d54e0c14f4ca68e0644f355343ff6fcb0f005200e12cd747cb\
             8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        assert_eq!(
            hex::encode(m.hash()),
            "d8c3a0597903b28d751c6e0b7107775e388ec5a3cf669bdd1e7ec41b8b8f6e72"
        );
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
    }

    #[test]
    fn sign_and_verify_both_kinds() {
        let kp = crypto::KeyPair::generate();
        let th = crypto::hash(&[b"tree"]);
        let m = Manifest::single_signer(kp.public_key());
        let v = Verifier::new(Key(m.hash()), Some(m.clone())).unwrap();
        assert!(!v.is_compat());
        let sig = v.sign(&kp, &th, 5, 0).unwrap();
        assert_eq!(sig.len(), 68);
        v.verify(&th, 5, 0, Some(&sig)).unwrap();
        assert!(v.verify(&th, 6, 0, Some(&sig)).is_err());
        assert!(v.verify(&th, 5, 1, Some(&sig)).is_err());
        assert!(v.verify(&th, 5, 0, None).is_err());

        let c = Verifier::new(Key(kp.public_key()), None).unwrap();
        assert!(c.is_compat());
        let sig = c.sign(&kp, &th, 5, 0).unwrap();
        assert_eq!(sig.len(), 64);
        c.verify(&th, 5, 0, Some(&sig)).unwrap();
        // A signature of one kind does not pass as the other.
        assert!(v.verify(&th, 5, 0, Some(&sig)).is_err());
        // A foreign key pair's signature fails.
        let other = crypto::KeyPair::generate();
        let forged = Verifier::new(Key(other.public_key()), None)
            .unwrap()
            .sign(&other, &th, 5, 0)
            .unwrap();
        assert!(c.verify(&th, 5, 0, Some(&forged)).is_err());
        // A manifest that does not hash to the key is refused.
        assert!(Verifier::new(Key([7u8; 32]), Some(m)).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Manifest::from_bytes(&bytes);
        }
    }
}
