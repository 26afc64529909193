//! Proof bundles under load of one: for each query of the reference set, the first hit of
//! `/v1/search` and then its `proof` link, one request at a time. Times the proof request
//! (build + JSON + loopback: what a client waits for), its size and shape, and verifies each
//! bundle in process with `apiary_core::bundle` (the time of the check alone).
//!
//!   proof-client --http URL [--n 1000] [--seed 7] [--out DIR] [--label L]
//!
//! Prints one JSON line: latency percentiles, bytes, blocks and nodes per bundle, the Rust
//! verify time, the formats served (bee proofs, inclusion proofs), errors. With --out, every
//! bundle is written there (for `js/verify-time.js`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use apiary_bench::data::reference_queries;
use apiary_bench::BoxError;
use apiary_core::bundle::{self, Bundle, Inclusion};
use apiary_core::Key;
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the aggregator's HTTP API.
    #[arg(long)]
    http: String,
    /// Queries of the reference set (one proof each, for its first hit).
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// PRNG seed of the query set.
    #[arg(long, default_value_t = 7)]
    seed: u32,
    /// Where to write the bundles.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Label of the run.
    #[arg(long, default_value = "")]
    label: String,
}

fn main() {
    let args = Args::parse();
    apiary_bench::run_main("proof-client", Some(2), || run(args));
}

fn pcts(mut v: Vec<f64>, digits: i32) -> Value {
    if v.is_empty() {
        return json!({"count": 0});
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        let x = v.get(i).copied().unwrap_or(f64::NAN);
        let m = 10f64.powi(digits);
        (x * m).round() / m
    };
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    json!({"count": v.len(), "p50": at(50.0), "p99": at(99.0), "max": at(100.0),
           "mean": (mean * 10f64.powi(digits)).round() / 10f64.powi(digits)})
}

async fn run(args: Args) -> Result<Value, BoxError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    if let Some(d) = &args.out {
        std::fs::create_dir_all(d)?;
    }
    let (mut ms, mut bytes, mut blocks, mut nodes, mut verify_us) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut full, mut inclusion, mut errors, mut refused, mut no_hit) = (0, 0, 0, 0, 0);
    let mut first_error = None;
    for (i, q) in reference_queries(args.n, args.seed).iter().enumerate() {
        let hits: Value = http
            .get(format!("{}/v1/search", args.http))
            .query(&[("q", q.as_str()), ("limit", "1")])
            .send()
            .await?
            .json()
            .await?;
        let Some(link) = hits["entries"][0]["proof"].as_str() else {
            no_hit += 1;
            continue;
        };
        let t = Instant::now();
        let r = http.get(format!("{}{link}", args.http)).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        let took = t.elapsed().as_secs_f64() * 1000.0;
        if !status.is_success() {
            errors += 1;
            first_error
                .get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
            continue;
        }
        ms.push(took);
        bytes.push(body.len() as f64);
        let v: Value = serde_json::from_slice(&body)?;
        let key = Key::parse(v["feed"].as_str().unwrap_or(""))?;
        let t = Instant::now();
        let ok = match v["format"].as_str() {
            Some(bundle::FORMAT) => {
                full += 1;
                let b: Bundle = serde_json::from_value(v.clone())?;
                blocks.push(b.blocks.len() as f64);
                nodes.push(b.nodes.len() as f64);
                bundle::verify(&b, &key).is_ok()
            }
            _ => {
                inclusion += 1;
                let p: Inclusion = serde_json::from_value(v.clone())?;
                bundle::verify_inclusion(&p, &key).is_ok()
            }
        };
        verify_us.push(t.elapsed().as_secs_f64() * 1e6);
        if !ok {
            refused += 1;
        }
        if let Some(d) = &args.out {
            std::fs::write(d.join(format!("{i:05}.json")), &body)?;
        }
    }
    Ok(json!({
        "label": args.label,
        "proofs": ms.len(),
        "fullBundles": full,
        "inclusionProofs": inclusion,
        "errors": errors,
        "firstError": first_error,
        "refusedByVerify": refused,
        "queriesWithoutHit": no_hit,
        "latencyMs": pcts(ms, 3),
        "bytes": pcts(bytes, 0),
        "blocks": pcts(blocks, 1),
        "nodes": pcts(nodes, 1),
        "rustVerifyUs": pcts(verify_us, 1),
    }))
}
