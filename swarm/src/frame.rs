//! The pipe protocol between Rust and the bridge child (`js/bridge.js`).
//!
//! Both directions (our writes go to the child's stdin, its frames come from its stdout)
//! carry frames of
//!
//! ```text
//! u32le  length of what follows (1 ..= MAX_BODY)
//! u8     kind: 0 = control, 1 = data
//! ...    control: one JSON object (UTF-8)
//!        data:    u32le connection id, then exactly one message (0 ..= MAX_MESSAGE bytes)
//! ```
//!
//! One data frame is one message of the connection: protomux reads each secret-stream message
//! as one frame, so boundaries are kept, never re-chunked. Control objects from the child
//! have an `ev` field (`ready`, `bootstrapped`, `connection`, `topic`, `closed`, `ack`,
//! `joined`, `stats`); ours have an `op` field (`init`, `join`, `leave`, `joinPeer`,
//! `leavePeer`, `ack`, `close`, `stats`, `shutdown`). Their fields are in `bridge.rs`.
//!
//! The child's side is trusted code, but its frames carry what remote peers sent, so the
//! reader checks everything: a frame over [`MAX_BODY`] (or a control object over
//! [`MAX_CONTROL`]) is read past and reported as [`Frame::Oversized`], so only its
//! connection ends; an unknown kind is an error (the bridge is restarted); a truncated frame
//! is the end of the stream.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest message one connection carries (what a secret-stream frame can hold).
pub const MAX_MESSAGE: usize = apiary_core::wire::stream::MAX_MESSAGE;
/// Largest frame body: kind, connection id and one message.
pub const MAX_BODY: usize = 1 + 4 + MAX_MESSAGE;
/// Largest control object we accept from the child.
pub const MAX_CONTROL: usize = 64 * 1024;

const KIND_CONTROL: u8 = 0;
const KIND_DATA: u8 = 1;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A control object (JSON text).
    Control(Vec<u8>),
    /// One message of a connection.
    Data {
        /// The bridge's connection id.
        conn: u32,
        /// The message.
        msg: Vec<u8>,
    },
    /// A frame over the limit; its bytes were read and dropped, so the next frame can be read.
    Oversized {
        /// The connection it was for, if it was a data frame.
        conn: Option<u32>,
        /// What it announced.
        len: usize,
    },
}

/// What can go wrong reading frames.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame of an unknown kind, or too short for its kind.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// Reading failed.
    #[error("reading the bridge: {0}")]
    Io(String),
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Control(body) => {
                out.extend_from_slice(&len32(body.len() + 1));
                out.push(KIND_CONTROL);
                out.extend_from_slice(body);
            }
            Frame::Data { conn, msg } => encode_data(*conn, msg, out),
            Frame::Oversized { .. } => {}
        }
    }

    /// Decodes a frame body (what follows the length).
    pub fn decode_body(mut body: Vec<u8>) -> Result<Frame, FrameError> {
        match body.first().copied() {
            Some(KIND_CONTROL) => {
                if body.len() - 1 > MAX_CONTROL {
                    return Ok(Frame::Oversized {
                        conn: None,
                        len: body.len(),
                    });
                }
                body.remove(0);
                Ok(Frame::Control(body))
            }
            Some(KIND_DATA) => {
                let Some(id) = body.get(1..5) else {
                    return Err(FrameError::Malformed("short data frame".into()));
                };
                let conn = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
                body.drain(..5);
                Ok(Frame::Data { conn, msg: body })
            }
            Some(k) => Err(FrameError::Malformed(format!("unknown kind {k}"))),
            None => Err(FrameError::Malformed("empty frame".into())),
        }
    }
}

/// Appends a data frame without building a [`Frame`] (the hot path).
pub fn encode_data(conn: u32, msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&len32(msg.len() + 5));
    out.push(KIND_DATA);
    out.extend_from_slice(&conn.to_le_bytes());
    out.extend_from_slice(msg);
}

fn len32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

