//! compact-encoding, the byte format of every Hypercore and protomux message.
//!
//! Format (JS `compact-encoding`):
//! - `uint`: `<= 0xfc` one byte; else a marker byte `0xfd` + u16 LE, `0xfe` + u32 LE,
//!   `0xff` + u64 LE. Not LEB128.
//! - `buffer`/`string`: `uint` length + bytes. `optionalBuffer`: length 0 means "absent".
//! - `fixed32`/`fixed64`: raw bytes, no length. `array(x)`: `uint` count + items
//!   (JS refuses more than 0x100000 items, so do we).
//!
//! [`Reader`] never panics: every read is bounds-checked and returns a [`Error::Decode`].

use crate::error::{Error, Result};

/// JS `compact-encoding` refuses arrays longer than this.
pub const MAX_ARRAY: u64 = 0x100000;

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`; `what` names the message in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn err(&self, reason: &str) -> Error {
        Error::decode(self.what, format!("{reason} at byte {}", self.pos))
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Takes the next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("unexpected end"))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.err("unexpected end"))?;
        self.pos = end;
        Ok(out)
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?.first().copied().unwrap_or(0))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// Fixed little-endian u16.
    pub fn u16le(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.fixed()?))
    }
    /// Fixed little-endian u32.
    pub fn u32le(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }
    /// Fixed little-endian u64.
    pub fn u64le(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }

    /// A compact `uint`.
    pub fn uint(&mut self) -> Result<u64> {
        match self.u8()? {
            0xfd => Ok(u64::from(self.u16le()?)),
            0xfe => Ok(u64::from(self.u32le()?)),
            0xff => self.u64le(),
            b => Ok(u64::from(b)),
        }
    }

    /// A compact `uint` that must fit a `usize` (lengths, counts).
    pub fn len(&mut self) -> Result<usize> {
        let v = self.uint()?;
        usize::try_from(v).map_err(|_| self.err("length too large"))
    }

    /// A `bool` (1 = true, anything else false, as JS decodes it).
    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.u8()? == 1)
    }

    /// 32 raw bytes.
    pub fn fixed32(&mut self) -> Result<[u8; 32]> {
        self.fixed()
    }
    /// 64 raw bytes.
    pub fn fixed64(&mut self) -> Result<[u8; 64]> {
        self.fixed()
    }

    /// A length-prefixed buffer.
    pub fn buffer(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.bytes(n)
    }

    /// A length-prefixed buffer where length 0 means absent.
    pub fn optional_buffer(&mut self) -> Result<Option<&'a [u8]>> {
        let b = self.buffer()?;
        Ok(if b.is_empty() { None } else { Some(b) })
    }

    /// A length-prefixed UTF-8 string.
    pub fn string(&mut self) -> Result<&'a str> {
        let b = self.buffer()?;
        std::str::from_utf8(b).map_err(|_| self.err("invalid utf-8"))
    }

    /// An array count, refused above [`MAX_ARRAY`] and above what the remaining bytes can hold
    /// (each item is at least `min_item` bytes), so a hostile count cannot make us allocate.
    pub fn array_len(&mut self, min_item: usize) -> Result<usize> {
        let n = self.uint()?;
        if n > MAX_ARRAY {
            return Err(self.err("array too big"));
        }
        let n = n as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(self.err("array longer than the message"));
        }
        Ok(n)
    }
}

/// Appends compact-encoded values to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// A writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    /// The written bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// A compact `uint`.
    pub fn uint(&mut self, v: u64) -> &mut Self {
        if v <= 0xfc {
            self.buf.push(v as u8);
        } else if v <= 0xffff {
            self.buf.push(0xfd);
            self.buf.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= 0xffff_ffff {
            self.buf.push(0xfe);
            self.buf.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            self.buf.push(0xff);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self
    }
    /// A `bool`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    /// Raw bytes, no length.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// A length-prefixed buffer.
    pub fn buffer(&mut self, b: &[u8]) -> &mut Self {
        self.uint(b.len() as u64);
        self.raw(b)
    }
    /// A length-prefixed buffer, empty when absent.
    pub fn optional_buffer(&mut self, b: Option<&[u8]>) -> &mut Self {
        self.buffer(b.unwrap_or(&[]))
    }
    /// A length-prefixed UTF-8 string.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.buffer(s.as_bytes())
    }
}

/// The encoded size of a compact `uint`.
pub fn uint_len(v: u64) -> usize {
    if v <= 0xfc {
        1
    } else if v <= 0xffff {
        3
    } else if v <= 0xffff_ffff {
        5
    } else {
        9
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uint_vectors() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0]),
            (0xfc, &[0xfc]),
            (0xfd, &[0xfd, 0xfd, 0]),
            (0xffff, &[0xfd, 0xff, 0xff]),
            (0x10000, &[0xfe, 0, 0, 1, 0]),
            (0x1_0000_0000, &[0xff, 0, 0, 0, 0, 1, 0, 0, 0]),
        ];
        for (v, bytes) in cases {
            let mut w = Writer::new();
            w.uint(*v);
            assert_eq!(&w.buf, bytes, "encode {v}");
            assert_eq!(uint_len(*v), bytes.len());
            assert_eq!(Reader::new(bytes, "t").uint().unwrap(), *v);
        }
    }

    #[test]
    fn optional_buffer_empty_is_none() {
        let mut w = Writer::new();
        w.optional_buffer(Some(&[]))
            .optional_buffer(None)
            .optional_buffer(Some(b"ab"));
        let mut r = Reader::new(&w.buf, "t");
        assert_eq!(r.optional_buffer().unwrap(), None);
        assert_eq!(r.optional_buffer().unwrap(), None);
        assert_eq!(r.optional_buffer().unwrap(), Some(&b"ab"[..]));
        assert!(r.is_empty());
    }

    #[test]
    fn hostile_array_count_is_refused() {
        let mut w = Writer::new();
        w.uint(0x100001);
        assert!(Reader::new(&w.buf, "t").array_len(1).is_err());
        let mut w = Writer::new();
        w.uint(1000);
        assert!(Reader::new(&w.buf, "t").array_len(1).is_err());
    }

    proptest! {
        #[test]
        fn uint_roundtrip(v in any::<u64>()) {
            let mut w = Writer::new();
            w.uint(v);
            prop_assert_eq!(w.buf.len(), uint_len(v));
            prop_assert_eq!(Reader::new(&w.buf, "t").uint().unwrap(), v);
        }

        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes, "t");
            let _ = r.uint();
            let _ = r.buffer();
            let _ = r.string();
            let _ = r.array_len(8);
            let _ = r.fixed32();
            let _ = r.optional_buffer();
        }
    }
}
