//! secret-stream (`crypto_secretstream_xchacha20poly1305`): [`Pull`] after a valid header,
//! fed garbage, forged, truncated and genuine messages in any order.
//!
//! Input: a sequence of `u8 op · u8 len · len bytes`. Op (mod 4): 0 garbage is pulled (it must
//! fail); 1 the bytes (first = tag) are pushed and pulled (they must come back, with the tag);
//! 2 a genuine message with one bit flipped, 3 a genuine message cut short (both must fail,
//! and leave the receiver in step with the sender, which the next genuine message checks).

use apiary_core::wire::secretstream::{Pull, Push, ABYTES};

use crate::Input;

/// The target.
pub fn fuzz(data: &[u8]) {
    let key = [7u8; 32];
    let header = [9u8; 24];
    let mut push = Push::with_header(&key, &header);
    let mut pull = Pull::new(&key, &header);
    let mut input = Input::new(data);
    while !input.is_empty() {
        let op = input.u8();
        let chunk = input.chunk8();
        match op % 4 {
            0 => {
                let mut b = chunk.to_vec();
                assert!(pull.pull_in_place(&mut b).is_err(), "garbage authenticated");
            }
            1 => {
                let (tag, msg) = chunk.split_first().map_or((0, &[][..]), |(t, m)| (*t, m));
                let mut out = Vec::new();
                push.push_into(msg, tag, &mut out);
                assert_eq!(out.len(), msg.len() + ABYTES);
                let (t, plain) = pull
                    .pull_in_place(&mut out)
                    .expect("a genuine message decrypts");
                assert_eq!(t, tag);
                assert_eq!(plain, msg);
            }
            _ => {
                let (pos, msg) = chunk.split_first().map_or((0, &[][..]), |(p, m)| (*p, m));
                let mut out = Vec::new();
                push.clone().push_into(msg, 0, &mut out);
                if op % 4 == 2 {
                    let i = usize::from(pos) % out.len();
                    if let Some(b) = out.get_mut(i) {
                        *b ^= 1 << (op >> 5);
                    }
                } else {
                    out.truncate(usize::from(pos) % out.len());
                }
                assert!(
                    pull.pull_in_place(&mut out).is_err(),
                    "a forged message passed"
                );
            }
        }
    }
}
