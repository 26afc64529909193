//! Proof bundles: [`bundle::verify`] on bundles an attacker changed, as anyone checking an
//! aggregator's answer runs it (`apiary-aggregator verify`, the self-check of `/v1/proofs`).
//!
//! Input: `u8 which honest bundle · (u8 op · u8 which · u16 pos · u8 value)*`. The honest
//! bundles are real ones, built from a bee of our own (200 puts, an overwrite, a delete): a
//! found key, an overwritten one, a deleted one, the last one, a key never written, and one at
//! an older version. Each edit changes one thing: a character of a block's base64 or of a hash
//! or signature, a size, an index, the version, the length, the fork, the key, the result, a
//! block or manifest taken from another bee's bundle, a block or node dropped, duplicated or
//! moved. A bundle that still verifies must be the truth: the real signed length and fork,
//! and what the real bee's `get` of that key at that version returns.

use std::cell::RefCell;

use apiary_core::bee::BeeWriter;
use apiary_core::bundle::{self, Bundle};
use apiary_core::crypto::KeyPair;
use apiary_core::replicate::{Replicator, ReplicatorOptions};
use apiary_core::store::Store;

use crate::Input;

const KEYS: [&str; 5] = ["k000", "k007", "k100", "k199", "absent"];
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
const HEX: &[u8] = b"0123456789abcdef";

struct Setup {
    rt: tokio::runtime::Runtime,
    writer: BeeWriter,
    honest: Vec<Bundle>,
    other: Bundle,
}

thread_local! {
    // Made on first use: under AFL++ that is in the forked child, where threads may start.
    static SETUP: RefCell<Option<Setup>> = const { RefCell::new(None) };
}

/// A bee of 200 puts (values ending in `salt`), then an overwrite and a delete.
async fn bee(rep: &Replicator, seed: u8, salt: &str) -> BeeWriter {
    let w = BeeWriter::new(
        rep.create_core(KeyPair::from_seed(&[seed; 32]), false)
            .unwrap(),
    )
    .unwrap();
    for i in 0..200u32 {
        let v = format!("{{\"title\":\"movie {i}{salt}\"}}");
        w.put(format!("k{i:03}").as_bytes(), v.as_bytes())
            .await
            .unwrap();
    }
    w.put(b"k007", b"{\"title\":\"again\"}").await.unwrap();
    w.del(b"k100").await.unwrap();
    w
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rep = Replicator::new(Store::temporary().unwrap(), ReplicatorOptions::default());
    let (writer, honest, other) = rt.block_on(async {
        let w = bee(&rep, 7, "").await;
        let o = bee(&rep, 8, " (other)").await;
        let v = w.bee().version();
        let mut honest = Vec::new();
        for k in KEYS {
            honest.push(bundle::build(w.bee().core(), k, v, false).await.unwrap());
        }
        honest.push(
            bundle::build(w.bee().core(), "k007", 150, false)
                .await
                .unwrap(),
        );
        let other = bundle::build(o.bee().core(), "k000", v, false)
            .await
            .unwrap();
        (w, honest, other)
    });
    Setup {
        rt,
        writer,
        honest,
        other,
    }
}

/// Sets the character at `pos` (modulo the length) of an ASCII string.
fn set_char(s: &mut String, pos: usize, c: u8) {
    if s.is_empty() || !s.is_ascii() {
        return;
    }
    let i = pos % s.len();
    s.replace_range(i..i + 1, &char::from(c).to_string());
}

fn signed(v: u8) -> u64 {
    i64::from(v as i8) as u64
}

/// Applies one edit read from `input`.
fn edit(b: &mut Bundle, input: &mut Input<'_>, other: &Bundle) {
    let op = input.u8() % 20;
    let which = usize::from(input.u8());
    let pos = usize::from(input.u16());
    let v = input.u8();
    let nb = b.blocks.len().max(1);
    let nn = b.nodes.len().max(1);
    match op {
        0 => {
            if let Some(x) = b.blocks.get_mut(which % nb) {
                set_char(&mut x.data, pos, BASE64[usize::from(v) % BASE64.len()]);
            }
        }
        1 => {
            if let Some(n) = b.nodes.get_mut(which % nn) {
                set_char(&mut n.hash, pos, HEX[usize::from(v) % 16]);
            }
        }
        2 => {
            if let Some(n) = b.nodes.get_mut(which % nn) {
                n.size = n.size.wrapping_add(signed(v));
            }
        }
        3 => {
            if let Some(n) = b.nodes.get_mut(which % nn) {
                n.index ^= u64::from(v);
            }
        }
        4 if !b.blocks.is_empty() => {
            b.blocks.remove(which % nb);
        }
        5 if !b.nodes.is_empty() => {
            b.nodes.remove(which % nn);
        }
        6 => {
            if let Some(x) = b.blocks.get(which % nb).cloned() {
                b.blocks.push(x);
            }
        }
        7 => b.version = b.version.wrapping_add(signed(v)),
        8 => b.tree.length = b.tree.length.wrapping_add(signed(v)),
        9 => b.tree.fork ^= u64::from(v),
        10 => {
            if let Some(s) = b.tree.signature.as_mut() {
                set_char(s, pos, HEX[usize::from(v) % 16]);
            }
        }
        11 => set_char(&mut b.key, pos, b"0123456789k_abz"[usize::from(v) % 15]),
        12 => b.result.found = !b.result.found,
        13 => match b.result.value.as_mut() {
            Some(s) => set_char(s, pos, BASE64[usize::from(v) % BASE64.len()]),
            None => b.result.value = Some("e30=".into()),
        },
        14 => {
            let o = other.blocks.get(pos % other.blocks.len().max(1));
            if let (Some(x), Some(o)) = (b.blocks.get_mut(which % nb), o) {
                x.data = o.data.clone();
            }
        }
        15 => b.tree.manifest = other.tree.manifest.clone(),
        16 => {
            let nr = b.tree.roots.len().max(1);
            if let Some(r) = b.tree.roots.get_mut(which % nr) {
                set_char(&mut r.hash, pos, HEX[usize::from(v) % 16]);
            }
        }
        17 if b.blocks.len() > 1 => {
            let i = which % (b.blocks.len() - 1);
            b.blocks.swap(i, i + 1);
        }
        18 => b.result.seq = Some(u64::from(v)),
        _ => b.tree.signature = None,
    }
}

/// `proof_bundle`: see the module docs.
pub fn fuzz(data: &[u8]) {
    run(data);
}

/// Runs one input; true when the edited bundle verified (and was the truth).
pub fn run(data: &[u8]) -> bool {
    SETUP.with(|cell| {
        let mut cell = cell.borrow_mut();
        let s = cell.get_or_insert_with(setup);
        let mut input = Input::new(data);
        let first = usize::from(input.u8()) % s.honest.len();
        let Some(mut b) = s.honest.get(first).cloned() else {
            return false;
        };
        for _ in 0..64 {
            if input.is_empty() {
                break;
            }
            edit(&mut b, &mut input, &s.other);
        }
        let core = s.writer.bee().core();
        let Ok(p) = bundle::verify(&b, core.key()) else {
            return false;
        };
        assert_eq!(
            (p.length, p.fork),
            (core.length(), core.fork()),
            "a bundle verified against a head the author did not sign"
        );
        let truth =
            s.rt.block_on(s.writer.bee().checkout(p.version).get(p.key.as_bytes()))
                .ok()
                .map(|e| e.map(|e| (e.seq, e.value)));
        assert_eq!(
            Some(p.entry),
            truth,
            "a bundle proved what the bee does not hold: {:?} at {}",
            p.key,
            p.version
        );
        true
    })
}
