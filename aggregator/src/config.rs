//! Configuration: embedded defaults, then `--config FILE` (see `config/aggregator.toml`, every
//! option documented), then `APIARY_ADMIN_TOKEN`, then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// A followed bee as configured: a key and optional known peer addresses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FollowConfig {
    /// Bee key (z-base-32, hex or hyper://).
    pub key: String,
    /// Replication addresses (`host:port`) known to serve it.
    #[serde(default)]
    pub peers: Vec<String>,
}

/// How much of a newly followed bee to ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backfill {
    /// The whole log.
    All,
    /// Only the last N log entries (older entries are never fetched).
    Last(u64),
}

/// What the aggregator keeps of the bees it follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Retention {
    /// Every block fetched stays in the block store (a replica).
    #[default]
    Replica,
    /// Once its entries are committed to the index, a block's payload is dropped; the tree
    /// nodes and the signed head stay (proofs of inclusion), and a proof that needs a
    /// dropped block fetches it from the feed's peers.
    IndexOnly,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields), for log
    /// collectors.
    Json,
}

/// Everything the aggregator can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data directory (sled state and blocks, tantivy index).
    pub data_dir: PathBuf,
    /// HTTP API address.
    pub http: String,
    /// Replication address where publishers dial in (empty = do not listen).
    pub listen: String,
    /// Admin token for follow/unfollow (else only loopback clients may).
    pub admin_token: Option<String>,
    /// Let anyone register a feed (rate limited by `registrations_per_hour`).
    pub open_registration: bool,
    /// Registrations per client IP per hour when registration is open.
    pub registrations_per_hour: u32,
    /// Requests per second per client IP.
    pub rate_limit_per_second: u32,
    /// Burst allowance per client IP.
    pub rate_limit_burst: u32,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Requests taking longer than this fail with 408.
    pub request_timeout_ms: u64,
    /// Values larger than this are not indexed (counted in the feed's status).
    pub max_value_bytes: usize,
    /// "all", or the number of newest log entries to ingest from a new feed.
    pub backfill: BackfillSetting,
    /// Index commit interval: the upper bound of publish-to-searchable latency it adds.
    pub commit_interval_ms: u64,
    /// Memory for the index writer, in MB.
    pub index_memory_mb: usize,
    /// Page cache of the state and block store (sled), in MB.
    pub state_cache_mb: usize,
    /// Memory for feed and search answers kept until the next commit, in MB (0: none).
    pub read_cache_mb: usize,
    /// How much lower than the HTTP API ingest runs (a Unix nice value, added to the
    /// process's; 0 to 19, 0: the same), see `priority.rs`.
    pub ingest_nice: u8,
    /// Feeds that ingest at the same time.
    pub max_concurrent_ingest: usize,
    /// How much fresher entries gain in `/v1/search` by relevance: a score is multiplied by
    /// `1 + boost × 2^(−age / half-life)` (0: plain BM25).
    pub search_recency_boost: f32,
    /// The age at which that gain is half, in hours.
    pub search_recency_half_life_hours: f64,
    /// Bees to follow at start (merged with the persisted follows).
    pub follow: Vec<FollowConfig>,
    /// "replica" (keep every block) or "index-only" (drop blocks once indexed).
    pub retention: Retention,
    /// Serve the blocks held of followed feeds to other peers that ask.
    pub reshare: bool,
    /// Open HTTP connections in total.
    pub http_max_connections: usize,
    /// Open HTTP connections per client IP.
    pub http_max_connections_per_ip: usize,
    /// Open replication connections in total.
    pub replication_max_connections: usize,
    /// Open replication connections per client IP.
    pub replication_max_connections_per_ip: usize,
    /// Ingest pauses while the data directory has less free space than this (MB).
    pub min_free_disk_mb: u64,
    /// File descriptors kept back for the index and the store (connection caps are fitted
    /// into the rest of the open file limit).
    pub fd_reserve: u64,
    /// The request head must arrive within this; also closes idle keep-alive connections.
    pub http_header_timeout_ms: u64,
    /// A response write with no progress for this long ends the connection.
    pub http_write_timeout_ms: u64,
    /// Discover the peers of followed bees on the hyperswarm DHT.
    pub dht: bool,
    /// DHT bootstrap nodes (`host:port`); empty = hyperswarm's public list.
    pub bootstrap: Vec<String>,
    /// Where the DHT bridge is installed (default: the user's cache directory).
    pub bridge_dir: Option<PathBuf>,
    /// Log filter.
    pub log: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Cluster mode (off by default): see `cluster/mod.rs`.
    pub cluster: crate::cluster::ClusterConfig,
}

