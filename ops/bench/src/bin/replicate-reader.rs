//! Rust reader of the replication benchmark: the counterpart of `js/reader.js`.
//!
//! One fresh process, one fresh sled store in a temp dir, one TCP connection (Noise XX +
//! secret-stream, as initiator) to the JS writer, one phase:
//!
//! - `full`: `download_range(0, length, parallel)`;
//! - `tail`: `Bee::history(gte = -tail)`, i.e. the last `tail` entries. `Bee::history` fetches
//!   its blocks one at a time, in order, like JS `createHistoryStream`.
//!
//! `seconds` covers the phase only; connecting, the handshake and the first update are
//! `connectMs` (split into `handshakeMs`, TCP + Noise, and `updateMs`, open + first update).
//! Prints one JSON line with the same fields as `js/reader.js`. CPU comes from
//! `/proc/self/stat` (whole process; `phaseCpuSeconds` is the phase only), peak RSS from
//! `VmHWM` in `/proc/self/status`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary_core::bee::{Bee, HistoryOptions};
use apiary_core::replicate::{Replica, ReplicatorOptions};
use apiary_core::Key;
use clap::{Parser, ValueEnum};
use serde_json::json;

use apiary_bench::sys::{cpu_seconds, max_rss_mb, round};
use apiary_bench::BoxError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Download every block.
    Full,
    /// Read the last `--tail` entries through the bee's history.
    Tail,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Tail => "tail",
        }
    }
}

/// Replicates a Hyperbee from a writer on 127.0.0.1 and prints one JSON line of figures.
#[derive(Debug, Parser)]
struct Args {
    /// TCP port of the writer on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The core's public key (hex or z32).
    #[arg(long)]
    key: String,
    /// What to fetch.
    #[arg(long, value_enum, default_value = "full")]
    mode: Mode,
    /// Entries read in tail mode.
    #[arg(long, default_value_t = 1000)]
    tail: u64,
    /// Requests in flight in full mode.
    #[arg(long, default_value_t = 256)]
    parallel: usize,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds to wait for the writer's length.
    #[arg(long, default_value_t = 10)]
    update_wait: u64,
    /// Diagnostics: turn off the replica's automatic upgrade on a peer's sync, so only our
    /// explicit `update` fetches the head (see README.md, "the 5 s connect stall").
    #[arg(long)]
    no_auto_upgrade: bool,
    /// Print progress (blocks so far, rate) to stderr every this many ms (0 = never).
    #[arg(long, default_value_t = 0)]
    progress_ms: u64,
}

fn main() {
    let args = Args::parse();
    apiary_bench::run_main("replicate-reader", args.threads, || async {
        run(&args).await
    });
}

async fn run(args: &Args) -> Result<serde_json::Value, BoxError> {
    let mut opts = ReplicatorOptions::default();
    opts.replica.auto_upgrade = !args.no_auto_upgrade;
    let (dir, rep) = apiary_bench::temp_replicator("rsreader", opts)?;
    let core = rep.replica(Key::parse(&args.key)?)?;

    let t_connect = Instant::now();
    let conn = rep.connect(&format!("127.0.0.1:{}", args.port)).await?;
    let handshake_ms = t_connect.elapsed().as_secs_f64() * 1000.0;
    conn.open(&core).await?;
    let t_update = Instant::now();
    let length = core.update(Duration::from_secs(args.update_wait)).await?;
    let update_ms = t_update.elapsed().as_secs_f64() * 1000.0;
    let connect_ms = t_connect.elapsed().as_secs_f64() * 1000.0;
    if length == 0 {
        return Err("the writer's length is still 0 after update".into());
    }

    let progress = (args.progress_ms > 0).then(|| spawn_progress(core.clone(), args.progress_ms));
    let cpu0 = cpu_seconds()?;
    let t0 = Instant::now();
    let mut entries = None;
    match args.mode {
        Mode::Full => core.download_range(0, length, args.parallel).await?,
        Mode::Tail => {
            let bee = Bee::new(core.clone());
            let gte = -i64::try_from(args.tail)?;
            let got = bee
                .history(&HistoryOptions {
                    gte: Some(gte),
                    ..Default::default()
                })
                .await?;
            entries = Some(got.iter().filter(|e| e.entry.value.is_some()).count());
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds()?;
    if let Some(p) = progress {
        p.abort();
    }

    let blocks = core.stats.blocks.load(Ordering::Relaxed);
    let bytes = core.stats.bytes.load(Ordering::Relaxed);
    let t_count = Instant::now();
    let stored = core.store().block_count()?;
    let count_ms = t_count.elapsed().as_secs_f64() * 1000.0;
    let (user, system) = cpu1;
    let mut out = json!({
        "tool": "rust",
        "mode": args.mode.name(),
        "seconds": round(seconds, 3),
        "blocks": blocks,
        "bytes": bytes,
        "blocksPerSec": (blocks as f64 / seconds).round() as u64,
        "MBps": round(bytes as f64 / 1e6 / seconds, 3),
        "cpuUser": round(user, 3),
        "cpuSystem": round(system, 3),
        "maxRssMB": max_rss_mb()?,
        "length": length,
        "blocksFraction": round(blocks as f64 / length as f64, 5),
        "phaseCpuSeconds": round((cpu1.0 + cpu1.1) - (cpu0.0 + cpu0.1), 3),
        "connectMs": round(connect_ms, 1),
        "handshakeMs": round(handshake_ms, 1),
        "updateMs": round(update_ms, 1),
        "stored": stored,
        "countMs": round(count_ms, 1),
        "threads": args.threads,
    });
    if let Some(obj) = out.as_object_mut() {
        match args.mode {
            Mode::Full => {
                obj.insert("parallel".into(), json!(args.parallel));
            }
            Mode::Tail => {
                obj.insert("tail".into(), json!(args.tail));
                obj.insert("entries".into(), json!(entries));
            }
        }
    }

    // Teardown (not part of `seconds`): closing, dropping the store (sled flushes), removing
    // the temp dir.
    let t_down = Instant::now();
    conn.close();
    drop(core);
    drop(rep);
    let close_ms = t_down.elapsed().as_secs_f64() * 1000.0;
    drop(dir);
    let teardown_ms = t_down.elapsed().as_secs_f64() * 1000.0;
    if let Some(obj) = out.as_object_mut() {
        obj.insert("closeMs".into(), json!(round(close_ms, 1)));
        obj.insert("teardownMs".into(), json!(round(teardown_ms, 1)));
    }
    Ok(out)
}

/// Prints blocks so far and the rate since the last tick, to stderr.
fn spawn_progress(core: Arc<Replica>, every_ms: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = (0u64, Instant::now());
        let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
        tick.tick().await;
        loop {
            tick.tick().await;
            let blocks = core.stats.blocks.load(Ordering::Relaxed);
            let dt = last.1.elapsed().as_secs_f64();
            let cpu = cpu_seconds().map(|(u, s)| u + s).unwrap_or(f64::NAN);
            eprintln!(
                "[replicate-reader] t={:.1}s blocks={} (+{:.0}/s) cpu={:.2}s",
                start.elapsed().as_secs_f64(),
                blocks,
                (blocks - last.0) as f64 / dt,
                cpu
            );
            last = (blocks, Instant::now());
        }
    })
}
