//! `apiary-publisher`: keep your own Hyperbees and serve them to the Hypercore network.

mod bees;
mod commands;
mod config;
mod control;
mod entries;
mod error;
mod io;
mod page;
mod register;
mod serve;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::bees::{BeeInfo, Bees};
use crate::commands::{BeeCommand, Terminal};
use crate::config::FileConfig;
use crate::error::{Error, Result};

/// Keep your own Hyperbees (key/value logs in the Hypercore format) and serve them.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Config file (default: $XDG_CONFIG_HOME/apiary/publisher.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (default: $XDG_DATA_HOME/apiary-publisher).
    #[arg(long, global = true, value_name = "DIR", env = "APIARY_PUBLISHER_DIR")]
    data_dir: Option<PathBuf>,
    /// Log lines as text or as one JSON object per line [default: text].
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<config::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Bee(BeeCommand),
    /// Keep all bees online: listen for readers, dial aggregators, serve the local page.
    Serve(serve::ServeArgs),
    /// Register a bee with an aggregator's HTTP API.
    Register {
        /// Bee name.
        name: String,
        /// The aggregator's HTTP base URL, e.g. http://agg.example.org:8080.
        #[arg(long)]
        aggregator: String,
        /// Admin or registration token.
        #[arg(long, env = "APIARY_TOKEN")]
        token: Option<String>,
        /// An address where the aggregator can reach this publisher (host:port).
        #[arg(long)]
        address: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let file = match FileConfig::load(cli.config.as_deref()) {
        Ok(f) => f,
        Err(e) => fail(e),
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| file.log.clone())
        .unwrap_or_else(|| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let _ = match cli.log_format.or(file.log_format).unwrap_or_default() {
        config::LogFormat::Text => logs.try_init(),
        config::LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => fail(Error::Remote(format!("cannot start the runtime: {e}"))),
    };
    if let Err(e) = rt.block_on(run(cli, file)) {
        fail(e);
    }
}

fn fail(e: Error) -> ! {
    eprintln!("error: {e}");
    std::process::exit(e.exit_code());
}

fn out(line: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
}

async fn run(cli: Cli, file: FileConfig) -> Result<()> {
    let dir = cli
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(config::default_data_dir);
    match cli.command {
        Command::Register {
            name,
            aggregator,
            token,
            address,
        } => {
            let info = dispatch(&dir, BeeCommand::Info { name: name.clone() }).await?;
            let info: BeeInfo = serde_json::from_value(info)
                .map_err(|e| Error::Control(format!("the record of bee {name}: {e}")))?;
            let reply =
                register::register(&aggregator, &info.key, token.as_deref(), address.as_deref())
                    .await?;
            out(format!("registered {name} with {aggregator}: {reply}"));
            Ok(())
        }
        Command::Serve(args) => serve::serve(&dir, &file, args).await,
        Command::Bee(cmd) => dispatch(&dir, cmd).await.map(drop),
    }
}

/// Runs a bee command in this process, or, when a `serve` holds the data directory, through
/// that `serve` (same code, same output); "in use" only when no `serve` answers.
async fn dispatch(dir: &Path, mut cmd: BeeCommand) -> Result<serde_json::Value> {
    cmd.absolutize()?;
    let mut term = Terminal::default();
    match Bees::open(dir) {
        Ok(bees) => {
            let r = commands::run_here(&bees, cmd, &mut term).await;
            bees.flush().await?;
            r
        }
        Err(Error::Busy(busy)) => {
            let r = control::call(dir, &cmd, |e| term.show(e)).await;
            term.flush();
            r?.ok_or(Error::Busy(busy))
        }
        Err(e) => Err(e),
    }
}
