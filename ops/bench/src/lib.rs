//! Shared code of the benchmark binaries: the deterministic dataset and process figures.

pub mod data;
pub mod sys;
