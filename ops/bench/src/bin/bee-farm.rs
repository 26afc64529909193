//! Many bees served from one process on one port: the peer of the aggregator benchmark's
//! "1M entries" and "10k feeds" parts (`run-aggregator.sh`).
//!
//!   bee-farm --bees 10 --posts 100000 [--batch 1000] [--seed 1] --keys-out FILE [--threads T]
//!
//! Builds `bees` bees in one sled store (temp dir), each with `apiary_core`'s `BeeWriter` on a
//! fresh core (`Replicator::create_core`, a new key pair each): `posts` posts of the benchmark
//! dataset (`src/data.rs`) in batches of `batch` (one signed append per batch). Bee `b` draws
//! its posts from PRNG seed `seed + b`, so the texts, tags and dates (and so the keys, which
//! carry the date's jitter) differ from bee to bee while keeping the dataset's word
//! distribution. Then it serves every core on 127.0.0.1:<random port> (`Replicator::listen`
//! with `announce_all`), writes the core keys (hex, one a line) to `keys-out`, and prints one
//! JSON line:
//!   {"port", "bees", "postsPerBee", "length", "blocks", "byteLength", "buildSeconds", ...}
//! After that it answers lines on stdin, one JSON line each on stdout (as `bee-writer`):
//!   "cpu"  -> {"user": s, "system": s, "maxRssMB": MB}
//!   "quit" -> exits (so does stdin EOF).

use std::io::Write as _;
use std::time::Instant;

use apiary_bench::data::{post, Prng};
use apiary_bench::sys::{cpu_json, max_rss_mb, round};
use apiary_core::bee::{BeeWriter, Op};
use apiary_core::crypto::KeyPair;
use apiary_core::replicate::ReplicatorOptions;
use clap::Parser;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use apiary_bench::BoxError;

/// Builds many bees in one store and serves them all on one port.
#[derive(Debug, Parser)]
struct Args {
    /// Bees.
    #[arg(long, default_value_t = 10)]
    bees: u64,
    /// Posts per bee.
    #[arg(long, default_value_t = 1000)]
    posts: u64,
    /// Posts per batch (one signed append each).
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// PRNG seed of the first bee's posts; bee `b` uses `seed + b`.
    #[arg(long, default_value_t = 1)]
    seed: u32,
    /// Where to write the core keys (hex, one a line).
    #[arg(long)]
    keys_out: std::path::PathBuf,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() {
    let args = Args::parse();
    apiary_bench::run_main("bee-farm", args.threads, || async {
        run(&args).await.map(|()| serde_json::Value::Null)
    });
}

async fn run(args: &Args) -> Result<(), BoxError> {
    let (_dir, rep) = apiary_bench::temp_replicator(
        "beefarm",
        ReplicatorOptions {
            announce_all: true,
            ..Default::default()
        },
    )?;
    let batch = args.batch.max(1);
    let t0 = Instant::now();
    let mut keys = Vec::with_capacity(args.bees as usize);
    let (mut blocks, mut bytes, mut length) = (0u64, 0u64, 0u64);
    for b in 0..args.bees {
        let core = rep.create_core(KeyPair::generate(), false)?;
        let writer = BeeWriter::new(core.clone())?;
        let mut rand = Prng::new(args.seed.wrapping_add(u32::try_from(b)?));
        let mut i = 0;
        while i < args.posts {
            let end = args.posts.min(i + batch);
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
        let head = core.head();
        blocks += head.length;
        bytes += head.byte_length();
        length = head.length;
        keys.push(core.key().to_hex());
    }
    let build_seconds = t0.elapsed().as_secs_f64();
    rep.store().flush().await?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&args.keys_out)?);
    for k in &keys {
        writeln!(f, "{k}")?;
    }
    f.flush()?;
    drop(f);

    let (addr, _server) = rep.listen("127.0.0.1:0").await?;
    println!(
        "{}",
        json!({
            "port": addr.port(),
            "bees": args.bees,
            "postsPerBee": args.posts,
            "length": length,
            "blocks": blocks,
            "byteLength": bytes,
            "buildSeconds": round(build_seconds, 3),
            "keysFile": args.keys_out,
            "firstKey": keys.first(),
            "cpu": cpu_json()?,
            "maxRssMB": max_rss_mb()?,
        })
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "" => {}
            "cpu" => println!("{}", cpu_json()?),
            "quit" => break,
            other => println!("{}", json!({ "error": format!("unknown command {other}") })),
        }
    }
    Ok(())
}