/// `backfill = "all"` or `backfill = 1000`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum BackfillSetting {
    /// "all"
    Word(String),
    /// N
    Last(u64),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            http: "127.0.0.1:8080".into(),
            listen: "0.0.0.0:7701".into(),
            admin_token: None,
            open_registration: false,
            registrations_per_hour: 10,
            rate_limit_per_second: 50,
            rate_limit_burst: 100,
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            max_value_bytes: 256 * 1024,
            backfill: BackfillSetting::Word("all".into()),
            commit_interval_ms: 50,
            index_memory_mb: 64,
            state_cache_mb: 32,
            read_cache_mb: 32,
            ingest_nice: 10,
            max_concurrent_ingest: 32,
            retention: Retention::Replica,
            reshare: true,
            search_recency_boost: 0.5,
            search_recency_half_life_hours: 24.0,
            follow: Vec::new(),
            http_max_connections: 4096,
            http_max_connections_per_ip: 64,
            replication_max_connections: 1024,
            replication_max_connections_per_ip: 16,
            fd_reserve: 256,
            min_free_disk_mb: 256,
            http_header_timeout_ms: 10_000,
            http_write_timeout_ms: 30_000,
            dht: true,
            bootstrap: Vec::new(),
            bridge_dir: None,
            log: "info,tantivy=warn".into(),
            log_format: LogFormat::Text,
            cluster: Default::default(),
        }
    }
}

impl Config {
    /// Loads a config file over the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut c = match path {
            None => Config::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::Config(format!("{}: {e}", p.display())))?;
                toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", p.display())))?
            }
        };
        if let Ok(t) = std::env::var("APIARY_ADMIN_TOKEN") {
            if !t.is_empty() {
                c.admin_token = Some(t);
            }
        }
        Ok(c)
    }

    /// Checks values that could not be checked by their type.
    pub fn validate(&self) -> Result<()> {
        self.http_addr()?;
        if !self.listen.is_empty() {
            parse_addr("listen", &self.listen)?;
        }
        self.backfill()?;
        self.cluster.validate()?;
        if self.cluster.enabled && self.max_value_bytes > 256 * 1024 {
            // A value must fit in one message of the entry log (NATS's max_payload, 1 MiB).
            return Err(Error::Config(
                "max_value_bytes is at most 262144 in cluster mode".into(),
            ));
        }
        if self.rate_limit_per_second == 0
            || self.rate_limit_burst == 0
            || self.registrations_per_hour == 0
        {
            return Err(Error::Config("rate limits must be at least 1".into()));
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(Error::Config(
                "admin_token must be at least 16 characters".into(),
            ));
        }
        for b in &self.bootstrap {
            apiary_swarm::check_bootstrap(b).map_err(Error::Config)?;
        }
        if self.http_max_connections == 0
            || self.http_max_connections_per_ip == 0
            || self.replication_max_connections == 0
            || self.replication_max_connections_per_ip == 0
        {
            return Err(Error::Config("connection caps must be at least 1".into()));
        }
        if self.http_header_timeout_ms == 0 || self.http_write_timeout_ms == 0 {
            return Err(Error::Config("HTTP timeouts must be at least 1 ms".into()));
        }
        if self.index_memory_mb < 15 {
            return Err(Error::Config("index_memory_mb must be at least 15".into()));
        }
        if !(0.0..=100.0).contains(&self.search_recency_boost) {
            return Err(Error::Config(
                "search_recency_boost must be from 0 to 100".into(),
            ));
        }
        if !(self.search_recency_half_life_hours.is_finite()
            && self.search_recency_half_life_hours > 0.0)
        {
            return Err(Error::Config(
                "search_recency_half_life_hours must be above 0".into(),
            ));
        }
        if self.state_cache_mb < 4 {
            return Err(Error::Config("state_cache_mb must be at least 4".into()));
        }
        if self.ingest_nice > 19 {
            return Err(Error::Config("ingest_nice must be from 0 to 19".into()));
        }
        Ok(())
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> Result<SocketAddr> {
        parse_addr("http", &self.http)
    }

    /// The recency boost of search by relevance (`None` when off).
    pub fn recency(&self) -> Option<crate::index::Recency> {
        (self.search_recency_boost > 0.0).then_some(crate::index::Recency {
            weight: self.search_recency_boost,
            half_life_us: self.search_recency_half_life_hours * 3_600_000_000.0,
        })
    }

    /// The backfill window.
    pub fn backfill(&self) -> Result<Backfill> {
        match &self.backfill {
            BackfillSetting::Word(w) if w == "all" => Ok(Backfill::All),
            BackfillSetting::Last(n) if *n > 0 => Ok(Backfill::Last(*n)),
            other => Err(Error::Config(format!(
                "backfill must be \"all\" or a positive number, got {other:?}"
            ))),
        }
    }
}

