//! `serve`: keeps every bee online. Listens for readers, dials aggregators and stays connected
//! (reconnecting with backoff), serves the local page, runs the other commands for the CLI
//! over its control socket (it holds the data directory, so they cannot open it), prints who
//! is connected and which bees are created, and shuts down cleanly on Ctrl-C or SIGTERM.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apiary_core::replicate::Replicator;
use apiary_swarm::{JoinMode, Swarm, SwarmOptions};
use tracing::Instrument;

use crate::bees::Bees;
use crate::config::{self, FileConfig};
use crate::error::Result;
use crate::{control, page};

/// Flags of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Replication address to listen on [default: 0.0.0.0:7702].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Local page address [default: 127.0.0.1:7780].
    #[arg(long, value_name = "ADDR")]
    page: Option<String>,
    /// Do not serve the local page.
    #[arg(long)]
    no_page: bool,
    /// An aggregator's replication address to dial and stay connected to (repeatable).
    #[arg(long = "aggregator", value_name = "HOST:PORT")]
    aggregators: Vec<String>,
    /// A DHT bootstrap node (repeatable; replaces the public list), e.g. for a private DHT.
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    bootstrap: Vec<String>,
    /// Do not announce bees on the DHT (readers then need this address or a dial-out).
    #[arg(long)]
    no_dht: bool,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn serve(dir: &Path, file: &FileConfig, args: ServeArgs) -> Result<()> {
    let bees = Arc::new(Bees::open(dir)?);
    // Right after taking the data directory, so that a CLI finding it busy finds us too.
    let control = match control::listen(bees.clone(), dir).await {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("warning: no control socket ({e}); other commands cannot run meanwhile");
            None
        }
    };
    let created = tokio::spawn(print_created(bees.subscribe_created()));
    let swarm = if args.no_dht || file.dht == Some(false) {
        None
    } else {
        let mut boot = file.bootstrap.clone();
        if !args.bootstrap.is_empty() {
            boot = args.bootstrap.clone();
        }
        for b in &boot {
            apiary_swarm::check_bootstrap(b).map_err(crate::error::Error::Config)?;
        }
        Some(announce(&bees, boot, file.bridge_dir.clone(), dir))
    };
    let open = bees.open_all()?;
    let rep = bees.replicator().clone();
    let listen = args
        .listen
        .or_else(|| file.listen.clone())
        .unwrap_or_else(|| config::DEFAULT_LISTEN.into());
    // Readers and aggregators connect here: caps per address and in total (apiary-net), in
    // a file limit raised to its hard limit.
    let fd = apiary_net::fdlimit::raise();
    let cap = apiary_net::fdlimit::fit(fd.soft, 128, &[1024])
        .first()
        .copied()
        .unwrap_or(8);
    let gate = apiary_net::gate::Gate::new(
        "replication",
        apiary_net::gate::Limits {
            total: cap,
            per_ip: 16.min(cap),
        },
    );
    let bind_addr = config::addr("listen address", &listen)?;
    let tcp = apiary_net::listen::bind(bind_addr)
        .map_err(|e| crate::error::Error::io(std::path::Path::new(&listen), e))?;
    let tcp = apiary_net::listen::GatedListener::new(tcp, gate);
    let addr = tcp
        .local_addr()
        .map_err(|e| crate::error::Error::io(std::path::Path::new(&listen), e))?;
    let listener = apiary_net::replication::serve(tcp, rep.clone());
    println!("serving {} bee(s) for replication on {addr}", open.len());
    for (name, w) in &open {
        println!("  {name}  {}", w.bee().core().key().to_url());
    }
    if let Some(c) = &control {
        println!("commands run here through {}", c.path().display());
    }
    if let Some((s, _)) = &swarm {
        println!(
            "announcing every bee on the DHT as {}",
            hex::encode(s.public_key())
        );
    }
    let page_task = if args.no_page {
        None
    } else {
        let a = args
            .page
            .or_else(|| file.page.clone())
            .unwrap_or_else(|| config::DEFAULT_PAGE.into());
        let a = config::addr("page address", &a)?;
        let (bound, task) = page::serve(bees.clone(), a).await?;
        println!("local page: http://{bound}/");
        if !bound.ip().is_loopback() {
            eprintln!("warning: the local page has no login and is reachable beyond this machine");
        }
        Some(task)
    };
    let mut aggregators = file.aggregators.clone();
    aggregators.extend(args.aggregators);
    let dialers: Vec<_> = aggregators
        .into_iter()
        .map(|a| {
            let span = tracing::info_span!("dial", aggregator = %a);
            tokio::spawn(dial_loop(rep.clone(), a).instrument(span))
        })
        .collect();
    let watcher = tokio::spawn(print_connections(rep.clone()));

    stop_signal().await;
    println!("shutting down");
    if let Some((s, task)) = swarm {
        task.abort();
        s.shutdown().await;
    }
    if let Some(c) = control {
        c.close();
    }
    created.abort();
    listener.abort();
    watcher.abort();
    for d in dialers {
        d.abort();
    }
    if let Some(t) = page_task {
        t.abort();
    }
    for c in rep.connections() {
        c.close();
    }
    bees.flush().await?;
    Ok(())
}

