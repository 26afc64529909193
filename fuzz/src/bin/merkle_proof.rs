//! Fuzz target `merkle_proof` (see `apiary_fuzz::merkle`).
apiary_fuzz::fuzz_main!(apiary_fuzz::merkle::fuzz);