/// The replication address.
pub fn parse_listen(s: &str) -> Result<SocketAddr> {
    parse_addr("listen", s)
}

fn parse_addr(what: &str, s: &str) -> Result<SocketAddr> {
    s.parse().map_err(|_| {
        Error::Config(format!(
            "{what} = {s:?} is not an address like 127.0.0.1:8080"
        ))
    })
}

/// Parses `KEY[@HOST:PORT]` of `--follow`.
pub fn parse_follow_flag(s: &str) -> Result<FollowConfig> {
    // hyper://KEY@host:port: the key part never contains '@'.
    let (key, peer) = match s.rsplit_once('@') {
        Some((k, p)) => (k, Some(p)),
        None => (s, None),
    };
    apiary_core::Key::parse(key).map_err(|e| Error::Config(format!("--follow {s:?}: {e}")))?;
    Ok(FollowConfig {
        key: key.to_owned(),
        peers: peer.map(|p| vec![p.to_owned()]).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_defaults_validate() {
        Config::default().validate().unwrap();
        let text = include_str!("../../config/aggregator.toml");
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
        assert!(toml::from_str::<Config>("bootstrap = [\"nope\"]")
            .unwrap()
            .validate()
            .is_err());
        let c: Config =
            toml::from_str("bootstrap = [\"127.0.0.1:49737\", \"node.example:1\"]").unwrap();
        c.validate().unwrap();
        assert_eq!(
            toml::from_str::<Config>("log_format = \"json\"")
                .unwrap()
                .log_format,
            LogFormat::Json
        );
        assert!(toml::from_str::<Config>("log_format = \"xml\"").is_err());
        for bad in [
            "search_recency_boost = -1.0",
            "search_recency_boost = nan",
            "search_recency_half_life_hours = 0.0",
            "search_recency_half_life_hours = inf",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        for bad in [
            "[cluster]\nenabled = true\nname = \"Bad!\"",
            "[cluster]\nenabled = true\nnats = []",
            "[cluster]\nenabled = true\nroles = []",
            "[cluster]\nenabled = true\nreplicas = 7",
            "[cluster]\nenabled = true\nshards = 0",
            "[cluster]\nenabled = true\nlease_ttl_ms = 10",
            "max_value_bytes = 900000\n[cluster]\nenabled = true",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<Config>("[cluster]\nroles = [\"boss\"]").is_err());
        let c: Config =
            toml::from_str("[cluster]\nenabled = true\nroles = [\"indexer\"]\nreplicas = 1")
                .unwrap();
        c.validate().unwrap();
        // A follower drops blocks below the chain's published tip.
        let c: Config =
            toml::from_str("retention = \"index-only\"\n[cluster]\nenabled = true").unwrap();
        c.validate().unwrap();
        assert!(toml::from_str::<Config>("backfill = \"some\"")
            .unwrap()
            .validate()
            .is_err());
    }

    #[test]
    fn follow_flags() {
        let k = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";
        assert_eq!(parse_follow_flag(k).unwrap().peers.len(), 0);
        assert_eq!(
            parse_follow_flag(&format!("{k}@127.0.0.1:7702"))
                .unwrap()
                .peers,
            vec!["127.0.0.1:7702"]
        );
        assert!(parse_follow_flag("nope@1.2.3.4:5").is_err());
    }
}
