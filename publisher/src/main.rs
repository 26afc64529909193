//! `apiary-publisher`: keep your own Hyperbees and serve them to the Hypercore network.
//! Everything but parsing the command line is in the library (`lib.rs`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    apiary_publisher::run(apiary_publisher::Cli::parse())
}
