//! The bee commands, written once. The CLI runs them here when it can open the data directory;
//! while `serve` holds it, the CLI forwards the parsed [`BeeCommand`] over the control socket
//! (`control`) and `serve` runs the same [`run`], so both ways print the same lines and fail
//! with the same errors. The local page calls the per-command functions for its endpoints.
//!
//! A command shows its output as [`Event`]s on a [`Sink`] instead of printing: locally a
//! [`Terminal`] prints them, through `serve` they travel as JSON lines and the CLI's
//! `Terminal` prints them there (so progress is drawn for the terminal the user looks at).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::bees::Bees;
use crate::entries;
use crate::error::{Error, Result};
use crate::jsonl;

/// A command over the bees: parsed from the command line, and the request of the control
/// socket (`{"cmd": "put", "name": …, "key": …, "json": …}`, see `control`).
#[derive(Debug, Clone, clap::Subcommand, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum BeeCommand {
    /// Create a bee and print its key.
    Init {
        /// Name of the bee.
        #[arg(default_value = "default")]
        name: String,
        /// Make an old-style (compat) core whose key is its public key.
        #[arg(long)]
        #[serde(default)]
        compat: bool,
    },
    /// List bees with their length and version.
    Bees,
    /// Put a JSON value under a key.
    Put {
        /// Bee name.
        name: String,
        /// Key (UTF-8).
        key: String,
        /// Value (JSON text).
        json: String,
    },
    /// Print the value under a key.
    Get {
        /// Bee name.
        name: String,
        /// Key.
        key: String,
    },
    /// Delete a key.
    Del {
        /// Bee name.
        name: String,
        /// Key.
        key: String,
    },
    /// List entries as JSON lines.
    List {
        /// Bee name.
        name: String,
        /// Only keys starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Newest key first.
        #[arg(long)]
        #[serde(default)]
        reverse: bool,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Write a post: {"type":"post","text","createdAt","tags"} under a time-sortable key.
    Post {
        /// Bee name.
        name: String,
        /// The text.
        text: String,
        /// A tag (repeatable).
        #[arg(long = "tag", value_name = "T")]
        #[serde(default)]
        tags: Vec<String>,
    },
    /// Import a JSONL file of {"key": …, "value": …} lines (all or nothing).
    Import {
        /// Bee name.
        name: String,
        /// The file.
        file: PathBuf,
        /// Entries per written batch.
        #[arg(long, default_value_t = DEFAULT_BATCH)]
        #[serde(default = "default_batch")]
        batch: usize,
    },
    /// Export every entry as JSONL (to a file or stdout).
    Export {
        /// Bee name.
        name: String,
        /// Output file (default: stdout).
        file: Option<PathBuf>,
    },
    /// Not a command of the command line: the record of a bee, which is what `register`
    /// needs (its key is not secret) from a `serve` that holds the data directory.
    #[command(skip)]
    Info {
        /// Bee name.
        name: String,
    },
}

const DEFAULT_BATCH: usize = 1000;

fn default_batch() -> usize {
    DEFAULT_BATCH
}

impl BeeCommand {
    /// Whether the command writes (and so flushes before it reports success).
    fn writes(&self) -> bool {
        matches!(
            self,
            BeeCommand::Init { .. }
                | BeeCommand::Put { .. }
                | BeeCommand::Del { .. }
                | BeeCommand::Post { .. }
                | BeeCommand::Import { .. }
        )
    }

    /// The file the command reads or writes, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            BeeCommand::Import { file, .. } => Some(file),
            BeeCommand::Export { file, .. } => file.as_deref(),
            _ => None,
        }
    }

    /// Makes the file path absolute against this process's directory, so that `serve` (which
    /// runs elsewhere) opens the file the user named, and both ways report the same path.
    pub fn absolutize(&mut self) -> Result<()> {
        let file = match self {
            BeeCommand::Import { file, .. } => file,
            BeeCommand::Export {
                file: Some(file), ..
            } => file,
            _ => return Ok(()),
        };
        *file = std::path::absolute(&*file).map_err(|e| Error::io(file, e))?;
        Ok(())
    }
}

/// What a command shows while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A line for stdout.
    Out(String),
    /// A line for stderr.
    Note(String),
    /// Import progress: entries written so far, of `total` (sent after each batch).
    Progress {
        /// Written so far.
        done: u64,
        /// All of them.
        total: u64,
    },
}

