//! libsodium's `crypto_secretstream_xchacha20poly1305`, which `@hyperswarm/secret-stream`
//! uses for every data frame after the Noise handshake.
//!
//! State: a 32-byte key (HChaCha20 of the stream key and the first 16 header bytes) and a
//! 12-byte nonce = 4-byte counter (starts at 1) || 8-byte inonce (last 8 header bytes).
//! A message is `encrypted tag byte || ciphertext || 16-byte Poly1305 MAC` (17 bytes of overhead).
//! The MAC input reproduces libsodium byte for byte, including its padding of
//! `(0x10 - 64 + mlen) & 0xf` bytes after the ciphertext. After each message the inonce is
//! XORed with the MAC and the counter incremented; a wrapped counter or the REKEY tag rekeys.

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use poly1305::universal_hash::KeyInit;
use poly1305::Poly1305;

use crate::error::{Error, Result};

/// Bytes added to each message: one tag byte and a 16-byte MAC.
pub const ABYTES: usize = 17;
/// Header length.
pub const HEADERBYTES: usize = 24;
/// The ordinary message tag (the only one secret-stream sends).
pub const TAG_MESSAGE: u8 = 0;
/// Asks both sides to rekey after this message.
pub const TAG_REKEY: u8 = 2;

#[derive(Clone)]
struct State {
    key: [u8; 32],
    nonce: [u8; 12],
}

impl State {
    fn new(key: &[u8; 32], header: &[u8; HEADERBYTES]) -> Self {
        let mut input = [0u8; 16];
        input.copy_from_slice(&header[..16]);
        let sub = chacha20::hchacha::<chacha20::cipher::consts::U10>(key.into(), &input.into());
        let mut nonce = [0u8; 12];
        nonce[0] = 1;
        nonce[4..].copy_from_slice(&header[16..]);
        let mut k = [0u8; 32];
        k.copy_from_slice(&sub);
        State { key: k, nonce }
    }

    fn cipher(&self, block_counter: u32) -> ChaCha20 {
        let mut c = ChaCha20::new(&self.key.into(), &self.nonce.into());
        c.seek(u64::from(block_counter) * 64);
        c
    }

    /// MAC over `[tag block (64)] || ciphertext || pad || u64le(0) || u64le(64 + len)`.
    fn mac(&self, tag_block: &[u8; 64], ciphertext: &[u8]) -> [u8; 16] {
        let mut poly_key = [0u8; 32];
        self.cipher(0).apply_keystream(&mut poly_key);
        let pad = (0x10usize.wrapping_sub(64).wrapping_add(ciphertext.len())) & 0xf;
        let mut input = Vec::with_capacity(64 + ciphertext.len() + pad + 16);
        input.extend_from_slice(tag_block);
        input.extend_from_slice(ciphertext);
        input.resize(input.len() + pad, 0);
        input.extend_from_slice(&0u64.to_le_bytes());
        input.extend_from_slice(&(64 + ciphertext.len() as u64).to_le_bytes());
        let tag = Poly1305::new(&poly_key.into()).compute_unpadded(&input);
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag);
        out
    }

    fn advance(&mut self, mac: &[u8; 16], tag: u8) {
        for (n, m) in self.nonce[4..].iter_mut().zip(mac.iter()) {
            *n ^= m;
        }
        let mut counter =
            u32::from_le_bytes([self.nonce[0], self.nonce[1], self.nonce[2], self.nonce[3]]);
        counter = counter.wrapping_add(1);
        self.nonce[..4].copy_from_slice(&counter.to_le_bytes());
        if tag & TAG_REKEY != 0 || counter == 0 {
            self.rekey();
        }
    }

    fn rekey(&mut self) {
        let mut buf = [0u8; 40];
        buf[..32].copy_from_slice(&self.key);
        buf[32..].copy_from_slice(&self.nonce[4..]);
        self.cipher(0).apply_keystream(&mut buf);
        self.key.copy_from_slice(&buf[..32]);
        self.nonce[4..].copy_from_slice(&buf[32..]);
        self.nonce[..4].copy_from_slice(&1u32.to_le_bytes());
    }
}

/// The sending half.
#[derive(Clone)]
pub struct Push {
    state: State,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Push")
    }
}

