//! The hypercore channel messages: [`Message::decode`] for every type id (and unknown ones),
//! and the channel handshake. What decodes must re-encode to bytes that decode the same.
//!
//! Input: `u8 type id · body`. Type ids 0..=9 are the ten messages, 10..=15 unknown ones;
//! the body is also decoded as a channel handshake.

use apiary_core::wire::messages::{ChannelHandshake, Message};

use crate::Input;

/// The target.
pub fn fuzz(data: &[u8]) {
    let mut input = Input::new(data);
    let ty = u64::from(input.u8() % 16);
    let body = input.rest();
    match Message::decode(ty, body) {
        Ok(Some(m)) => {
            assert_eq!(m.type_id(), ty);
            let again = m.encode();
            let m2 = Message::decode(ty, &again);
            assert_eq!(m2.ok(), Some(Some(m)), "re-encoded message differs");
        }
        Ok(None) => assert!(ty > 9, "known type {ty} decoded to nothing"),
        Err(_) => {}
    }
    if let Ok(h) = ChannelHandshake::decode(body) {
        assert_eq!(ChannelHandshake::decode(&h.encode()).ok(), Some(h));
    }
}