/// Reads the next frame; `Ok(None)` at a clean end of the stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let dst = len.get_mut(got..).unwrap_or_default();
        match r.read(dst).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) => return Err(FrameError::Io(e.to_string())),
        }
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_BODY {
        return skip_oversized(r, n).await.map(Some);
    }
    if n == 0 {
        return Err(FrameError::Malformed("empty frame".into()));
    }
    // Grown as bytes arrive, so an announced 16 MiB costs nothing until it is there.
    let mut body = Vec::new();
    while body.len() < n {
        let at = body.len();
        let step = (n - at).min((64 * 1024).max(at));
        body.resize(at + step, 0);
        r.read_exact(body.get_mut(at..).unwrap_or_default())
            .await
            .map_err(eof)?;
    }
    Frame::decode_body(body).map(Some)
}

/// Reads past a frame of `n` bytes (over the limit), keeping its connection id.
async fn skip_oversized<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> Result<Frame, FrameError> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await.map_err(eof)?;
    let conn =
        (head[0] == KIND_DATA).then(|| u32::from_le_bytes([head[1], head[2], head[3], head[4]]));
    let rest = (n - head.len()) as u64;
    let skipped = tokio::io::copy(&mut r.take(rest), &mut tokio::io::sink())
        .await
        .map_err(eof)?;
    if skipped < rest {
        return Err(FrameError::Truncated);
    }
    Ok(Frame::Oversized { conn, len: n })
}

fn eof(e: std::io::Error) -> FrameError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(Frame::Control),
            (
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..2000)
            )
                .prop_map(|(conn, msg)| Frame::Data { conn, msg }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec(frame(), 0..20)) {
            let mut wire = Vec::new();
            for f in &frames {
                f.encode_into(&mut wire);
            }
            let got = rt().block_on(async {
                let mut r = &wire[..];
                let mut out = Vec::new();
                while let Some(f) = read_frame(&mut r).await.unwrap() {
                    out.push(f);
                }
                out
            });
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn any_bytes_are_frames_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            rt().block_on(async {
                let mut r = &bytes[..];
                // Never a panic; ends with a clean end or an error.
                while let Ok(Some(_)) = read_frame(&mut r).await {}
            });
        }

        #[test]
        fn a_cut_frame_is_truncated(msg in proptest::collection::vec(any::<u8>(), 1..500), cut in 1usize..500) {
            let mut wire = Vec::new();
            encode_data(7, &msg, &mut wire);
            let cut = cut.min(wire.len() - 1);
            let r = rt().block_on(async { read_frame(&mut &wire[..cut]).await });
            prop_assert_eq!(r, Err(FrameError::Truncated));
        }
    }

    #[test]
    fn an_oversized_frame_is_skipped_and_the_next_one_read() {
        let n = MAX_BODY + 10;
        let mut wire = Vec::with_capacity(n + 100);
        wire.extend_from_slice(&(n as u32).to_le_bytes());
        wire.push(KIND_DATA);
        wire.extend_from_slice(&9u32.to_le_bytes());
        wire.resize(4 + n, 0xaa);
        encode_data(3, b"after", &mut wire);
        rt().block_on(async {
            let mut r = &wire[..];
            let f = read_frame(&mut r).await.unwrap();
            assert_eq!(
                f,
                Some(Frame::Oversized {
                    conn: Some(9),
                    len: n
                })
            );
            let f = read_frame(&mut r).await.unwrap();
            assert_eq!(
                f,
                Some(Frame::Data {
                    conn: 3,
                    msg: b"after".to_vec()
                })
            );
        });
        // Announced but not there: truncated.
        let r = rt().block_on(read_frame(&mut &wire[..1000]));
        assert_eq!(r, Err(FrameError::Truncated));
    }

    #[test]
    fn unknown_frames_are_errors() {
        let wire = [2u8, 0, 0, 0, 9, 9];
        let r = rt().block_on(read_frame(&mut &wire[..]));
        assert!(matches!(r, Err(FrameError::Malformed(_))), "{r:?}");
        let wire = [3u8, 0, 0, 0, 1, 1, 1];
        let r = rt().block_on(read_frame(&mut &wire[..]));
        assert!(matches!(r, Err(FrameError::Malformed(_))), "{r:?}");
    }
}