impl Push {
    /// A new stream under `key`; returns the header the receiver needs.
    pub fn new(key: &[u8; 32]) -> (Self, [u8; HEADERBYTES]) {
        let mut header = [0u8; HEADERBYTES];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut header);
        (Self::with_header(key, &header), header)
    }

    /// A stream with a given header (tests and vectors).
    pub fn with_header(key: &[u8; 32], header: &[u8; HEADERBYTES]) -> Self {
        Push {
            state: State::new(key, header),
        }
    }

    /// Encrypts `msg` with `tag`, appending `msg.len() + ABYTES` bytes to `out`.
    pub fn push_into(&mut self, msg: &[u8], tag: u8, out: &mut Vec<u8>) {
        let mut block = [0u8; 64];
        block[0] = tag;
        self.state.cipher(1).apply_keystream(&mut block);
        let start = out.len();
        out.push(block[0]);
        out.extend_from_slice(msg);
        let body = start + 1;
        if let Some(c) = out.get_mut(body..) {
            self.state.cipher(2).apply_keystream(c);
        }
        let mac = self.state.mac(&block, out.get(body..).unwrap_or(&[]));
        out.extend_from_slice(&mac);
        self.state.advance(&mac, tag);
    }

    /// Encrypts `msg` as an ordinary message.
    pub fn push(&mut self, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + ABYTES);
        self.push_into(msg, TAG_MESSAGE, &mut out);
        out
    }
}

/// The receiving half.
#[derive(Clone)]
pub struct Pull {
    state: State,
}

impl std::fmt::Debug for Pull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pull")
    }
}

impl Pull {
    /// Starts receiving a stream under `key` with the sender's header.
    pub fn new(key: &[u8; 32], header: &[u8; HEADERBYTES]) -> Self {
        Pull {
            state: State::new(key, header),
        }
    }

    /// Decrypts one message in place; returns its tag and the plaintext range within `buf`.
    /// A short or forged message is an error and leaves the state unchanged.
    pub fn pull_in_place<'a>(&mut self, buf: &'a mut [u8]) -> Result<(u8, &'a mut [u8])> {
        let len = buf.len();
        if len < ABYTES {
            return Err(Error::crypto("encrypted message shorter than its overhead"));
        }
        let (head, rest) = buf.split_at_mut(1);
        let (c, stored_mac) = rest.split_at_mut(len - ABYTES);
        let mut block = [0u8; 64];
        block[0] = head.first().copied().unwrap_or(0);
        self.state.cipher(1).apply_keystream(&mut block);
        let tag = block[0];
        block[0] = head.first().copied().unwrap_or(0);
        let mac = self.state.mac(&block, c);
        // Constant-time comparison of the MAC.
        let diff = mac
            .iter()
            .zip(stored_mac.iter())
            .fold(0u8, |a, (x, y)| a | (x ^ y));
        if diff != 0 {
            return Err(Error::crypto("message authentication failed"));
        }
        self.state.cipher(2).apply_keystream(c);
        self.state.advance(&mac, tag);
        Ok((tag, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_and_tamper() {
        let key = [7u8; 32];
        let (mut push, header) = Push::new(&key);
        let mut pull = Pull::new(&key, &header);
        for i in 0..50usize {
            let msg = vec![i as u8; i * 7];
            let mut c = push.push(&msg);
            assert_eq!(c.len(), msg.len() + ABYTES);
            let (tag, m) = pull.pull_in_place(&mut c).unwrap();
            assert_eq!(tag, TAG_MESSAGE);
            assert_eq!(m, &msg[..]);
        }
        let mut c = push.push(b"hello");
        c[3] ^= 1;
        assert!(pull.pull_in_place(&mut c).is_err());
        assert!(pull.pull_in_place(&mut [0u8; 5]).is_err());
    }

    #[test]
    fn rekey_tag_keeps_both_sides_in_step() {
        let key = [3u8; 32];
        let (mut push, header) = Push::new(&key);
        let mut pull = Pull::new(&key, &header);
        let mut c = Vec::new();
        push.push_into(b"one", TAG_REKEY, &mut c);
        assert_eq!(pull.pull_in_place(&mut c).unwrap().0, TAG_REKEY);
        let mut c = push.push(b"two");
        assert_eq!(pull.pull_in_place(&mut c).unwrap().1, b"two");
    }

    proptest! {
        #[test]
        fn pull_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut pull = Pull::new(&[1u8; 32], &[2u8; 24]);
            let mut b = bytes;
            let _ = pull.pull_in_place(&mut b);
        }
    }
}
