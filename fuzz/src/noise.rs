//! Noise XX (`Noise_XX_Ed25519_ChaChaPoly_BLAKE2b`): [`Handshake::read_message`] as initiator
//! and as responder, on raw garbage and on a genuine peer's messages with bits flipped.
//!
//! Input: `u8 mode · u8 len · len bytes · u8 len · len bytes`. Mode bit 0: we are the
//! initiator (else the responder). Bit 1: the two pieces are the remote's messages as they
//! are; else a genuine remote runs alongside and the pieces are XORed into its messages (an
//! all-zero mask must give a complete handshake whose keys agree).

use apiary_core::crypto::KeyPair;
use apiary_core::wire::noise::Handshake;

use crate::Input;

fn xor(msg: &[u8], mask: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    for (b, k) in m.iter_mut().zip(mask) {
        *b ^= k;
    }
    m
}

/// The target.
pub fn fuzz(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let first = input.chunk8();
    let second = input.chunk8();
    let initiator = mode & 1 != 0;
    let raw = mode & 2 != 0;
    let mut us = Handshake::new(initiator, KeyPair::from_seed(&[1u8; 32]));

    if raw {
        if initiator {
            let _ = us.write_message();
            if us.read_message(first).is_ok() {
                let _ = us.write_message();
            }
        } else if us.read_message(first).is_ok() && us.write_message().is_ok() {
            let _ = us.read_message(second);
        }
        // Whatever happened, a state that is not complete must not finish.
        if !us.is_complete() {
            assert!(us.finish().is_err());
        }
        return;
    }

    let mut them = Handshake::new(!initiator, KeyPair::from_seed(&[2u8; 32]));
    let clean = first.iter().chain(second).all(|&b| b == 0);
    let ok = if initiator {
        // -> e (ours, untouched), <- e, ee, s, es (theirs, masked), -> s, se
        let m1 = us.write_message().expect("our first message");
        them.read_message(&m1).expect("a genuine first message");
        let m2 = xor(&them.write_message().expect("their reply"), first);
        us.read_message(&m2).is_ok() && {
            let m3 = us
                .write_message()
                .expect("our last message after a good reply");
            them.read_message(&m3).is_ok()
        }
    } else {
        // -> e (theirs, masked), <- e, ee, s, es (ours), -> s, se (theirs, masked)
        let m1 = xor(&them.write_message().expect("their first message"), first);
        us.read_message(&m1).is_ok()
            && us.write_message().is_ok_and(|m2| {
                them.read_message(&m2).is_ok()
                    && them
                        .write_message()
                        .is_ok_and(|m3| us.read_message(&xor(&m3, second)).is_ok())
            })
    };
    assert!(ok || !clean, "a genuine handshake failed");
    if ok {
        let a = us.finish().expect("a complete handshake finishes");
        let b = them.finish().expect("a complete handshake finishes");
        assert_eq!(a.tx, b.rx, "keys disagree after a handshake that passed");
        assert_eq!(a.rx, b.tx);
        assert_eq!(a.hash, b.hash);
        assert_eq!(
            a.remote_public_key,
            KeyPair::from_seed(&[2u8; 32]).public_key()
        );
    }
}
