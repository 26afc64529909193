//! compact-encoding: [`Reader`] driven through a sequence of reads chosen by the input.
//!
//! Input: `u8 n · n op bytes · the buffer read`. Each op picks one reader method (low nibble)
//! and a size for the ones that take one (high nibble).

use apiary_core::encoding::{uint_len, Reader, Writer};

use crate::Input;

/// The target.
pub fn fuzz(data: &[u8]) {
    let mut input = Input::new(data);
    let ops = input.chunk8();
    let buf = input.rest();
    let mut r = Reader::new(buf, "fuzz");
    for &op in ops {
        let before = r.remaining();
        let arg = usize::from(op >> 4);
        match op & 0x0f {
            0 => {
                if let Ok(v) = r.uint() {
                    let used = before - r.remaining();
                    assert!(
                        used >= uint_len(v),
                        "a uint never takes fewer bytes than canonical"
                    );
                    let mut w = Writer::new();
                    w.uint(v);
                    assert_eq!(Reader::new(&w.buf, "again").uint().ok(), Some(v));
                }
            }
            1 => {
                let _ = r.len();
            }
            2 => {
                let _ = r.u8();
            }
            3 => {
                let _ = r.u16le();
            }
            4 => {
                let _ = r.u32le();
            }
            5 => {
                let _ = r.u64le();
            }
            6 => {
                let _ = r.bool();
            }
            7 => {
                let _ = r.fixed32();
            }
            8 => {
                let _ = r.fixed64();
            }
            9 => {
                if let Ok(b) = r.buffer() {
                    assert!(b.len() < before);
                }
            }
            10 => {
                if let Ok(Some(b)) = r.optional_buffer() {
                    assert!(!b.is_empty());
                }
            }
            11 => {
                if let Ok(s) = r.string() {
                    let mut w = Writer::new();
                    w.string(s);
                    assert_eq!(Reader::new(&w.buf, "again").string().ok(), Some(s));
                }
            }
            12 => {
                if let Ok(n) = r.array_len(arg) {
                    assert!(n as u64 <= apiary_core::encoding::MAX_ARRAY);
                    assert!(n.saturating_mul(arg.max(1)) <= r.remaining());
                }
            }
            13 => {
                if let Ok(b) = r.bytes(arg) {
                    assert_eq!(b.len(), arg);
                }
            }
            14 => {
                let rest = r.rest();
                assert_eq!(rest.len(), before);
            }
            _ => {
                assert_eq!(r.is_empty(), r.remaining() == 0);
            }
        }
        assert!(r.remaining() <= before, "a read never gives bytes back");
    }
}
