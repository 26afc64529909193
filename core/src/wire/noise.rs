//! Noise XX over Ed25519, as `@hyperswarm/secret-stream` speaks it
//! (`Noise_XX_Ed25519_ChaChaPoly_BLAKE2b`, JS `noise-handshake` + `noise-curve-ed`).
//!
//! - Hash: BLAKE2b-512 (HASHLEN 64); HMAC over it with a 128-byte block; HKDF with empty info.
//! - `h` starts as the protocol name zero-padded to 64 bytes, `ck = h`, then the empty prologue
//!   is still mixed in (`h = B512(h)`).
//! - DH: both static and ephemeral keys are Ed25519 key pairs. The scalar is the clamped first
//!   half of SHA-512(seed); the result is `scalar · remote point`, compressed (libsodium
//!   `crypto_scalarmult_ed25519_noclamp`). Points of small order or outside the prime-order
//!   subgroup are refused, as libsodium does.
//! - Cipher: ChaCha20-Poly1305 (IETF), nonce = 4 zero bytes || u64 LE counter, AD = `h`.
//!
//! Messages (all payloads empty): `-> e` (32 bytes), `<- e, ee, s, es` (96), `-> s, se` (64).
//! `split()` gives initiator `tx = k1, rx = k2` (responder swapped); the handshake hash is the
//! final `h`.

use blake2::digest::consts::U64;
use blake2::digest::{FixedOutput, Update};
use blake2::Blake2b;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

use crate::crypto::KeyPair;
use crate::error::{Error, Result};

const PROTOCOL_NAME: &[u8] = b"Noise_XX_Ed25519_ChaChaPoly_BLAKE2b";

type H64 = [u8; 64];

fn b512(parts: &[&[u8]]) -> H64 {
    let mut h = Blake2b::<U64>::default();
    for p in parts {
        Update::update(&mut h, p);
    }
    h.finalize_fixed().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> H64 {
    let mut k = [0u8; 128];
    if key.len() > 128 {
        k[..64].copy_from_slice(&b512(&[key]));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let mut inner_parts: Vec<&[u8]> = vec![&ipad];
    inner_parts.extend_from_slice(parts);
    let inner = b512(&inner_parts);
    b512(&[&opad, &inner])
}

fn hkdf(ck: &[u8], ikm: &[u8]) -> (H64, H64) {
    let prk = hmac(ck, &[ikm]);
    let t1 = hmac(&prk, &[&[1u8]]);
    let t2 = hmac(&prk, &[&t1, &[2u8]]);
    (t1, t2)
}

/// Ed25519 Diffie-Hellman as `noise-curve-ed` computes it.
fn dh(local: &KeyPair, remote_public: &[u8; 32]) -> Result<[u8; 32]> {
    let compressed = CompressedEdwardsY(*remote_public);
    let point = compressed
        .decompress()
        .filter(|p| p.compress() == compressed && !p.is_small_order() && p.is_torsion_free())
        .ok_or_else(|| Error::crypto("remote Noise key is not a valid Ed25519 point"))?;
    let digest = Sha512::digest(local.seed());
    let mut scalar = [0u8; 32];
    scalar.copy_from_slice(&digest[..32]);
    scalar[0] &= 248;
    scalar[31] &= 127;
    scalar[31] |= 64;
    // The point is in the prime-order subgroup, so reducing the scalar mod l changes nothing.
    let shared = (Scalar::from_bytes_mod_order(scalar) * point)
        .compress()
        .to_bytes();
    if shared == [0u8; 32]
        || shared
            == curve25519_dalek::edwards::EdwardsPoint::default()
                .compress()
                .to_bytes()
    {
        return Err(Error::crypto("Noise DH gave the identity"));
    }
    Ok(shared)
}

struct Symmetric {
    h: H64,
    ck: H64,
    key: Option<[u8; 32]>,
    nonce: u64,
}

impl Symmetric {
    fn new() -> Self {
        let mut h = [0u8; 64];
        h[..PROTOCOL_NAME.len()].copy_from_slice(PROTOCOL_NAME);
        let mut s = Symmetric {
            h,
            ck: h,
            key: None,
            nonce: 0,
        };
        s.mix_hash(&[]); // empty prologue
        s
    }
    fn mix_hash(&mut self, data: &[u8]) {
        self.h = b512(&[&self.h, data]);
    }
    fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, tk) = hkdf(&self.ck, ikm);
        self.ck = ck;
        let mut k = [0u8; 32];
        k.copy_from_slice(&tk[..32]);
        self.key = Some(k);
        self.nonce = 0;
    }
    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.nonce.to_le_bytes());
        n
    }
    fn encrypt_and_hash(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let ct = match &self.key {
            None => plain.to_vec(),
            Some(k) => {
                let c = ChaCha20Poly1305::new(k.into())
                    .encrypt(
                        &self.nonce().into(),
                        Payload {
                            msg: plain,
                            aad: &self.h,
                        },
                    )
                    .map_err(|_| Error::crypto("Noise encryption failed"))?;
                self.nonce += 1;
                c
            }
        };
        self.mix_hash(&ct);
        out.extend_from_slice(&ct);
        Ok(())
    }
    fn decrypt_and_hash(&mut self, ct: &[u8]) -> Result<Vec<u8>> {
        let plain = match &self.key {
            None => ct.to_vec(),
            Some(k) => {
                let p = ChaCha20Poly1305::new(k.into())
                    .decrypt(
                        &self.nonce().into(),
                        Payload {
                            msg: ct,
                            aad: &self.h,
                        },
                    )
                    .map_err(|_| Error::crypto("Noise handshake message failed to decrypt"))?;
                self.nonce += 1;
                p
            }
        };
        self.mix_hash(ct);
        Ok(plain)
    }
    fn split(&self) -> ([u8; 32], [u8; 32]) {
        let (a, b) = hkdf(&self.ck, &[]);
        let mut k1 = [0u8; 32];
        let mut k2 = [0u8; 32];
        k1.copy_from_slice(&a[..32]);
        k2.copy_from_slice(&b[..32]);
        (k1, k2)
    }
}

