//! Fuzz target `bee_block` (see `apiary_fuzz::bee`).
apiary_fuzz::fuzz_main!(apiary_fuzz::bee::fuzz_block);
