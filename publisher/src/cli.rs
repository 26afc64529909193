//! The command line: its flags, and each subcommand run (a bee command here or through a
//! running `serve`, `serve` itself, `register`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::bees::{BeeInfo, Bees};
use crate::commands::{self, BeeCommand, Terminal};
use crate::config::{self, FileConfig};
use crate::error::{Error, Result};
use crate::{control, register, serve};

/// Keep your own Hyperbees (key/value logs in the Hypercore format) and serve them.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Config file (default: $XDG_CONFIG_HOME/apiary/publisher.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (default: $XDG_DATA_HOME/apiary-publisher).
    #[arg(long, global = true, value_name = "DIR", env = "APIARY_PUBLISHER_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Log lines as text or as one JSON object per line [default: text].
    #[arg(long, global = true, value_name = "FORMAT")]
    pub(crate) log_format: Option<config::LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A command over the bees.
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

impl Cli {
    /// The data directory: the flag (or `APIARY_PUBLISHER_DIR`), else the config file's,
    /// else the XDG default.
    pub fn data_dir(&self, file: &FileConfig) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(config::default_data_dir)
    }
}

fn out(line: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
}

/// Runs the subcommand of `cli` with the config file `file`.
pub(crate) async fn run(cli: Cli, file: FileConfig) -> Result<()> {
    let dir = cli.data_dir(&file);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("apiary-publisher").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        assert_eq!(Cli::command().get_name(), "apiary-publisher");
    }

    #[test]
    fn bee_commands_parse_as_the_control_socket_takes_them() {
        let c = parse(&["put", "movies", "m1", "{\"title\": \"Alien\"}"]).unwrap();
        let Command::Bee(cmd) = c.command else {
            panic!("{c:?}")
        };
        assert_eq!(
            serde_json::to_value(&cmd).unwrap(),
            serde_json::json!({"cmd": "put", "name": "movies", "key": "m1", "json": "{\"title\": \"Alien\"}"})
        );
        let c = parse(&["init"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Bee(BeeCommand::Init { ref name, compat: false }) if name == "default"
        ));
        // `info` is for `register` through `serve`, not a command of the command line.
        assert!(parse(&["info", "movies"]).is_err());
        assert!(parse(&["put", "movies", "m1"]).is_err());
        assert!(parse(&["register", "movies"]).is_err());
        assert!(parse(&["--log-format", "yaml", "bees"]).is_err());
    }

    #[test]
    fn the_data_directory_is_the_flag_then_the_file_then_the_default() {
        let file = FileConfig {
            data_dir: Some("/from/file".into()),
            ..FileConfig::default()
        };
        let flag = parse(&["--data-dir", "/from/flag", "bees"]).unwrap();
        assert_eq!(flag.data_dir(&file), PathBuf::from("/from/flag"));
        let mut none = parse(&["bees"]).unwrap();
        // The environment may set it (APIARY_PUBLISHER_DIR): this is about what wins.
        none.data_dir = None;
        assert_eq!(none.data_dir(&file), PathBuf::from("/from/file"));
        assert_eq!(
            none.data_dir(&FileConfig::default()),
            config::default_data_dir()
        );
    }
}
