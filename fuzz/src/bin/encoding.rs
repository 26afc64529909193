//! Fuzz target `encoding` (see `apiary_fuzz::encoding`).
apiary_fuzz::fuzz_main!(apiary_fuzz::encoding::fuzz);
