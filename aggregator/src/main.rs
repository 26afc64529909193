//! `apiary-aggregator`: follow Hyperbees and serve them as one searchable feed over HTTP.

mod api;
mod backup;
mod config;
mod discovery;
mod error;
mod feed;
mod follow;
mod health;
mod http;
mod index;
mod ingest;
mod metrics;
mod openapi;
mod page;
mod peers;
mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apiary_net::gate::{Gate, Limits};
use apiary_net::listen::GatedListener;
use clap::Parser;

use crate::config::Config;
use crate::error::{Error, Result};

/// Follow Hyperbees (by key), merge their entries into one full-text searchable feed, and
/// serve it over HTTP. It holds no writer keys: every block is verified against its author's
/// signature, and an author's deletes and truncations are reflected.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Snapshot the data directory of the running aggregator (found by `http` in its config)
    /// into DIR, a new or empty directory: a consistent copy of the state, the blocks and the
    /// last index commit, taken while it runs. Restore: start an aggregator with
    /// --data-dir DIR.
    Backup {
        /// Where the snapshot goes (made if missing; it must be empty). The aggregator
        /// writes it, so it must be writable by the aggregator's user.
        dir: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let cfg = match build_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    init_logs(&cfg);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let res = match cli.command {
        Some(Command::Backup { dir }) => rt.block_on(backup::request(&cfg, &dir)),
        None => rt.block_on(run(cfg)),
    };
    // Tasks still running (open HTTP streams, the bridge's pipes) must not hold up the exit.
    rt.shutdown_timeout(Duration::from_secs(5));
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(if matches!(e, Error::Config(_) | Error::BadRequest(_)) {
            2
        } else {
            1
        });
    }
}

/// Logs go to stderr, as text or JSON lines (`log_format`); `RUST_LOG` overrides the filter.
fn init_logs(cfg: &Config) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.log.clone());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        config::LogFormat::Text => logs.try_init(),
        config::LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
}

fn build_config(cli: &Cli) -> Result<Config> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(h) = &cli.http {
        cfg.http = h.clone();
    }
    if let Some(l) = &cli.listen {
        cfg.listen = l.clone();
    }
    for f in &cli.follow {
        cfg.follow.push(config::parse_follow_flag(f)?);
    }
    if !cli.bootstrap.is_empty() {
        cfg.bootstrap = cli.bootstrap.clone();
    }
    if cli.no_dht {
        cfg.dht = false;
    }
    if let Some(f) = cli.log_format {
        cfg.log_format = f;
    }
    cfg.validate()?;
    Ok(cfg)
}

async fn run(cfg: Config) -> Result<()> {
    // Descriptors: raise the soft limit, then fit the connection caps into it with a reserve
    // for the index and the store, so no flood of connections can starve a commit.
    let fd = apiary_net::fdlimit::raise();
    let caps = apiary_net::fdlimit::fit(
        fd.soft,
        cfg.fd_reserve,
        &[cfg.http_max_connections, cfg.replication_max_connections],
    );
    let (http_cap, repl_cap) = (
        caps.first().copied().unwrap_or(1),
        caps.get(1).copied().unwrap_or(1),
    );
    if (http_cap, repl_cap) != (cfg.http_max_connections, cfg.replication_max_connections) {
        tracing::warn!(
            http_cap,
            repl_cap,
            soft = fd.soft,
            "connection caps lowered to fit the open file limit"
        );
    }
    let http_gate = Gate::new(
        "http",
        Limits {
            total: http_cap,
            per_ip: cfg.http_max_connections_per_ip.min(http_cap),
        },
    );
    let repl_gate = Gate::new(
        "replication",
        Limits {
            total: repl_cap,
            per_ip: cfg.replication_max_connections_per_ip.min(repl_cap),
        },
    );
    let agg = follow::Aggregator::open(cfg.clone()).await?;
    agg.set_net(fd, vec![http_gate.clone(), repl_gate.clone()]);
    let listen = if cfg.listen.is_empty() {
        None
    } else {
        let addr = config::parse_listen(&cfg.listen)?;
        let l = GatedListener::new(apiary_net::listen::bind(addr)?, repl_gate);
        let a = l.local_addr()?;
        Some((
            a,
            apiary_net::replication::serve(l, agg.replicator().clone()),
        ))
    };
    let http_listener = GatedListener::new(apiary_net::listen::bind(cfg.http_addr()?)?, http_gate);
    let (http_addr, http_task) = http::serve(agg.clone(), http_listener)?;
    let feeds = agg.followed()?.len();
    println!("apiary-aggregator is running");
    println!("  browse page and HTTP API: http://{http_addr}/   (OpenAPI: http://{http_addr}/v1/openapi.json)");
    match &listen {
        Some((a, _)) => println!("  replication (publishers dial in here): {a}"),
        None => println!("  replication: not listening (listen = \"\")"),
    }
    println!(
        "  data: {}   feeds followed: {feeds}",
        cfg.data_dir.display()
    );
    if cfg.dht {
        let boot = if cfg.bootstrap.is_empty() {
            "the public bootstrap nodes".to_owned()
        } else {
            cfg.bootstrap.join(", ")
        };
        println!("  DHT: bees are looked up by key on hyperswarm ({boot})");
    } else {
        println!("  DHT: off (dht = false)");
    }
    if feeds == 0 {
        println!();
        println!(
            "Next: follow a bee by its key (found on the DHT; add \"peers\" for known addresses):"
        );
        println!(
            "  curl -X POST http://{http_addr}/v1/feeds -H 'content-type: application/json' \\\n       -d '{{\"key\": \"hyper://KEY\"}}'"
        );
        println!("  or restart with --follow KEY@HOST:PORT, or let a publisher dial in:");
        println!(
            "  apiary-publisher serve --aggregator THIS_HOST:{}",
            listen.as_ref().map(|(a, _)| a.port()).unwrap_or(7701)
        );
        println!("Then open http://{http_addr}/ to browse and search.");
    }
    let signal = stop_signal().await;
    println!("shutting down ({signal})");
    tracing::info!("{signal}: shutting down");
    let listen = listen.map(|(_, t)| t);
    match tokio::time::timeout(SHUTDOWN_WITHIN, shutdown(&agg, http_task, listen)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unavailable(format!(
            "shutdown took over {} s; what was not committed is indexed again on the next start",
            SHUTDOWN_WITHIN.as_secs()
        ))),
    }
}

/// The whole shutdown, under a service manager's stop timeout (TimeoutStopSec=30 in
/// ops/systemd).
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(20);

/// Waits for Ctrl-C or SIGTERM (what service managers send); returns which.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted",
                _ = term.recv() => "SIGTERM",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "interrupted"
}

/// Stops in the order that keeps the data directory resumable without re-ingest: no new
/// connections, ingest stopped, the index committed (checkpoints with it), the DHT left, peers
/// closed, the store flushed.
async fn shutdown(
    agg: &Arc<follow::Aggregator>,
    http: tokio::task::JoinHandle<()>,
    listen: Option<tokio::task::JoinHandle<()>>,
) -> Result<()> {
    http.abort();
    if let Some(t) = listen {
        t.abort();
    }
    agg.health.stop_ingest();
    // The writer applies batches in order: this commit covers every one sent before.
    if let Err(e) = agg.index.submit_and_wait(Vec::new()).await {
        tracing::warn!("last index commit: {e}; the next start resumes from the previous one");
    }
    agg.discovery.shutdown().await;
    for c in agg.replicator().connections() {
        c.close();
    }
    agg.replicator().store().flush().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
