//! The encrypted transport of `core::wire::stream`: [`secret_stream`] on an in-memory socket
//! whose other end is the input (uint24le framing, the Noise handshake, the 56-byte stream
//! id header check, then secret-stream frames), with the session's messages read to the end.
//!
//! Input: `u8 mode · rest`. Mode bit 0: the side under test is the initiator. Bits 1-2:
//! - 0: `rest` is everything the remote sends (garbage from the first byte);
//! - 1: a genuine remote completes the handshake, then sends `rest` raw (the id header
//!   and what follows);
//! - 2: ... then a correct stream id with the first 24 bytes of `rest` as the secret-stream
//!   header, then the remainder raw;
//! - 3: ... then a genuine id header, then `rest` as `u8 op · u8 len · len bytes` pieces:
//!   op bit 0 set sends the piece as one genuine encrypted message (which must arrive, in
//!   order), clear sends it raw.

use apiary_core::crypto::{self, KeyPair};
use apiary_core::wire::noise::Handshake;
use apiary_core::wire::secret_stream;
use apiary_core::wire::secretstream::Push;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::Input;

fn frame(payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut out = n.to_le_bytes()[..3].to_vec();
    out.extend_from_slice(payload);
    out
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut len = [0u8; 3];
    r.read_exact(&mut len).await.ok()?;
    let n = usize::from(len[0]) | usize::from(len[1]) << 8 | usize::from(len[2]) << 16;
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

/// The stream id a side sends (`B256(NS_<role>; key = handshake hash)`).
fn stream_id(hash: &[u8; 64], initiator: bool) -> [u8; 32] {
    let ns = crypto::namespace("hyperswarm/secret-stream", 2);
    let n = ns.get(usize::from(!initiator)).copied().unwrap_or_default();
    crypto::hash_keyed(hash, &[&n])
}

/// The target.
pub fn fuzz(data: &[u8]) {
    run(data);
}

/// Runs one input; returns the messages the session delivered.
pub fn run(data: &[u8]) -> usize {
    let mut input = Input::new(data);
    let mode = input.u8();
    let initiator = mode & 1 != 0;
    let kind = (mode >> 1) & 3;
    // Well under the in-memory socket's buffer, so writing it never waits for a reader.
    let rest = input.bytes(1 << 18);
    crate::runtime().block_on(async move {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(secret_stream(
            ours,
            initiator,
            KeyPair::from_seed(&[1u8; 32]),
            "fuzz".into(),
        ));
        let (mut rd, mut wr) = tokio::io::split(theirs);
        // What the genuine messages of mode 3 should arrive as.
        let mut expected: Vec<Vec<u8>> = Vec::new();
        let remote = async {
            if kind == 0 {
                let _ = wr.write_all(rest).await;
                return;
            }
            let mut hs = Handshake::new(!initiator, KeyPair::from_seed(&[2u8; 32]));
            while !hs.is_complete() {
                if hs.is_our_turn() {
                    let m = hs.write_message().expect("a genuine handshake message");
                    if wr.write_all(&frame(&m)).await.is_err() {
                        return;
                    }
                } else {
                    let Some(m) = read_frame(&mut rd).await else {
                        return;
                    };
                    hs.read_message(&m).expect("the side under test is genuine");
                }
            }
            let res = hs.finish().expect("a complete handshake");
            let id = stream_id(&res.hash, !initiator);
            let out = match kind {
                1 => rest.to_vec(),
                2 => {
                    let mut input = Input::new(rest);
                    let mut header = id.to_vec();
                    header.extend_from_slice(&input.array::<24>());
                    let mut out = frame(&header);
                    out.extend_from_slice(input.rest());
                    out
                }
                _ => {
                    let (mut push, header) = Push::new(&res.tx);
                    let mut h = id.to_vec();
                    h.extend_from_slice(&header);
                    let mut out = frame(&h);
                    let mut input = Input::new(rest);
                    while !input.is_empty() {
                        let op = input.u8();
                        let piece = input.chunk8();
                        if op & 1 != 0 {
                            let c = push.push(piece);
                            out.extend_from_slice(&frame(&c));
                            if !piece.is_empty() {
                                expected.push(piece.to_vec()); // empty = keep-alive
                            }
                        } else {
                            out.extend_from_slice(piece);
                        }
                    }
                    out
                }
            };
            let _ = wr.write_all(&out).await;
        };
        remote.await;
        let _ = wr.shutdown().await;
        drop(wr);
        let session = server.await.expect("the handshake task does not panic");
        let Ok(mut session) = session else {
            return 0;
        };
        assert!(kind != 0, "a session came out of garbage");
        let mut got = Vec::new();
        while let Some(m) = session.incoming.recv().await {
            match m {
                Ok(m) => got.push(m),
                Err(_) => break,
            }
        }
        // Genuine messages arrive whole and in order, up to the first raw piece that broke
        // the stream.
        assert!(got.len() <= expected.len());
        assert_eq!(
            got[..],
            expected[..got.len()],
            "messages changed on the way"
        );
        drop(rd);
        got.len()
    })
}
