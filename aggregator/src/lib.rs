//! apiary-aggregator: follow Hyperbees and serve them as one searchable feed over HTTP.
//!
//! The `apiary-aggregator` binary is [`run`] over a parsed [`Cli`]. The parts it is made of
//! are here, so they can be tested and driven in one process where a process is not the
//! point: [`Config`] (the config file and the flags over it), [`Aggregator`] (the follow list,
//! the feed tasks, the index, replication and the DHT), [`router`] (the HTTP API) and
//! [`serve`] (all of it behind its listeners until a signal).
//!
//! ```no_run
//! # async fn example() -> apiary_aggregator::Result<()> {
//! use apiary_aggregator::{Aggregator, Config};
//!
//! // An aggregator on its own data directory, without the DHT.
//! let cfg = Config {
//!     data_dir: "/tmp/apiary-example".into(),
//!     dht: false,
//!     ..Config::default()
//! };
//! let agg = Aggregator::open(cfg).await?;
//! // Its HTTP API; the handlers read the client's address, so serve it with
//! // `into_make_service_with_connect_info::<std::net::SocketAddr>()`.
//! let app = apiary_aggregator::router(agg.clone());
//! # drop(app);
//! # Ok(())
//! # }
//! ```

use std::process::ExitCode;
use std::time::Duration;

mod api;
mod backup;
mod cli;
mod config;
mod discovery;
mod error;
mod extract;
mod follow;
mod health;
mod http;
mod index;
mod ingest;
mod metrics;
mod openapi;
mod page;
mod peers;
mod serve;
mod state;

pub use cli::{Cli, Command};
pub use config::{Backfill, BackfillSetting, Config, FollowConfig, LogFormat};
pub use error::{Code, Error, Result};
pub use follow::Aggregator;
pub use http::router;
pub use serve::serve;

/// The `apiary-aggregator` process: the configuration from `cli`, the logs, then the server
/// (or the subcommand). Returns the exit code: 0, 2 for what the user must fix (the
/// configuration, a refused request), 1 otherwise.
pub fn run(cli: Cli) -> ExitCode {
    let cfg = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    cli::init_logs(&cfg);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let res = match cli.command {
        Some(Command::Backup { dir }) => rt.block_on(backup::request(&cfg, &dir)),
        None => rt.block_on(serve(cfg)),
    };
    // Tasks still running (open HTTP streams, the bridge's pipes) must not hold up the exit.
    rt.shutdown_timeout(Duration::from_secs(5));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
