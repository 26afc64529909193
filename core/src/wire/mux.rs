//! Protomux framing: many channels inside one encrypted stream (JS `protomux`).
//!
//! Each plaintext message is one frame `uint channel || uint type || payload`, where `channel`
//! is the *sender's* local id (1-based) and channel 0 is control:
//! ```text
//! 00 00 uint firstChannel (uint len · item)*   batch; len 0 = "switch to channel uint"
//! 00 01 uint localId · string protocol · optionalBuffer id · handshake(rest)   open
//! 00 02 uint remoteId                           reject (the opener's id)
//! 00 03 uint localId                            close
//! ```
//! A batch item is `uint type || payload` of the current channel (control items included,
//! with their leading `00` stripped). [`decode_frame`] flattens batches into a list of
//! [`MuxMessage`]s; the encoders build frames and batches.

use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};

/// One thing a frame said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxMessage {
    /// The remote opened a channel.
    Open {
        /// The remote's id for it.
        remote_id: u64,
        /// Protocol name, e.g. `hypercore/alpha`.
        protocol: String,
        /// Channel id bytes (a discovery key for hypercore).
        id: Option<Vec<u8>>,
        /// The protocol's handshake bytes.
        handshake: Vec<u8>,
    },
    /// The remote refused our open of `local_id`.
    Reject {
        /// Our id of the refused channel.
        local_id: u64,
    },
    /// The remote closed its channel `remote_id`.
    Close {
        /// The remote's id.
        remote_id: u64,
    },
    /// A message on a channel.
    Message {
        /// The remote's id of the channel.
        remote_id: u64,
        /// Message type within the channel's protocol.
        ty: u64,
        /// The encoded message.
        payload: Vec<u8>,
    },
}

const WHAT: &str = "protomux frame";
const MAX_DEPTH: u8 = 2;

/// Decodes one plaintext frame (empty frames decode to nothing).
pub fn decode_frame(frame: &[u8]) -> Result<Vec<MuxMessage>> {
    let mut out = Vec::new();
    if frame.is_empty() {
        return Ok(out);
    }
    let mut r = Reader::new(frame, WHAT);
    let channel = r.uint()?;
    decode_item(channel, &mut r, &mut out, 0)?;
    Ok(out)
}

/// Decodes `uint type || body` of `channel` from the rest of `r`.
fn decode_item(
    channel: u64,
    r: &mut Reader<'_>,
    out: &mut Vec<MuxMessage>,
    depth: u8,
) -> Result<()> {
    let ty = r.uint()?;
    if channel != 0 {
        out.push(MuxMessage::Message {
            remote_id: channel,
            ty,
            payload: r.rest().to_vec(),
        });
        return Ok(());
    }
    match ty {
        0 => {
            if depth >= MAX_DEPTH {
                return Err(Error::decode(WHAT, "nested batch"));
            }
            let mut current = r.uint()?;
            while !r.is_empty() {
                let len = r.len()?;
                if len == 0 {
                    current = r.uint()?;
                    continue;
                }
                let item = r.bytes(len)?;
                decode_item(current, &mut Reader::new(item, WHAT), out, depth + 1)?;
            }
        }
        1 => {
            let remote_id = r.uint()?;
            let protocol = r.string()?.to_owned();
            let id = r.optional_buffer()?.map(<[u8]>::to_vec);
            out.push(MuxMessage::Open {
                remote_id,
                protocol,
                id,
                handshake: r.rest().to_vec(),
            });
        }
        2 => out.push(MuxMessage::Reject {
            local_id: r.uint()?,
        }),
        3 => out.push(MuxMessage::Close {
            remote_id: r.uint()?,
        }),
        _ => {} // unknown control messages are ignored, as JS does
    }
    Ok(())
}

/// `00 01 ...`: open `local_id` for `protocol`/`id` with `handshake`.
pub fn encode_open(local_id: u64, protocol: &str, id: Option<&[u8]>, handshake: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(64 + handshake.len());
    w.uint(0)
        .uint(1)
        .uint(local_id)
        .string(protocol)
        .optional_buffer(id)
        .raw(handshake);
    w.finish()
}

/// `00 02 remote_id`: refuse the remote's open.
pub fn encode_reject(remote_id: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(0).uint(2).uint(remote_id);
    w.finish()
}

/// `00 03 local_id`: close our channel.
pub fn encode_close(local_id: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(0).uint(3).uint(local_id);
    w.finish()
}

/// A message of type `ty` on our channel `local_id`.
pub fn encode_message(local_id: u64, ty: u64, payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(payload.len() + 4);
    w.uint(local_id).uint(ty).raw(payload);
    w.finish()
}

/// Collects channel messages into one batch frame.
#[derive(Debug, Default)]
pub struct Batch {
    w: Writer,
    current: Option<u64>,
    count: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a message of type `ty` on our channel `local_id`.
    pub fn push(&mut self, local_id: u64, ty: u64, payload: &[u8]) {
        match self.current {
            None => {
                self.w.uint(0).uint(0).uint(local_id);
            }
            Some(c) if c != local_id => {
                self.w.uint(0).uint(local_id);
            }
            Some(_) => {}
        }
        self.current = Some(local_id);
        let ty_len = crate::encoding::uint_len(ty);
        self.w
            .uint((ty_len + payload.len()) as u64)
            .uint(ty)
            .raw(payload);
        self.count += 1;
    }

    /// Messages added so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes so far.
    pub fn byte_len(&self) -> usize {
        self.w.buf.len()
    }

    /// The frame: a batch for several messages, a plain frame for one.
    pub fn finish(self) -> Option<Vec<u8>> {
        (self.count > 0).then(|| self.w.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn open_roundtrip() {
        let f = encode_open(1, "hypercore/alpha", Some(&[7u8; 32]), &[1, 2, 3]);
        assert_eq!(&f[..4], &[0, 1, 1, 15]);
        assert_eq!(
            decode_frame(&f).unwrap(),
            vec![MuxMessage::Open {
                remote_id: 1,
                protocol: "hypercore/alpha".into(),
                id: Some(vec![7u8; 32]),
                handshake: vec![1, 2, 3]
            }]
        );
    }

    #[test]
    fn batch_roundtrip() {
        let mut b = Batch::new();
        b.push(1, 0, b"sync");
        b.push(1, 8, b"range");
        b.push(2, 3, b"data");
        let f = b.finish().unwrap();
        let got = decode_frame(&f).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[2],
            MuxMessage::Message {
                remote_id: 2,
                ty: 3,
                payload: b"data".to_vec()
            }
        );
        // control messages inside a batch (JS corks opens too)
        let mut w = Writer::new();
        w.uint(0).uint(0).uint(0);
        let close = [3u8, 5];
        w.uint(2).raw(&close);
        assert_eq!(
            decode_frame(&w.buf).unwrap(),
            vec![MuxMessage::Close { remote_id: 5 }]
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn decode_batches_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut b = vec![0u8, 0];
            b.extend(tail);
            let _ = decode_frame(&b);
        }
    }
}