/// What a finished handshake yields.
#[derive(Clone)]
pub struct HandshakeResult {
    /// Key for what we send.
    pub tx: [u8; 32],
    /// Key for what we receive.
    pub rx: [u8; 32],
    /// The final handshake hash (keys stream ids and replication capabilities).
    pub hash: [u8; 64],
    /// The remote's static Ed25519 public key.
    pub remote_public_key: [u8; 32],
}

impl std::fmt::Debug for HandshakeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HandshakeResult(remote {})",
            hex::encode(self.remote_public_key)
        )
    }
}

/// One side of a Noise XX handshake.
pub struct Handshake {
    initiator: bool,
    sym: Symmetric,
    s: KeyPair,
    e: KeyPair,
    re: Option<[u8; 32]>,
    rs: Option<[u8; 32]>,
    step: u8,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Handshake(initiator {}, step {})",
            self.initiator, self.step
        )
    }
}

fn key32(b: &[u8]) -> Result<[u8; 32]> {
    b.try_into()
        .map_err(|_| Error::crypto("bad Noise key length"))
}

impl Handshake {
    /// Starts a handshake with our static key pair.
    pub fn new(initiator: bool, static_keys: KeyPair) -> Self {
        Handshake {
            initiator,
            sym: Symmetric::new(),
            s: static_keys,
            e: KeyPair::generate(),
            re: None,
            rs: None,
            step: 0,
        }
    }

    /// True when it is our turn to send.
    pub fn is_our_turn(&self) -> bool {
        match self.step {
            0 | 2 => self.initiator,
            1 => !self.initiator,
            _ => false,
        }
    }

    /// True once all three messages have passed.
    pub fn is_complete(&self) -> bool {
        self.step >= 3
    }

    fn remote(&self, k: Option<[u8; 32]>) -> Result<[u8; 32]> {
        k.ok_or_else(|| Error::crypto("Noise key missing"))
    }

    /// Writes our next handshake message.
    pub fn write_message(&mut self) -> Result<Vec<u8>> {
        if !self.is_our_turn() {
            return Err(Error::crypto("not our turn in the Noise handshake"));
        }
        let mut out = Vec::with_capacity(96);
        match self.step {
            0 => {
                let e = self.e.public_key();
                out.extend_from_slice(&e);
                self.sym.mix_hash(&e);
            }
            1 => {
                let e = self.e.public_key();
                out.extend_from_slice(&e);
                self.sym.mix_hash(&e);
                let re = self.remote(self.re)?;
                self.sym.mix_key(&dh(&self.e, &re)?); // ee
                self.sym.encrypt_and_hash(&self.s.public_key(), &mut out)?; // s
                self.sym.mix_key(&dh(&self.s, &re)?); // es (responder: s, re)
            }
            _ => {
                self.sym.encrypt_and_hash(&self.s.public_key(), &mut out)?; // s
                let re = self.remote(self.re)?;
                self.sym.mix_key(&dh(&self.s, &re)?); // se (initiator: s, re)
            }
        }
        self.sym.encrypt_and_hash(&[], &mut out)?; // empty payload
        self.step += 1;
        Ok(out)
    }

