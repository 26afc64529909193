//! `apiary-aggregator`: follow Hyperbees and serve them as one searchable feed over HTTP.
//! Everything but parsing the command line is in the library (`lib.rs`).

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    apiary_aggregator::run(apiary_aggregator::Cli::parse())
}
