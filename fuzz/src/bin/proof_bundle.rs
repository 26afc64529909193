//! Fuzz target `proof_bundle` (see `apiary_fuzz::bundle`).
apiary_fuzz::fuzz_main!(apiary_fuzz::bundle::fuzz);
