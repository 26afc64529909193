//! Fuzz target `bee_walk` (see `apiary_fuzz::bee`).
apiary_fuzz::fuzz_main!(apiary_fuzz::bee::fuzz_walk);