    /// Reads the remote's next handshake message.
    pub fn read_message(&mut self, msg: &[u8]) -> Result<()> {
        if self.is_our_turn() || self.is_complete() {
            return Err(Error::crypto("unexpected Noise handshake message"));
        }
        let expected = [32usize, 96, 64][usize::from(self.step.min(2))];
        if msg.len() != expected {
            return Err(Error::crypto(format!(
                "Noise message {} has {} bytes, expected {expected}",
                self.step + 1,
                msg.len()
            )));
        }
        let (head, rest) = msg.split_at(if self.step == 2 { 0 } else { 32 });
        match self.step {
            0 => {
                self.re = Some(key32(head)?);
                self.sym.mix_hash(head);
            }
            1 => {
                let re = key32(head)?;
                self.re = Some(re);
                self.sym.mix_hash(head);
                self.sym.mix_key(&dh(&self.e, &re)?); // ee
                let (s, _) = rest.split_at(48);
                let rs = key32(&self.sym.decrypt_and_hash(s)?)?;
                self.rs = Some(rs);
                self.sym.mix_key(&dh(&self.e, &rs)?); // es (initiator: e, rs)
            }
            _ => {
                let (s, _) = rest.split_at(48);
                let rs = key32(&self.sym.decrypt_and_hash(s)?)?;
                self.rs = Some(rs);
                self.sym.mix_key(&dh(&self.e, &rs)?); // se (responder: e, rs)
            }
        }
        let payload = match self.step {
            0 => rest,
            _ => rest.get(48..).unwrap_or(&[]),
        };
        self.sym.decrypt_and_hash(payload)?;
        self.step += 1;
        Ok(())
    }

    /// The keys and hash, once complete.
    pub fn finish(&self) -> Result<HandshakeResult> {
        if !self.is_complete() {
            return Err(Error::crypto("Noise handshake not complete"));
        }
        let (k1, k2) = self.sym.split();
        let (tx, rx) = if self.initiator { (k1, k2) } else { (k2, k1) };
        Ok(HandshakeResult {
            tx,
            rx,
            hash: self.sym.h,
            remote_public_key: self.remote(self.rs)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair() -> (Handshake, Handshake) {
        (
            Handshake::new(true, KeyPair::generate()),
            Handshake::new(false, KeyPair::generate()),
        )
    }

    #[test]
    fn handshake_agrees() {
        let ks = KeyPair::generate();
        let kr = KeyPair::generate();
        let mut i = Handshake::new(true, ks.clone());
        let mut r = Handshake::new(false, kr.clone());
        let m1 = i.write_message().unwrap();
        assert_eq!(m1.len(), 32);
        r.read_message(&m1).unwrap();
        let m2 = r.write_message().unwrap();
        assert_eq!(m2.len(), 96);
        i.read_message(&m2).unwrap();
        let m3 = i.write_message().unwrap();
        assert_eq!(m3.len(), 64);
        r.read_message(&m3).unwrap();
        let a = i.finish().unwrap();
        let b = r.finish().unwrap();
        assert_eq!(a.tx, b.rx);
        assert_eq!(a.rx, b.tx);
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.remote_public_key, kr.public_key());
        assert_eq!(b.remote_public_key, ks.public_key());
    }

    #[test]
    fn tampered_messages_fail() {
        let (mut i, mut r) = pair();
        r.read_message(&i.write_message().unwrap()).unwrap();
        let mut m2 = r.write_message().unwrap();
        m2[40] ^= 1;
        assert!(i.read_message(&m2).is_err());
        let (mut i, mut r) = pair();
        assert!(r.read_message(&[0u8; 31]).is_err());
        assert!(r.read_message(&[0u8; 32]).is_ok()); // a point is only checked at DH time
        assert!(r.write_message().is_err()); // the all-zero point is refused
        assert!(i.read_message(&[0u8; 32]).is_err()); // not its turn
    }

    proptest! {
        #[test]
        fn arbitrary_messages_never_panic(m1 in proptest::collection::vec(any::<u8>(), 0..100),
                                          m2 in proptest::collection::vec(any::<u8>(), 0..100)) {
            let (mut i, mut r) = pair();
            let _ = r.read_message(&m1);
            let _ = r.write_message();
            let _ = i.write_message();
            let _ = i.read_message(&m2);
            let _ = i.write_message();
            let _ = i.finish();
        }
    }
}