/// Where a command sends its [`Event`]s. Bounded, so a reader that does not keep up (a slow
/// terminal, a socket client) slows the command instead of growing memory.
#[derive(Debug, Clone)]
pub struct Sink(mpsc::Sender<Event>);

impl Sink {
    /// A sink and the receiving end.
    pub fn channel() -> (Sink, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(256);
        (Sink(tx), rx)
    }

    async fn send(&self, e: Event) -> Result<()> {
        // The receiver goes away when a socket client disconnects: stop the command then,
        // as Ctrl-C stops a local one.
        self.0
            .send(e)
            .await
            .map_err(|_| Error::Control("the client went away; command stopped".into()))
    }

    /// A line for stdout.
    pub async fn out(&self, line: impl ToString) -> Result<()> {
        self.send(Event::Out(line.to_string())).await
    }

    /// A line for stderr.
    pub async fn note(&self, line: impl ToString) -> Result<()> {
        self.send(Event::Note(line.to_string())).await
    }

    /// Import progress.
    pub async fn progress(&self, done: usize, total: usize) -> Result<()> {
        self.send(Event::Progress {
            done: done as u64,
            total: total as u64,
        })
        .await
    }
}

/// Prints events for the user: stdout lines buffered, stderr lines and the import progress
/// bar (when stderr is a terminal; otherwise one "imported N/N" line at the end).
#[derive(Debug)]
pub struct Terminal {
    out: std::io::BufWriter<std::io::Stdout>,
    tty: bool,
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal {
            out: std::io::BufWriter::new(std::io::stdout()),
            tty: std::io::stderr().is_terminal(),
        }
    }
}

