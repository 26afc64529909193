//! apiary-publisher: keep your own Hyperbees and serve them to the Hypercore network.
//!
//! The `apiary-publisher` binary is [`run`] over a parsed [`Cli`]. The parts it is made of
//! are here, so they can be tested and driven in one process where a process is not the
//! point: [`Bees`] (the named bees of a data directory), [`BeeCommand`] and [`run_command`]
//! (each bee command, as the CLI and the control socket run it), [`serve_page`] (the local
//! page and its JSON endpoints).
//!
//! ```no_run
//! # async fn example() -> apiary_publisher::Result<()> {
//! use apiary_publisher::{run_command, BeeCommand, Bees, Sink};
//!
//! let bees = Bees::open(std::path::Path::new("/tmp/apiary-example"))?;
//! let init = BeeCommand::Init { name: "movies".into(), compat: false };
//! // The command's output comes as events (the CLI prints them); the sink is dropped when
//! // the command ends, which ends the events.
//! let (sink, mut events) = Sink::channel();
//! let command = async move { run_command(&bees, init, &sink).await };
//! let print = async move {
//!     while let Some(e) = events.recv().await {
//!         println!("{e:?}"); // the bee's key, as `apiary-publisher init` prints it
//!     }
//! };
//! let (done, ()) = tokio::join!(command, print);
//! done?;
//! # Ok(())
//! # }
//! ```

use std::process::ExitCode;

mod bees;
mod cli;
mod commands;
mod config;
mod control;
mod entries;
mod error;
mod jsonl;
mod lock;
mod page;
mod register;
mod serve;

pub use bees::{BeeInfo, Bees};
pub use cli::{Cli, Command};
pub use commands::{run as run_command, BeeCommand, Event, Sink};
pub use config::{FileConfig, LogFormat};
pub use error::{Error, Result};
pub use page::serve as serve_page;

/// The `apiary-publisher` process: the config file, the logs, then the subcommand of `cli`.
/// Returns the exit code: 0, 2 for what the user must fix (input, a missing bee or entry,
/// the configuration), 1 otherwise.
pub fn run(cli: Cli) -> ExitCode {
    let file = match FileConfig::load(cli.config.as_deref()) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| file.log.clone())
        .unwrap_or_else(|| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let _ = match cli.log_format.or(file.log_format).unwrap_or_default() {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(Error::Remote(format!("cannot start the runtime: {e}"))),
    };
    match rt.block_on(cli::run(cli, file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code())
}
