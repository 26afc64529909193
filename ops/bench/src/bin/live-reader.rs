//! Rust reader of the live latency benchmark: the counterpart of `js/live-reader.js`.
//!
//!   live-reader --port P --key HEX --count 1000 [--idle-timeout 15]
//!
//! Connects to a writer on 127.0.0.1 (Noise initiator, fresh sled store in a temp dir), waits
//! for its length, prints `{"ready": true, "start": version}` and then follows the bee live
//! from that version, like JS `createHistoryStream({live: true, gte: version})`: on every new
//! head (`Replica::subscribe`; the replica upgrades itself when the writer announces a new
//! length) it reads the new entries in order with `Bee::history_entry` (a block fetch each).
//! Each entry's value carries `"pubNs"`, the writer's CLOCK_MONOTONIC (ns) just before its
//! put; latency = our CLOCK_MONOTONIC when the entry is decoded - pubNs.
//! It stops after `count` entries, or after `idle-timeout` seconds without a new entry, and
//! prints one JSON line: {received, p50ms, p90ms, p99ms, maxMs, meanMs, ...}.

use std::time::Duration;

use apiary_bench::sys::{cpu_seconds, max_rss_mb, monotonic_ns, pct, round};
use apiary_core::bee::Bee;
use apiary_core::replicate::ReplicatorOptions;
use apiary_core::Key;
use clap::Parser;
use serde_json::json;

use apiary_bench::BoxError;

/// Follows a bee live and measures publish-to-read latency.
#[derive(Debug, Parser)]
struct Args {
    /// TCP port of the writer on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The core's public key (hex or z32).
    #[arg(long)]
    key: String,
    /// Entries to receive.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Give up after this many seconds without a new entry.
    #[arg(long, default_value_t = 15)]
    idle_timeout: u64,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() {
    let args = Args::parse();
    apiary_bench::run_main("live-reader", args.threads, || async { run(&args).await });
}

async fn run(args: &Args) -> Result<serde_json::Value, BoxError> {
    let (_dir, rep) = apiary_bench::temp_replicator("rslive", ReplicatorOptions::default())?;
    let core = rep.replica(Key::parse(&args.key)?)?;
    let conn = rep.connect(&format!("127.0.0.1:{}", args.port)).await?;
    conn.open(&core).await?;
    let length = core.update(Duration::from_secs(10)).await?;
    if length == 0 {
        return Err("the writer's length is still 0 after update".into());
    }
    let bee = Bee::new(core.clone());
    let start = bee.version();
    let mut head = core.subscribe();
    println!("{}", json!({ "ready": true, "start": start }));

    let cpu0 = cpu_seconds()?;
    let mut lat = Vec::with_capacity(args.count);
    let mut next = start;
    let mut missing_stamp = 0u64;
    let idle = Duration::from_secs(args.idle_timeout);
    'outer: while lat.len() < args.count {
        let length = head.borrow_and_update().length;
        while next < length {
            let e = bee.history_entry(next).await?;
            let now = monotonic_ns();
            next += 1;
            match e.entry.value.as_deref().and_then(pub_ns) {
                Some(ns) => lat.push(now.saturating_sub(ns) as f64 / 1e6),
                None => missing_stamp += 1,
            }
            if lat.len() >= args.count {
                break 'outer;
            }
        }
        match tokio::time::timeout(idle, head.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err("the core was dropped".into()),
            Err(_) => break, // nothing new for `idle`: report what arrived
        }
    }
    let cpu1 = cpu_seconds()?;
    let mean = lat.iter().sum::<f64>() / (lat.len().max(1) as f64);
    let mut sorted = lat;
    sorted.sort_by(f64::total_cmp);
    let r3 = |x: Option<f64>| x.map(|v| round(v, 3));
    let out = json!({
        "tool": "rust",
        "received": sorted.len(),
        "p50ms": r3(pct(&sorted, 50.0)),
        "p90ms": r3(pct(&sorted, 90.0)),
        "p99ms": r3(pct(&sorted, 99.0)),
        "maxMs": r3(sorted.last().copied()),
        "meanMs": round(mean, 3),
        "start": start,
        "length": core.length(),
        "withoutStamp": missing_stamp,
        "readerCpuSeconds": round((cpu1.0 + cpu1.1) - (cpu0.0 + cpu0.1), 3),
        "readerMaxRssMB": max_rss_mb()?,
    });
    conn.close();
    Ok(out)
}

/// The `pubNs` field of a value: a decimal string (as JS stores a BigInt) or a number.
fn pub_ns(value: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    match v.get("pubNs")? {
        serde_json::Value::String(s) => s.parse().ok(),
        n => n.as_u64(),
    }
}
