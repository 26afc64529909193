//! The Rust port of the dataset generator (`src/data.rs`), checked against `js/data.js`.
//!
//!   bench-data --lines [--n 100000]   # print the dataset as text
//!   bench-data --check [--n 100000]   # compare with `node js/data.js --lines N`
//!
//! The text is a line `vocab <the 2000 words, comma separated>`, then one line per post:
//! `<key> <value JSON>`. `--check` reads node's lines and ours, reports the first line that
//! differs (if any) and the SHA-256 of both texts; it exits 1 unless they are byte-identical.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::process::{Command, Stdio};

use apiary_bench::data::{post, vocab, Prng};
use clap::Parser;
use sha2::{Digest, Sha256};

use apiary_bench::BoxError;

/// Prints or checks the benchmark dataset.
#[derive(Debug, Parser)]
struct Args {
    /// Posts.
    #[arg(long, default_value_t = 100_000)]
    n: u64,
    /// Print the lines.
    #[arg(long, conflicts_with = "check")]
    lines: bool,
    /// Compare with `node js/data.js --lines N`.
    #[arg(long)]
    check: bool,
    /// The JS generator.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/js/data.js"))]
    js: String,
}

/// Our lines, one at a time (each ends with '\n').
fn lines(n: u64) -> impl Iterator<Item = String> {
    let head = std::iter::once(format!("vocab {}\n", vocab().join(",")));
    let mut rand = Prng::new(1);
    head.chain((0..n).map(move |i| {
        let p = post(i, &mut rand);
        format!("{} {}\n", p.key, p.value_json())
    }))
}

fn main() {
    let args = Args::parse();
    let r = if args.check {
        check(&args)
    } else {
        print(&args)
    };
    if let Err(e) = r {
        eprintln!("bench-data: {e}");
        std::process::exit(1);
    }
}

fn print(args: &Args) -> Result<(), BoxError> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for l in lines(args.n) {
        out.write_all(l.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn check(args: &Args) -> Result<(), BoxError> {
    let mut child = Command::new("node")
        .arg(&args.js)
        .arg("--lines")
        .arg(args.n.to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout from node")?;
    let mut js = BufReader::new(stdout);
    let (mut h_js, mut h_rs) = (Sha256::new(), Sha256::new());
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut first_diff = None;
    let mut buf = String::new();
    for (k, ours) in lines(args.n).enumerate() {
        buf.clear();
        js.read_line(&mut buf)?;
        h_js.update(buf.as_bytes());
        h_rs.update(ours.as_bytes());
        bytes += ours.len() as u64;
        count += 1;
        if first_diff.is_none() && buf != ours {
            first_diff = Some((k, buf.clone(), ours));
        }
    }
    // Anything node printed beyond our lines is a difference too.
    buf.clear();
    while js.read_line(&mut buf)? > 0 {
        h_js.update(buf.as_bytes());
        if first_diff.is_none() {
            first_diff = Some((count as usize, buf.clone(), String::new()));
        }
        buf.clear();
    }
    let status = child.wait()?;
    let (a, b) = (hex::encode(h_js.finalize()), hex::encode(h_rs.finalize()));
    println!("js   sha256 {a}");
    println!("rust sha256 {b}");
    if !status.success() {
        return Err(format!("node exited with {status}").into());
    }
    if let Some((k, j, r)) = first_diff {
        let what = if k == 0 {
            "the vocabulary line".to_string()
        } else {
            format!("post {}", k - 1)
        };
        return Err(format!(
            "{what} differs:\n  js:   {}\n  rust: {}",
            j.trim_end(),
            r.trim_end()
        )
        .into());
    }
    println!(
        "ok: vocabulary + {} posts byte-identical to js/data.js ({count} lines, {bytes} bytes)",
        args.n
    );
    Ok(())
}