impl Terminal {
    /// Prints one event. Output errors (a closed pipe) are ignored, as `println!` would not be.
    pub fn show(&mut self, e: Event) {
        match e {
            Event::Out(line) => {
                let _ = writeln!(self.out, "{line}");
            }
            Event::Note(line) => {
                self.flush();
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            Event::Progress { done, total } => {
                self.flush();
                let mut err = std::io::stderr().lock();
                if self.tty {
                    // Clamped: through `serve` these numbers come from a socket.
                    if let Some(pct) = done.saturating_mul(100).checked_div(total) {
                        let pct = pct.min(100);
                        let bar = "#".repeat((pct / 4) as usize);
                        let _ = write!(err, "\rimporting [{bar:<25}] {done}/{total} ({pct}%)");
                    }
                    if done >= total {
                        let _ = writeln!(err);
                    }
                } else if done >= total {
                    let _ = writeln!(err, "imported {done}/{total}");
                }
                let _ = err.flush();
            }
        }
    }

    /// Writes out buffered stdout lines.
    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// Runs a command in this process, printing its events on `term` as they come.
pub async fn run_here(bees: &Bees, cmd: BeeCommand, term: &mut Terminal) -> Result<Value> {
    let (sink, mut rx) = Sink::channel();
    // The sink moves into the command and is dropped when it ends, which ends the printing.
    let work = async move { run(bees, cmd, &sink).await };
    let show = async {
        while let Some(e) = rx.recv().await {
            term.show(e);
        }
    };
    let (r, ()) = tokio::join!(work, show);
    term.flush();
    r
}

/// Runs a command: its output goes to `sink`; the value is `true`, or the bee's record for
/// [`BeeCommand::Info`]. A command that wrote is on disk before this returns.
pub async fn run(bees: &Bees, cmd: BeeCommand, sink: &Sink) -> Result<Value> {
    let writes = cmd.writes();
    let r = run_inner(bees, cmd, sink).await;
    if writes {
        bees.flush().await?;
    }
    r
}

async fn run_inner(bees: &Bees, cmd: BeeCommand, sink: &Sink) -> Result<Value> {
    match cmd {
        BeeCommand::Init { name, compat } => {
            let (key, _) = bees.create(&name, compat).await?;
            sink.out(key.to_url()).await?;
            sink.out(format!("hex: {}", key.to_hex())).await?;
        }
        BeeCommand::Bees => {
            for row in bee_rows(bees)? {
                sink.out(row).await?;
            }
        }
        BeeCommand::Put { name, key, json } => {
            entries::check_key(&key)?;
            let value = entries::encode_json_text(&json)?;
            sink.out(put(bees, &name, &key, &value).await?).await?;
        }
        BeeCommand::Get { name, key } => sink.out(get(bees, &name, &key).await?).await?,
        BeeCommand::Del { name, key } => sink.out(del(bees, &name, &key).await?).await?,
        BeeCommand::List {
            name,
            prefix,
            reverse,
            limit,
        } => {
            let w = bees.writer(&name)?;
            for e in jsonl::list(w.bee(), prefix.as_deref(), reverse, limit).await? {
                sink.out(e).await?;
            }
        }
        BeeCommand::Post { name, text, tags } => {
            sink.out(post(bees, &name, &text, &tags).await?).await?;
        }
        BeeCommand::Import { name, file, batch } => {
            let w = bees.writer(&name)?;
            let n = jsonl::import(&w, &file, batch.max(1), sink).await?;
            sink.out(json!({"imported": n, "length": w.bee().core().length()}))
                .await?;
        }
        BeeCommand::Export { name, file } => {
            let w = bees.writer(&name)?;
            let n = jsonl::export(w.bee(), file.as_deref(), sink).await?;
            sink.note(format!("exported {n} entries")).await?;
        }
        BeeCommand::Info { name } => {
            return serde_json::to_value(bees.info(&name)?)
                .map_err(|e| Error::Corrupt(format!("record of bee {name}: {e}")));
        }
    }
    Ok(Value::Bool(true))
}

/// One row per bee: `{name, key, hex, length, version}`.
pub fn bee_rows(bees: &Bees) -> Result<Vec<Value>> {
    bees.list()?
        .into_iter()
        .map(|(name, info)| {
            let w = bees.writer(&name)?;
            let core = w.bee().core();
            Ok(json!({
                "name": name,
                "key": core.key().to_url(),
                "hex": info.key,
                "length": core.length(),
                "version": w.bee().version(),
            }))
        })
        .collect()
}

/// Puts stored value bytes (checked by the caller) under a checked key: `{key, seq}`.
pub async fn put(bees: &Bees, name: &str, key: &str, value: &[u8]) -> Result<Value> {
    let w = bees.writer(name)?;
    let seq = w.put(key.as_bytes(), value).await?;
    Ok(json!({"key": key, "seq": seq}))
}

/// The value under a key.
pub async fn get(bees: &Bees, name: &str, key: &str) -> Result<Value> {
    let w = bees.writer(name)?;
    match w.bee().snapshot().get(key.as_bytes()).await? {
        Some(e) => Ok(entries::decode_value(e.value.as_deref())),
        None => Err(Error::NotFound(format!("no entry {key:?} in {name}"))),
    }
}

/// Deletes a key: `{deleted, seq}`.
pub async fn del(bees: &Bees, name: &str, key: &str) -> Result<Value> {
    let w = bees.writer(name)?;
    match w.del(key.as_bytes()).await? {
        Some(seq) => Ok(json!({"deleted": key, "seq": seq})),
        None => Err(Error::NotFound(format!("no entry {key:?} in {name}"))),
    }
}

/// Writes a post: `{key, seq, value}`.
pub async fn post(bees: &Bees, name: &str, text: &str, tags: &[String]) -> Result<Value> {
    let (key, value) = entries::new_post(text, tags)?;
    let w = bees.writer(name)?;
    let seq = w
        .put(key.as_bytes(), &entries::encode_value(&value)?)
        .await?;
    Ok(json!({"key": key, "seq": seq, "value": value}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        let c: BeeCommand =
            serde_json::from_str(r#"{"cmd":"put","name":"a","key":"k","json":"1"}"#).unwrap();
        assert!(matches!(c, BeeCommand::Put { .. }));
        let c: BeeCommand =
            serde_json::from_str(r#"{"cmd":"import","name":"a","file":"/x"}"#).unwrap();
        assert!(matches!(c, BeeCommand::Import { batch: 1000, .. }));
        for bad in [
            r#"{"cmd":"put","name":"a","key":"k"}"#,
            r#"{"cmd":"put","name":"a","key":"k","json":"1","extra":1}"#,
            r#"{"cmd":"serve"}"#,
            r#"{"name":"a"}"#,
            r#"{"cmd":"list","name":"a","limit":-1}"#,
            r#"[1,2]"#,
        ] {
            assert!(serde_json::from_str::<BeeCommand>(bad).is_err(), "{bad}");
        }
        let back = serde_json::to_value(BeeCommand::Bees).unwrap();
        assert_eq!(back, json!({"cmd": "bees"}));
    }
}
