//! Fuzz target `manifest` (see `apiary_fuzz::manifest`).
apiary_fuzz::fuzz_main!(apiary_fuzz::manifest::fuzz);
