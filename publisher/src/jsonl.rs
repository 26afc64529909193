//! Entries as JSON lines: listing, importing and exporting them.
//!
//! Import reads the whole JSONL file first and checks every line (`{"key": string, "value":
//! any JSON}`); a bad line is reported with its number and nothing is written. Then entries
//! go in batches, each appended and signed once, with a progress event after each batch.
//! The file is read on a blocking thread: inside `serve` an import must not hold up a
//! runtime worker that replication needs.

use std::io::BufRead;
use std::path::Path;

use apiary_core::bee::{Bee, BeeWriter, Op, RangeOptions};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::commands::Sink;
use crate::entries;
use crate::error::{Error, Result};

/// Entries as `{key, seq, value}` JSON.
pub async fn list(
    bee: &Bee,
    prefix: Option<&str>,
    reverse: bool,
    limit: Option<usize>,
) -> Result<Vec<Value>> {
    let opts = prefix_range(prefix, reverse, limit);
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

/// Reads and checks a whole import file: its ops, or the first bad line.
fn read_import(file: &Path) -> Result<Vec<Op>> {
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
    Ok(items)
}

/// Imports a JSONL file into a bee; returns the number of entries written.
pub async fn import(w: &BeeWriter, file: &Path, batch: usize, sink: &Sink) -> Result<usize> {
    let path = file.to_path_buf();
    let items = tokio::task::spawn_blocking(move || read_import(&path))
        .await
        .map_err(|e| Error::io(file, std::io::Error::other(e.to_string())))??;
    let total = items.len();
    if total == 0 {
        sink.progress(0, 0).await?;
    }
    let mut done = 0;
    let mut iter = items.into_iter().peekable();
    while iter.peek().is_some() {
        let chunk: Vec<Op> = iter.by_ref().take(batch).collect();
        done += chunk.len();
        w.batch(chunk).await?;
        sink.progress(done, total).await?;
    }
    Ok(total)
}

/// Writes every entry as `{key, value}` JSONL to `file`, or as stdout lines on `sink`;
/// returns the count.
pub async fn export(bee: &Bee, file: Option<&Path>, sink: &Sink) -> Result<usize> {
    let mut out = match file {
        Some(p) => {
            let f = tokio::fs::File::create(p)
                .await
                .map_err(|e| Error::io(p, e))?;
            Some((tokio::io::BufWriter::new(f), p))
        }
        None => None,
    };
    let mut it = bee.snapshot().range_iter(Default::default());
    let mut n = 0;
    while let Some(e) = it.next().await? {
        let line = json!({"key": String::from_utf8_lossy(&e.key), "value": entries::decode_value(e.value.as_deref())});
        match &mut out {
            Some((f, p)) => f
                .write_all(format!("{line}\n").as_bytes())
                .await
                .map_err(|e| Error::io(p, e))?,
            None => sink.out(line).await?,
        }
        n += 1;
    }
    if let Some((f, p)) = &mut out {
        f.flush().await.map_err(|e| Error::io(p, e))?;
    }
    Ok(n)
}

/// Range options for "keys starting with `prefix`".
pub fn prefix_range(prefix: Option<&str>, reverse: bool, limit: Option<usize>) -> RangeOptions {
    let mut o = RangeOptions {
        reverse,
        limit,
        ..Default::default()
    };
    if let Some(p) = prefix.filter(|p| !p.is_empty()) {
        o.gte = Some(p.as_bytes().to_vec());
        // The first key after every key that starts with `p`.
        let mut end = p.as_bytes().to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                o.lt = Some(end);
                break;
            }
        }
    }
    o
}
