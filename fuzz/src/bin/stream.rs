//! Fuzz target `stream` (see `apiary_fuzz::stream`).
apiary_fuzz::fuzz_main!(apiary_fuzz::stream::fuzz);
