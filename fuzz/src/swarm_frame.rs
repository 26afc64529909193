//! The DHT bridge's pipe frames: [`read_frame`] (apiary-swarm) over a reader that hands the
//! input over in pieces of input-chosen sizes, until the end or the first error. Frames read
//! re-encode to the bytes they came from.
//!
//! Input: `u8 piece size (0 = all at once) · the pipe's bytes`.

use std::pin::Pin;
use std::task::{Context, Poll};

use apiary_swarm::frame::{read_frame, Frame};
use tokio::io::{AsyncRead, ReadBuf};

use crate::Input;

/// A reader that returns at most `piece` bytes per read.
struct Pieces<'a> {
    data: &'a [u8],
    piece: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.piece.min(buf.remaining()).min(self.data.len());
        let (a, b) = self.data.split_at(n);
        buf.put_slice(a);
        self.data = b;
        Poll::Ready(Ok(()))
    }
}

/// The target.
pub fn fuzz(data: &[u8]) {
    let mut input = Input::new(data);
    let piece = match input.u8() {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let bytes = input.rest();
    crate::runtime().block_on(async {
        let mut r = Pieces { data: bytes, piece };
        let mut consumed = 0usize;
        loop {
            let before = r.data.len();
            match read_frame(&mut r).await {
                Ok(Some(f)) => {
                    let used = before - r.data.len();
                    let mut again = Vec::new();
                    f.encode_into(&mut again);
                    if !matches!(f, Frame::Oversized { .. }) {
                        assert_eq!(
                            again[..],
                            bytes[consumed..consumed + used],
                            "a frame re-encodes differently"
                        );
                    }
                    consumed += used;
                }
                Ok(None) => {
                    assert!(r.data.is_empty());
                    break;
                }
                Err(_) => break,
            }
        }
    });
}
