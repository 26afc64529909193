//! Fuzz target `swarm_frame` (see `apiary_fuzz::swarm_frame`).
apiary_fuzz::fuzz_main!(apiary_fuzz::swarm_frame::fuzz);