/// Announces every bee on the DHT (server mode, under the publisher's own identity), bees
/// created while serving too, and replicates with every peer that finds one. The swarm keeps
/// its topics across bridge restarts.
fn announce(
    bees: &Arc<Bees>,
    bootstrap: Vec<String>,
    bridge_dir: Option<std::path::PathBuf>,
    data_dir: &Path,
) -> (Swarm, tokio::task::JoinHandle<()>) {
    let cache = bridge_dir.unwrap_or_else(|| apiary_swarm::install::default_cache_dir(data_dir));
    let mut opts = SwarmOptions::new(bees.identity_seed(), cache);
    if !bootstrap.is_empty() {
        opts = opts.with_bootstrap(bootstrap);
    }
    let (swarm, mut sessions) = Swarm::start(opts);
    let mut created = bees.subscribe_created();
    let mut named = Vec::new();
    if let Ok(list) = bees.list() {
        for (name, info) in list {
            if let Ok(key) = apiary_core::Key::parse(&info.key) {
                named.push((name, key));
            }
        }
    }
    for (name, key) in named {
        join(&swarm, name, key);
    }
    let rep = bees.replicator().clone();
    let s = swarm.clone();
    // DHT sessions' connection tasks (and their "conn" spans) start in this one's span.
    let task = tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    // announce_all: the replicator opens a channel for every bee on it.
                    Some(d) = sessions.recv() => {
                        rep.attach(d.session);
                    }
                    c = created.recv() => match c {
                        Ok((name, key)) => join(&s, name, key),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            for r in rep.replicas() {
                                s.join(*r.discovery_key(), JoinMode::SERVER);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    else => return,
                }
            }
        }
        .instrument(tracing::info_span!("discovery")),
    );
    (swarm, task)
}

/// Announces one bee, and says so once the announce reached the DHT.
fn join(swarm: &Swarm, name: String, key: apiary_core::Key) {
    let dk = key.discovery_key();
    swarm.join(dk, JoinMode::SERVER);
    let s = swarm.clone();
    tokio::spawn(
        async move {
            s.flushed(&dk).await;
            println!("announced on the DHT: {name}  {}", key.to_url());
        }
        .in_current_span(),
    );
}

/// Waits for Ctrl-C, or SIGTERM (what service managers send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Prints the bees created while serving (they are shared at once: `Bees::create` registers
/// them with the replicator).
async fn print_created(mut rx: tokio::sync::broadcast::Receiver<(String, apiary_core::Key)>) {
    loop {
        match rx.recv().await {
            Ok((name, key)) => println!("new bee: {name}  {}", key.to_url()),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Dials an aggregator and keeps the connection up: 1 s backoff doubling to 60 s, reset after a
/// connection that lasted.
async fn dial_loop(rep: Replicator, addr: String) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match rep.connect(&addr).await {
            Ok(conn) => {
                let since = tokio::time::Instant::now();
                let why = conn.closed().await.err().unwrap_or_else(|| "closed".into());
                println!("aggregator {addr}: disconnected ({why})");
                if since.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_secs(1);
                }
            }
            Err(e) => eprintln!("aggregator {addr}: {e}; retrying in {}s", backoff.as_secs()),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

async fn print_connections(rep: Replicator) {
    let mut known = BTreeSet::new();
    loop {
        let now: BTreeSet<(String, String)> = rep
            .connections()
            .iter()
            .map(|c| {
                let i = c.info();
                let dir = if i.is_initiator { "out" } else { "in" };
                (
                    i.remote_label.clone(),
                    format!("{dir}, peer {}", hex::encode(&i.remote_public_key[..8])),
                )
            })
            .collect();
        for (label, what) in now.difference(&known) {
            println!("connected: {label} ({what})");
        }
        for (label, _) in known.difference(&now) {
            println!("disconnected: {label}");
        }
        known = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
