//! Running the aggregator as a server: the listeners (HTTP API and replication, their
//! connection caps fitted into the open file limit), what it prints at start, and the
//! shutdown on SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use apiary_net::gate::{Gate, Limits};
use apiary_net::listen::GatedListener;

use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::{http, Aggregator};

/// Runs the aggregator on `cfg` until SIGTERM or Ctrl-C, then shuts it down (within
/// `SHUTDOWN_WITHIN`, 20 s): the listeners stop, ingest stops, a last index commit, the DHT is
/// left, connections close, the store is flushed.
pub async fn serve(cfg: Config) -> Result<()> {
    serve_on(cfg, None).await
}

/// [`serve`], with the HTTP API on the runtime of `http` (default: the current one); the rest
/// runs on the current one (`priority.rs`).
pub(crate) async fn serve_on(cfg: Config, http: Option<tokio::runtime::Handle>) -> Result<()> {
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
    let agg = Aggregator::open(cfg.clone()).await?;
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
    // The listener and its connections belong to the HTTP runtime (its I/O driver wakes them).
    let (http_addr, http_task) = {
        let _in = http.as_ref().map(|h| h.enter());
        let http_listener =
            GatedListener::new(apiary_net::listen::bind(cfg.http_addr()?)?, http_gate);
        http::serve(agg.clone(), http_listener)?
    };
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
    agg: &Arc<Aggregator>,
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
