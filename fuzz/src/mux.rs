//! protomux: [`decode_frame`] on any plaintext frame (control messages, channel messages,
//! batches, nested batches). A frame that is not a batch must re-encode to a frame that
//! decodes the same.

use apiary_core::wire::mux::{
    decode_frame, encode_close, encode_message, encode_open, encode_reject, MuxMessage,
};

/// The target.
pub fn fuzz(data: &[u8]) {
    let Ok(msgs) = decode_frame(data) else {
        return;
    };
    let is_batch = data.get(..2) == Some(&[0, 0]);
    if is_batch || msgs.len() != 1 {
        return;
    }
    let Some(m) = msgs.first() else {
        return;
    };
    let again = match m {
        MuxMessage::Open {
            remote_id,
            protocol,
            id,
            handshake,
        } => encode_open(*remote_id, protocol, id.as_deref(), handshake),
        MuxMessage::Reject { local_id } => encode_reject(*local_id),
        MuxMessage::Close { remote_id } => encode_close(*remote_id),
        MuxMessage::Message {
            remote_id,
            ty,
            payload,
        } => encode_message(*remote_id, *ty, payload),
    };
    assert_eq!(
        decode_frame(&again).ok().as_ref(),
        Some(&msgs),
        "re-encoded frame differs"
    );
}
