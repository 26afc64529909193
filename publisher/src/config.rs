//! Configuration: `config/publisher.toml` (every option documented there), overridden by
//! command-line flags. Defaults follow the XDG base directories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Default replication address (where aggregators and readers connect).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7702";
/// Default address of the local page.
pub const DEFAULT_PAGE: &str = "127.0.0.1:7780";

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where bees and keys live.
    pub data_dir: Option<PathBuf>,
    /// Replication listen address.
    pub listen: Option<String>,
    /// Local page address.
    pub page: Option<String>,
    /// Aggregators to dial and stay connected to (`host:port` of their replication port).
    #[serde(default)]
    pub aggregators: Vec<String>,
    /// Log filter (e.g. "info", "apiary_core=debug").
    pub log: Option<String>,
    /// Log line format (default text).
    pub log_format: Option<LogFormat>,
    /// Announce bees on the hyperswarm DHT while serving (default true).
    pub dht: Option<bool>,
    /// DHT bootstrap nodes (`host:port`); empty = hyperswarm's public list.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Where the DHT bridge is installed (default: the user's cache directory).
    pub bridge_dir: Option<PathBuf>,
}

impl FileConfig {
    /// Reads `path`; a missing default file is an empty config, a missing given file an error.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match default_config_path() {
                Some(p) => (p, false),
                None => return Ok(Self::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default())
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn xdg(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home().map(|h| h.join(fallback)))
}

/// `$XDG_CONFIG_HOME/apiary/publisher.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    xdg("XDG_CONFIG_HOME", ".config").map(|d| d.join("apiary").join("publisher.toml"))
}

/// `$XDG_DATA_HOME/apiary-publisher` (usually `~/.local/share/apiary-publisher`).
pub fn default_data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share")
        .map(|d| d.join("apiary-publisher"))
        .unwrap_or_else(|| PathBuf::from("apiary-publisher-data"))
}

/// Parses a socket address option.
pub fn addr(what: &str, s: &str) -> Result<SocketAddr> {
    s.parse().map_err(|_| {
        Error::Config(format!(
            "{what} {s:?} is not an address like 127.0.0.1:7780"
        ))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let c: FileConfig = toml::from_str(include_str!("../../config/publisher.toml")).unwrap();
        assert_eq!(c.dht, Some(true));
        assert!(c.bootstrap.is_empty());
        assert!(toml::from_str::<FileConfig>("nonsense = 1").is_err());
        let c: FileConfig =
            toml::from_str("bootstrap = [\"10.0.0.1:49737\"]\ndht = false").unwrap();
        assert_eq!(c.dht, Some(false));
        assert_eq!(c.bootstrap, ["10.0.0.1:49737"]);
        let c: FileConfig = toml::from_str("log_format = \"json\"").unwrap();
        assert_eq!(c.log_format, Some(LogFormat::Json));
        assert!(toml::from_str::<FileConfig>("log_format = \"yaml\"").is_err());
    }
}
