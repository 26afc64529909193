//! The command line: its flags, and the configuration they make over the config file; logs.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{self, Config};
use crate::error::Result;

/// Follow Hyperbees (by key), merge their entries into one full-text searchable feed, and
/// serve it over HTTP. It holds no writer keys: every block is verified against its author's
/// signature, and an author's deletes and truncations are reflected.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Config file (TOML; see config/aggregator.toml). Without it, embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory [default: ./data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP address [default: 127.0.0.1:8080].
    #[arg(long, global = true, value_name = "ADDR")]
    http: Option<String>,
    /// Replication address where publishers dial in [default: 0.0.0.0:7701]; "" to not listen.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Follow a bee, optionally with a peer serving it (repeatable).
    #[arg(long = "follow", value_name = "KEY[@HOST:PORT]")]
    follow: Vec<String>,
    /// A DHT bootstrap node (repeatable; replaces the public list), e.g. for a private DHT.
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    bootstrap: Vec<String>,
    /// Do not use the DHT: follow only through known addresses and dial-in.
    #[arg(long)]
    no_dht: bool,
    /// Log lines as text or as one JSON object per line [default: text].
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<config::LogFormat>,
    /// What to do; without one, run the aggregator.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Snapshot the data directory of the running aggregator (found by `http` in its config)
    /// into DIR, a new or empty directory: a consistent copy of the state, the blocks and the
    /// last index commit, taken while it runs. Restore: start an aggregator with
    /// --data-dir DIR.
    Backup {
        /// Where the snapshot goes (made if missing; it must be empty). The aggregator
        /// writes it, so it must be writable by the aggregator's user.
        dir: PathBuf,
    },
    /// Check a proof bundle (from /v1/proofs/FEED/KEY) against the feed's key alone: print
    /// the proven key, value and version and exit 0, or say why it fails and exit 1 (2 when
    /// the file is not a bundle at all). Needs no config, no data and no network.
    Verify {
        /// The bundle (JSON); `-` reads standard input.
        bundle: PathBuf,
        /// The feed's key (hyper://KEY, z-base-32 or hex): the only thing trusted.
        #[arg(long, value_name = "KEY")]
        key: String,
    },
}

impl Cli {
    /// The configuration: the config file (or the embedded defaults), then
    /// `APIARY_ADMIN_TOKEN`, then the flags; checked.
    pub fn config(&self) -> Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(h) = &self.http {
            cfg.http = h.clone();
        }
        if let Some(l) = &self.listen {
            cfg.listen = l.clone();
        }
        for f in &self.follow {
            cfg.follow.push(config::parse_follow_flag(f)?);
        }
        if !self.bootstrap.is_empty() {
            cfg.bootstrap = self.bootstrap.clone();
        }
        if self.no_dht {
            cfg.dht = false;
        }
        if let Some(f) = self.log_format {
            cfg.log_format = f;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Logs go to stderr, as text or JSON lines (`log_format`); `RUST_LOG` overrides the filter.
pub(crate) fn init_logs(cfg: &Config) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.log.clone());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        config::LogFormat::Text => logs.try_init(),
        config::LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use clap::CommandFactory;

    use super::*;
    use crate::error::Error;

    const KEY: &str = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("apiary-aggregator").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        assert_eq!(Cli::command().get_name(), "apiary-aggregator");
    }

    #[test]
    fn flags_go_over_the_defaults() {
        let c = cli(&[
            "--data-dir",
            "/tmp/x",
            "--http",
            "127.0.0.1:9",
            "--listen",
            "",
            "--follow",
            &format!("{KEY}@127.0.0.1:7702"),
            "--bootstrap",
            "127.0.0.1:49737",
            "--no-dht",
            "--log-format",
            "json",
        ])
        .config()
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.http, "127.0.0.1:9");
        assert_eq!(c.listen, "");
        assert_eq!(c.follow.len(), 1);
        assert_eq!(c.follow[0].peers, ["127.0.0.1:7702"]);
        assert_eq!(c.bootstrap, ["127.0.0.1:49737"]);
        assert!(!c.dht);
        assert_eq!(c.log_format, config::LogFormat::Json);
        let d = cli(&[]).config().unwrap();
        assert!(d.dht && d.follow.is_empty() && d.listen == "0.0.0.0:7701");
        assert!(cli(&["backup", "/tmp/b"]).command.is_some());
    }

    #[test]
    fn bad_flags_are_config_errors() {
        for args in [
            &["--http", "localhost"][..],
            &["--listen", "nowhere"],
            &["--follow", "nope"],
            &["--bootstrap", "no-port"],
            &["--config", "/nonexistent/aggregator.toml"],
        ] {
            match cli(args).config() {
                Err(e @ Error::Config(_)) => assert_eq!(e.exit_code(), 2, "{args:?}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        assert!(Cli::try_parse_from(["apiary-aggregator", "--log-format", "xml"]).is_err());
        assert!(Cli::try_parse_from(["apiary-aggregator", "restore"]).is_err());
    }
}
