//! Fuzz targets for every decoder of apiary that reads remote bytes.
//!
//! Each target is a plain `fn(&[u8])` that must return for every input: the project rule is
//! that untrusted input gets a clear error, never a panic, so a panic (or an `assert!` of a
//! property below failing) is a finding. Where a decoder has an encoder, the target also
//! checks that what decodes re-encodes to the same value; where there is a verifier, that
//! what verifies is true.
//!
//! The binaries in `src/bin/` wrap one target each: AFL++ persistent mode with the `afl`
//! feature, a replay of the files given on the command line without it. `tests/corpus.rs`
//! runs every seed in `corpus/<target>/` through its target in `cargo test`, and the `seeds`
//! binary regenerates the seeds from the real encoders.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a harness that cannot set itself up should stop loudly; targets assert properties"
)]

pub mod bee;
pub mod bundle;
pub mod encoding;
pub mod manifest;
pub mod merkle;
pub mod messages;
pub mod mux;
pub mod noise;
pub mod secretstream;
pub mod seeds;
pub mod stream;
pub mod swarm_frame;

/// A fuzz target.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its binary and of its corpus directory).
pub const TARGETS: &[(&str, Target)] = &[
    ("encoding", encoding::fuzz),
    ("secretstream", secretstream::fuzz),
    ("stream", stream::fuzz),
    ("noise", noise::fuzz),
    ("mux", mux::fuzz),
    ("messages", messages::fuzz),
    ("manifest", manifest::fuzz),
    ("bee_block", bee::fuzz_block),
    ("bee_walk", bee::fuzz_walk),
    ("merkle_proof", merkle::fuzz),
    ("proof_bundle", bundle::fuzz),
    ("swarm_frame", swarm_frame::fuzz),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The `main` of a target binary built without the `afl` feature: runs the target on each
/// file named on the command line (or on stdin when none is), printing each name first, so
/// a crashing input found by AFL++ is reproduced with a plain `cargo run --bin TARGET -- FILE`.
pub fn replay_main(target: Target) {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut data).expect("reading stdin");
        target(&data);
        return;
    }
    for f in files {
        eprintln!("{f}");
        let data = std::fs::read(&f).expect("reading an input file");
        target(&data);
    }
}

/// Cuts a fuzz input into the pieces a target needs. Every take succeeds: past the end it
/// yields zeros or empty slices, so any input drives the target somewhere.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// True when everything was taken.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let (b, rest) = self
            .data
            .split_first()
            .map_or((0, &[][..]), |(b, r)| (*b, r));
        self.data = rest;
        b
    }

    /// A little-endian u16 (bytes past the end are 0).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// Exactly `N` bytes, zero-padded past the end.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.bytes(N);
        out.get_mut(..b.len())
            .unwrap_or_default()
            .copy_from_slice(b);
        out
    }

    /// A piece prefixed by a one-byte length.
    pub fn chunk8(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// A piece prefixed by a two-byte length.
    pub fn chunk16(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// A current-thread Tokio runtime for one input (dropping it ends every task it spawned).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Defines `main` for a target binary: AFL++ persistent mode with the `afl` feature, a
/// replay of files without it.
#[macro_export]
macro_rules! fuzz_main {
    ($target:path) => {
        #[cfg(feature = "afl")]
        fn main() {
            afl::fuzz!(|data: &[u8]| {
                $target(data);
            });
        }

        #[cfg(not(feature = "afl"))]
        fn main() {
            $crate::replay_main($target);
        }
    };
}
