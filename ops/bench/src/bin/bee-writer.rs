//! Rust writer of the writer/server benchmark: the counterpart of `js/writer.js`.
//!
//!   bee-writer [--n 100000] [--batch 1000] [--seed 1] [--threads T]
//!
//! Builds a bee with `apiary_core::bee::BeeWriter` in a fresh sled store (temp dir): `n` posts
//! of the benchmark dataset (`src/data.rs`, the same keys and values as `js/data.js`), in
//! batches of `batch` (one `BeeWriter::batch`, so one signed append, per batch), exactly as
//! `js/writer.js` builds its bee. Generating the posts is inside the timing, as in JS. Then it
//! serves the core (`Replicator::listen`, Noise responder, `announce_all`) on
//! 127.0.0.1:<random port> and prints one JSON line:
//!   {"key", "port", "length", "byteLength", "buildSeconds", "n", "putsPerSec", "cpu", ...}
//! After that it answers lines on stdin, one JSON line each on stdout (as `js/writer.js`):
//!   "cpu"  -> {"user": s, "system": s, "maxRssMB": MB}   (/proc/self/stat since start)
//!   "live INTERVAL_MS COUNT" -> puts COUNT more posts, one every INTERVAL_MS on a fixed
//!            schedule (post(n + i) from PRNG seed 99, as the reference live.js), each value
//!            carrying `"pubNs"`: CLOCK_MONOTONIC in ns taken just before the put; then prints
//!            {"published", "publishSeconds", "writerLateTicks", "writerPutP50ms", ...}
//!   "quit" -> exits (so does stdin EOF).

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary_bench::data::{post, Prng};
use apiary_bench::sys::{cpu_json, cpu_seconds, max_rss_mb, monotonic_ns, pct, round};
use apiary_core::bee::{BeeWriter, Op};
use apiary_core::crypto::KeyPair;
use apiary_core::replicate::ReplicatorOptions;
use clap::Parser;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use apiary_bench::BoxError;

/// Builds the benchmark bee with BeeWriter, serves it, and answers stdin commands.
#[derive(Debug, Parser)]
struct Args {
    /// Posts.
    #[arg(long, default_value_t = 100_000)]
    n: u64,
    /// Posts per batch (one signed append each).
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// PRNG seed of the posts.
    #[arg(long, default_value_t = 1)]
    seed: u32,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() {
    let args = Args::parse();
    apiary_bench::run_main("bee-writer", args.threads, || async {
        run(&args).await.map(|()| serde_json::Value::Null)
    });
}

async fn run(args: &Args) -> Result<(), BoxError> {
    let (_dir, rep) = apiary_bench::temp_replicator(
        "beewriter",
        ReplicatorOptions {
            announce_all: true,
            ..Default::default()
        },
    )?;
    let core = rep.create_core(KeyPair::generate(), false)?;
    let writer = Arc::new(BeeWriter::new(core.clone())?);

    let cpu0 = cpu_seconds()?;
    let mut rand = Prng::new(args.seed);
    let batch = args.batch.max(1);
    let t0 = Instant::now();
    let mut i = 0;
    while i < args.n {
        let end = args.n.min(i + batch);
        let ops = (i..end)
            .map(|j| {
                let p = post(j, &mut rand);
                let value = p.value_json().into_bytes();
                Op::Put {
                    key: p.key.into_bytes(),
                    value,
                }
            })
            .collect();
        writer.batch(ops).await?;
        i = end;
    }
    let build_seconds = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds()?;
    // Not part of buildSeconds (JS does not sync either): how long sled takes to flush.
    let t_flush = Instant::now();
    rep.store().flush().await?;
    let flush_seconds = t_flush.elapsed().as_secs_f64();

    let (addr, _server) = rep.listen("127.0.0.1:0").await?;
    let head = core.head();
    println!(
        "{}",
        json!({
            "key": core.key().to_hex(),
            "port": addr.port(),
            "length": head.length,
            "byteLength": head.byte_length(),
            "buildSeconds": round(build_seconds, 3),
            "n": args.n,
            "putsPerSec": (args.n as f64 / build_seconds).round() as u64,
            "buildCpuSeconds": round((cpu1.0 + cpu1.1) - (cpu0.0 + cpu0.1), 3),
            "flushSeconds": round(flush_seconds, 3),
            "cpu": cpu_json()?,
            "maxRssMB": max_rss_mb()?,
            "tool": "rust",
        })
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut next_post = args.n;
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["cpu"] => println!("{}", cpu_json()?),
            ["quit"] => break,
            ["live", interval, count] => {
                let interval: u64 = interval.parse()?;
                let count: u64 = count.parse()?;
                let r = live(&writer, next_post, interval, count).await?;
                next_post += count;
                println!("{r}");
            }
            _ => println!("{}", json!({ "error": format!("unknown command {line}") })),
        }
    }
    Ok(())
}

/// Puts `count` posts, one every `interval_ms` on a fixed schedule (no drift), each stamped
/// with CLOCK_MONOTONIC just before its put, as the reference live.js does.
async fn live(
    writer: &BeeWriter,
    first: u64,
    interval_ms: u64,
    count: u64,
) -> Result<serde_json::Value, BoxError> {
    let mut rand = Prng::new(99);
    let interval = Duration::from_millis(interval_ms);
    let t0 = tokio::time::Instant::now();
    let mut late = 0u64;
    let mut put_ms = Vec::with_capacity(count as usize);
    for i in 0..count {
        let due = t0 + interval * u32::try_from(i)?;
        let now = tokio::time::Instant::now();
        if due > now {
            tokio::time::sleep_until(due).await;
        } else if now - due > interval {
            late += 1;
        }
        let p = post(first + i, &mut rand);
        let tp = monotonic_ns();
        let value = p.value_json_with_pub_ns(tp);
        writer.put(p.key.as_bytes(), value.as_bytes()).await?;
        put_ms.push((monotonic_ns() - tp) as f64 / 1e6);
    }
    let publish_seconds = t0.elapsed().as_secs_f64();
    put_ms.sort_by(f64::total_cmp);
    Ok(json!({
        "tool": "rust",
        "published": count,
        "intervalMs": interval_ms,
        "publishSeconds": round(publish_seconds, 3),
        "writerLateTicks": late,
        "writerPutP50ms": pct(&put_ms, 50.0).map(|x| round(x, 3)),
        "writerPutP99ms": pct(&put_ms, 99.0).map(|x| round(x, 3)),
        "writerPutMaxMs": put_ms.last().map(|x| round(*x, 3)),
        "length": writer.bee().core().length(),
        "cpu": cpu_json()?,
    }))
}
