//! Hyperbee blocks: the prost decode of entry blocks and headers ([`bee_block`]), and what the
//! bee does with them ([`bee_walk`]): a bee made of the input's blocks, read through
//! [`Bee`] (get, range both ways and with bounds, diff, history, subs), as a reader does with
//! a bee whose author is hostile.
//!
//! [`bee_block`]: fuzz_block
//! [`bee_walk`]: fuzz_walk

use std::cell::RefCell;
use std::sync::Arc;

use apiary_core::bee::block::{decode_header, encode_header};
use apiary_core::bee::{Bee, BeeBlock, HistoryOptions, RangeOptions};
use apiary_core::crypto::KeyPair;
use apiary_core::replicate::{Replica, Replicator, ReplicatorOptions};
use apiary_core::store::Store;

use crate::Input;

/// Most blocks a `bee_walk` input makes (its time per input stays small).
pub const MAX_BLOCKS: usize = 64;
/// Entries a range read may return before the target stops it.
const RANGE_LIMIT: usize = 256;

/// `bee_block`: `u16 seq · block bytes`. The bytes are decoded as an entry block of block
/// `seq` and as a header; a block that decodes has every tree node it names looked up, and
/// re-encodes to the same block.
pub fn fuzz_block(data: &[u8]) {
    let mut input = Input::new(data);
    let seq = u64::from(input.u16());
    let bytes = input.rest();
    let _ = decode_header(bytes);
    let Ok(b) = BeeBlock::decode(seq, bytes) else {
        return;
    };
    let _ = b.is_deletion();
    for (offset, node) in b.levels.iter().enumerate() {
        assert!(b.level(offset as u64).is_ok());
        assert!(node.children.is_empty() || node.children.len() == node.keys.len() + 1);
        // Block 0 is the header; a later block is allowed (JS batches with deletes write
        // such nodes, see core's bee::block tests), walks check it against their version.
        for k in &node.keys {
            assert!(*k >= 1, "key seq {k} in block {seq}");
        }
        for c in &node.children {
            assert!(c.seq >= 1, "child {c:?} in block {seq}");
            // A pointer into this block must name a level it has; elsewhere it is checked
            // when that block is read.
            let _ = b.level(c.offset);
        }
    }
    assert!(b.level(b.levels.len() as u64).is_err());
    let again = BeeBlock::encode(&b.key, b.value.as_deref(), &b.levels);
    assert_eq!(
        BeeBlock::decode(seq, &again).ok().as_ref(),
        Some(&b),
        "re-encoded block differs"
    );
}

struct Walker {
    rt: tokio::runtime::Runtime,
    replicator: Replicator,
    next_seed: u64,
}

thread_local! {
    // Made on first use: under AFL++ that is in the forked child, where threads may start.
    static WALKER: RefCell<Option<Walker>> = const { RefCell::new(None) };
}

/// `bee_walk`: `u8 flags · u8 len · search key · (u16 len · block)*` (at most
/// [`MAX_BLOCKS`] blocks). The blocks are appended after a genuine header (flag bit 0: the
/// first block replaces the header) to a core of our own, and read as a bee.
pub fn fuzz_walk(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let probe = input.chunk8().to_vec();
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    if flags & 1 == 0 {
        blocks.push(encode_header());
    }
    while !input.is_empty() && blocks.len() <= MAX_BLOCKS {
        blocks.push(input.chunk16().to_vec());
    }
    WALKER.with(|w| {
        let mut w = w.borrow_mut();
        let w = w.get_or_insert_with(|| {
            let store = Store::temporary().expect("a temporary store");
            Walker {
                rt: crate::runtime(),
                replicator: Replicator::new(store, ReplicatorOptions::default()),
                next_seed: 0,
            }
        });
        w.next_seed += 1;
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&w.next_seed.to_le_bytes());
        let keys = KeyPair::from_seed(&seed);
        let replica = w.replicator.create_core(keys, true).expect("a core");
        let key = *replica.key();
        let rt = &w.rt;
        rt.block_on(async {
            if !blocks.is_empty() {
                replica.append(&blocks).expect("append");
            }
            walk(&replica, flags, &probe).await;
            w.replicator.remove(&key).await;
        });
        w.replicator
            .store()
            .remove_core(&key)
            .expect("removing the core");
    });
}

async fn walk(replica: &Arc<Replica>, flags: u8, probe: &[u8]) {
    let bee = Bee::with_cache(replica.clone(), if flags & 2 != 0 { 0 } else { 64 });
    let _ = bee.header().await;
    let version = bee.version();
    let snap = bee.snapshot();
    // Every key the log names, and the probe.
    let mut keys = vec![probe.to_vec()];
    for seq in 1..version {
        if let Ok(b) = bee.block(seq).await {
            keys.push(b.key.clone());
        }
    }
    for k in &keys {
        if let Ok(Some(e)) = snap.get(k).await {
            assert_eq!(&e.key, k, "get returned another key");
        }
    }
    let limit = Some(RANGE_LIMIT);
    for reverse in [false, true] {
        let all = RangeOptions {
            reverse,
            limit,
            ..RangeOptions::default()
        };
        let _ = snap.range(all).await;
        let bounded = RangeOptions {
            gte: Some(probe.to_vec()),
            lt: Some(vec![0xff; 4]),
            reverse,
            limit,
            ..RangeOptions::default()
        };
        let _ = snap.range(bounded).await;
    }
    let _ = snap
        .sub(probe)
        .range(RangeOptions {
            limit,
            ..RangeOptions::default()
        })
        .await;
    let older = version.saturating_sub(u64::from(flags >> 4)).max(1);
    let _ = snap
        .diff(
            older,
            RangeOptions {
                limit,
                ..RangeOptions::default()
            },
        )
        .await;
    let _ = bee.checkout(older).get(probe).await;
    let _ = bee
        .history(&HistoryOptions {
            reverse: flags & 4 != 0,
            limit,
            ..HistoryOptions::default()
        })
        .await;
}
