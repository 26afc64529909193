//! Fuzz target `secretstream` (see `apiary_fuzz::secretstream`).
apiary_fuzz::fuzz_main!(apiary_fuzz::secretstream::fuzz);
