//! Fuzz target `noise` (see `apiary_fuzz::noise`).
apiary_fuzz::fuzz_main!(apiary_fuzz::noise::fuzz);
