//! `apiary-publisher`: keep your own Hyperbees and serve them to the Hypercore network.

mod bees;
mod config;
mod entries;
mod error;
mod io;
mod page;
mod register;
mod serve;

use std::io::Write;
use std::path::PathBuf;

use apiary_core::bee::RangeOptions;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::bees::Bees;
use crate::config::FileConfig;
use crate::error::{Error, Result};

/// Keep your own Hyperbees (key/value logs in the Hypercore format) and serve them.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Config file (default: $XDG_CONFIG_HOME/apiary/publisher.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (default: $XDG_DATA_HOME/apiary-publisher).
    #[arg(long, global = true, value_name = "DIR", env = "APIARY_PUBLISHER_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a bee and print its key.
    Init {
        /// Name of the bee.
        #[arg(default_value = "default")]
        name: String,
        /// Make an old-style (compat) core whose key is its public key.
        #[arg(long)]
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
        tags: Vec<String>,
    },
    /// Import a JSONL file of {"key": …, "value": …} lines (all or nothing).
    Import {
        /// Bee name.
        name: String,
        /// The file.
        file: PathBuf,
        /// Entries per written batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Export every entry as JSONL (to a file or stdout).
    Export {
        /// Bee name.
        name: String,
        /// Output file (default: stdout).
        file: Option<PathBuf>,
    },
    /// Keep all bees online: listen for readers, dial aggregators, serve the local page.
    Serve(serve::ServeArgs),
    /// Register a bee with an aggregator's HTTP API.
    Register {
        /// Bee name.
        name: String,
        /// The aggregator's HTTP base URL, e.g. http://agg.example.org:8080.
        #[arg(long)]
        aggregator: String,
        /// Admin or registration token.
        #[arg(long, env = "APIARY_TOKEN")]
        token: Option<String>,
        /// An address where the aggregator can reach this publisher (host:port).
        #[arg(long)]
        address: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let file = match FileConfig::load(cli.config.as_deref()) {
        Ok(f) => f,
        Err(e) => fail(e),
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| file.log.clone())
        .unwrap_or_else(|| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => fail(Error::Remote(format!("cannot start the runtime: {e}"))),
    };
    if let Err(e) = rt.block_on(run(cli, file)) {
        fail(e);
    }
}

fn fail(e: Error) -> ! {
    eprintln!("error: {e}");
    std::process::exit(e.exit_code());
}

fn out(line: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
}

async fn run(cli: Cli, file: FileConfig) -> Result<()> {
    let dir = cli
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(config::default_data_dir);
    match cli.command {
        Command::Register {
            name,
            aggregator,
            token,
            address,
        } => {
            let bees = Bees::open(&dir)?;
            let info = bees.info(&name)?;
            let reply =
                register::register(&aggregator, &info.key, token.as_deref(), address.as_deref())
                    .await?;
            out(format!("registered {name} with {aggregator}: {reply}"));
            Ok(())
        }
        Command::Serve(args) => serve::serve(&dir, &file, args).await,
        cmd => {
            let bees = Bees::open(&dir)?;
            let r = local(&bees, cmd).await;
            bees.flush().await?;
            r
        }
    }
}

async fn local(bees: &Bees, cmd: Command) -> Result<()> {
    match cmd {
        Command::Init { name, compat } => {
            let (key, _) = bees.create(&name, compat).await?;
            out(key.to_url());
            out(format!("hex: {}", key.to_hex()));
        }
        Command::Bees => {
            for (name, info) in bees.list()? {
                let w = bees.writer(&name)?;
                let core = w.bee().core();
                out(json!({
                    "name": name,
                    "key": core.key().to_url(),
                    "hex": info.key,
                    "length": core.length(),
                    "version": w.bee().version(),
                }));
            }
        }
        Command::Put { name, key, json } => {
            entries::check_key(&key)?;
            let value = entries::encode_json_text(&json)?;
            let w = bees.writer(&name)?;
            let seq = w.put(key.as_bytes(), &value).await?;
            out(json!({"key": key, "seq": seq}));
        }
        Command::Get { name, key } => {
            let w = bees.writer(&name)?;
            match w.bee().snapshot().get(key.as_bytes()).await? {
                Some(e) => out(entries::decode_value(e.value.as_deref())),
                None => return Err(Error::NotFound(format!("no entry {key:?} in {name}"))),
            }
        }
        Command::Del { name, key } => {
            let w = bees.writer(&name)?;
            match w.del(key.as_bytes()).await? {
                Some(seq) => out(json!({"deleted": key, "seq": seq})),
                None => return Err(Error::NotFound(format!("no entry {key:?} in {name}"))),
            }
        }
        Command::List {
            name,
            prefix,
            reverse,
            limit,
        } => {
            let w = bees.writer(&name)?;
            for e in io::list(w.bee(), prefix.as_deref(), reverse, limit).await? {
                out(e);
            }
        }
        Command::Post { name, text, tags } => {
            let (key, value) = entries::new_post(&text, &tags)?;
            let w = bees.writer(&name)?;
            let seq = w
                .put(key.as_bytes(), &entries::encode_value(&value)?)
                .await?;
            out(json!({"key": key, "seq": seq, "value": value}));
        }
        Command::Import { name, file, batch } => {
            let w = bees.writer(&name)?;
            let n = io::import(&w, &file, batch.max(1)).await?;
            out(json!({"imported": n, "length": w.bee().core().length()}));
        }
        Command::Export { name, file } => {
            let w = bees.writer(&name)?;
            let n = io::export(w.bee(), file.as_deref()).await?;
            eprintln!("exported {n} entries");
        }
        Command::Serve(_) | Command::Register { .. } => {}
    }
    Ok(())
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
