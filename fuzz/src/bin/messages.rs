//! Fuzz target `messages` (see `apiary_fuzz::messages`).
apiary_fuzz::fuzz_main!(apiary_fuzz::messages::fuzz);
