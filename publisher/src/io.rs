//! Listing, importing and exporting entries.
//!
//! Import reads the whole JSONL file first and checks every line (`{"key": string, "value":
//! any JSON}`); a bad line is reported with its number and nothing is written. Then entries
//! go in batches, each appended and signed once, with a progress line on stderr.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use apiary_core::bee::{Bee, BeeWriter, Op};
use serde_json::{json, Value};

use crate::entries;
use crate::error::{Error, Result};

/// Entries as `{key, seq, value}` JSON.
pub async fn list(
    bee: &Bee,
    prefix: Option<&str>,
    reverse: bool,
    limit: Option<usize>,
) -> Result<Vec<Value>> {
    let opts = crate::prefix_range(prefix, reverse, limit);
    let all = bee.snapshot().range(opts).await?;
    Ok(all
        .into_iter()
        .map(|e| {
            json!({
                "key": String::from_utf8_lossy(&e.key),
                "seq": e.seq,
                "value": entries::decode_value(e.value.as_deref()),
            })
        })
        .collect())
}

/// Parses one import line.
pub fn parse_line(line: &str) -> std::result::Result<(String, Vec<u8>), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let key = v
        .get("key")
        .and_then(Value::as_str)
        .ok_or("needs a string \"key\"")?
        .to_owned();
    entries::check_key(&key).map_err(|e| e.to_string())?;
    let value = v.get("value").ok_or("needs a \"value\"")?;
    let bytes = entries::encode_value(value).map_err(|e| e.to_string())?;
    Ok((key, bytes))
}

/// Imports a JSONL file into a bee; returns the number of entries written.
pub async fn import(w: &BeeWriter, file: &Path, batch: usize) -> Result<usize> {
    let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let mut items = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(file, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let (k, v) = parse_line(&line).map_err(|e| {
            Error::BadInput(format!(
                "{} line {}: {e}; nothing was imported",
                file.display(),
                i + 1
            ))
        })?;
        items.push(Op::Put {
            key: k.into_bytes(),
            value: v,
        });
    }
    let total = items.len();
    let tty = std::io::stderr().is_terminal();
    let mut done = 0;
    let mut iter = items.into_iter().peekable();
    while iter.peek().is_some() {
        let chunk: Vec<Op> = iter.by_ref().take(batch).collect();
        done += chunk.len();
        w.batch(chunk).await?;
        if tty {
            let pct = done * 100 / total.max(1);
            let bar = "#".repeat(pct / 4);
            eprint!("\rimporting [{bar:<25}] {done}/{total} ({pct}%)");
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprintln!();
    } else {
        eprintln!("imported {done}/{total}");
    }
    Ok(total)
}

/// Writes every entry as `{key, value}` JSONL; returns the count.
pub async fn export(bee: &Bee, file: Option<&Path>) -> Result<usize> {
    let mut out: Box<dyn Write> = match file {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| Error::io(p, e))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut it = bee.snapshot().range_iter(Default::default());
    let mut n = 0;
    let path = file.unwrap_or(Path::new("stdout"));
    while let Some(e) = it.next().await? {
        let line = json!({"key": String::from_utf8_lossy(&e.key), "value": entries::decode_value(e.value.as_deref())});
        writeln!(out, "{line}").map_err(|e| Error::io(path, e))?;
        n += 1;
    }
    out.flush().map_err(|e| Error::io(path, e))?;
    Ok(n)
}
