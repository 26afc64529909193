//! Core keys and discovery keys, and their text forms.
//!
//! A [`Key`] is 32 bytes. It prints as z-base-32 (52 characters, as JS
//! `hypercore-id-encoding` and `core.id` do) and parses from z-base-32, 64 hex characters,
//! `hyper://KEY[/path]` and `pear://KEY[/path]`.

use std::fmt;
use std::str::FromStr;

use crate::crypto;
use crate::error::{Error, Result};

const Z32_ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// Encodes bytes as z-base-32: 5 bits at a time, most significant first, no padding.
pub fn z32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(Z32_ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(
            Z32_ALPHABET[((acc << (5 - bits)) & 31) as usize],
        ));
    }
    out
}

/// Decodes z-base-32; trailing bits that do not fill a byte are dropped.
pub fn z32_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = Z32_ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or_else(|| Error::InvalidKey {
                reason: format!("character {:?} is not z-base-32", char::from(c)),
            })?;
        acc = ((acc << 5) | v as u32) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// A 32-byte Hypercore key (the public identity of a core).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// Wraps raw bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Key(b)
    }
    /// From a slice that must be 32 bytes long.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = b.try_into().map_err(|_| Error::InvalidKey {
            reason: format!("a key is 32 bytes, got {}", b.len()),
        })?;
        Ok(Key(arr))
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The z-base-32 form (52 characters), as JS prints `core.id`.
    pub fn to_z32(&self) -> String {
        z32_encode(&self.0)
    }
    /// The lowercase hex form (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// `hyper://<z32>`.
    pub fn to_url(&self) -> String {
        format!("hyper://{}", self.to_z32())
    }
    /// The discovery key: BLAKE2b-256("hypercore", key = core key). Public; names the core on
    /// the wire without revealing the key.
    pub fn discovery_key(&self) -> DiscoveryKey {
        DiscoveryKey(crypto::hash_keyed(&self.0, &[b"hypercore"]))
    }
    /// Parses any accepted text form: z32, hex, `hyper://KEY[/...]`, `pear://KEY[/...]`.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        let body = ["hyper://", "pear://"]
            .iter()
            .find_map(|p| {
                t.get(..p.len())
                    .filter(|head| head.eq_ignore_ascii_case(p))
                    .map(|_| &t[p.len()..])
            })
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""))
            .unwrap_or(t);
        match body.len() {
            52 => {
                let bytes = z32_decode(body)?;
                let key = Key::from_slice(bytes.get(..32).unwrap_or(&bytes))?;
                // The last character carries one bit: a non-canonical spelling is refused so a
                // key has exactly one z32 form.
                if key.to_z32() != body {
                    return Err(Error::InvalidKey {
                        reason: "z-base-32 key is not in canonical form".into(),
                    });
                }
                Ok(key)
            }
            64 => {
                let bytes = hex::decode(body).map_err(|e| Error::InvalidKey {
                    reason: format!("bad hex: {e}"),
                })?;
                Key::from_slice(&bytes)
            }
            n => Err(Error::InvalidKey {
                reason: format!(
                    "expected 52 z-base-32 or 64 hex characters (optionally as hyper://KEY), got {n} characters"
                ),
            }),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z32())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.to_z32())
    }
}

impl FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Key::parse(s)
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_z32())
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Key::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The discovery key of a core: public, names the core on the wire (protomux channel id).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiscoveryKey(pub [u8; 32]);

impl DiscoveryKey {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// From a slice that must be 32 bytes long.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        Ok(DiscoveryKey(Key::from_slice(b)?.0))
    }
}

impl fmt::Debug for DiscoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiscoveryKey({})", hex::encode(self.0))
    }
}

impl fmt::Display for DiscoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PK: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
    const PK_Z32: &str = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";

    #[test]
    fn vectors_from_js() {
        let k = Key::parse(PK).unwrap();
        assert_eq!(k.to_z32(), PK_Z32);
        assert_eq!(
            hex::encode(k.discovery_key().0),
            "c1feb82a2b3ba065ffed9f6addcf19ac250793bcab748986a1b4272c62da20e6"
        );
        assert_eq!(Key::parse(PK_Z32).unwrap(), k);
        assert_eq!(
            Key::parse(&format!("hyper://{PK_Z32}/some/path")).unwrap(),
            k
        );
        assert_eq!(Key::parse(&format!("pear://{PK}")).unwrap(), k);
        assert_eq!(Key::parse(&k.to_url()).unwrap(), k);
    }

    #[test]
    fn malformed_keys_are_clear_errors() {
        for bad in [
            "",
            "abc",
            "hyper://",
            &PK[..63],
            &format!("{PK}0"),
            &PK_Z32.replace('t', "l"),
            &"z".repeat(64),
        ] {
            let e = Key::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidKey { .. }), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn z32_roundtrip(b in any::<[u8; 32]>()) {
            let k = Key(b);
            prop_assert_eq!(Key::parse(&k.to_z32()).unwrap(), k);
            prop_assert_eq!(Key::parse(&k.to_hex()).unwrap(), k);
        }

        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = Key::parse(&s);
        }
    }
}
