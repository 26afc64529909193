//! Fuzz target `mux` (see `apiary_fuzz::mux`).
apiary_fuzz::fuzz_main!(apiary_fuzz::mux::fuzz);
