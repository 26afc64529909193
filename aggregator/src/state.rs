//! Persistent state in sled (the same database as the block store): the follow set and the
//! per-feed counters that are not in the index.
//!
//! ```text
//! tree "follows":     core key (32) → {"peers": [..], "addedAt": rfc3339}
//! tree "feed_status": core key (32) → {"skippedTooLarge", "skippedNotJson", "errors", "lastError"}
//! tree "identity":    "seed" → 32 bytes, the seed of our Noise and DHT key pair
//! ```

use apiary_core::Key;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A follow as persisted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Follow {
    /// Known peers (`host:port`).
    #[serde(default)]
    pub peers: Vec<String>,
    /// When it was added.
    #[serde(default)]
    pub added_at: String,
}

/// Counters of one feed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Values over `max_value_bytes`, not indexed.
    pub skipped_too_large: u64,
    /// Values that are not JSON, not indexed.
    pub skipped_not_json: u64,
    /// Ingest errors so far.
    pub errors: u64,
    /// The last one.
    pub last_error: Option<String>,
}

/// The state trees.
#[derive(Debug, Clone)]
pub struct State {
    follows: sled::Tree,
    status: sled::Tree,
    identity: sled::Tree,
}

impl State {
    /// Opens the trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(State {
            follows: db.open_tree("follows")?,
            status: db.open_tree("feed_status")?,
            identity: db.open_tree("identity")?,
        })
    }

    /// The seed of our key pair, made on first use: peers on the DHT see the same identity
    /// across restarts.
    pub fn identity_seed(&self) -> Result<[u8; 32]> {
        if let Some(v) = self.identity.get("seed")? {
            if let Ok(seed) = <[u8; 32]>::try_from(v.as_ref()) {
                return Ok(seed);
            }
            tracing::warn!("the stored identity seed is malformed; making a new one");
        }
        let seed = apiary_core::crypto::KeyPair::generate().seed();
        self.identity.insert("seed", &seed[..])?;
        self.identity.flush()?;
        Ok(seed)
    }

    /// Every follow.
    pub fn follows(&self) -> Result<Vec<(Key, Follow)>> {
        self.follows
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let key =
                    Key::from_slice(&k).map_err(|_| Error::Corrupt("bad key in follows".into()))?;
                let f = serde_json::from_slice(&v)
                    .map_err(|e| Error::Corrupt(format!("follow record: {e}")))?;
                Ok((key, f))
            })
            .collect()
    }

    /// One follow.
    pub fn follow(&self, key: &Key) -> Result<Option<Follow>> {
        self.follows
            .get(key.as_bytes())?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| Error::Corrupt(format!("follow record: {e}")))
            })
            .transpose()
    }

    /// Adds or updates a follow; returns true when it is new.
    pub fn put_follow(&self, key: &Key, f: &Follow) -> Result<bool> {
        let v = serde_json::to_vec(f).map_err(|e| Error::Corrupt(e.to_string()))?;
        let old = self.follows.insert(key.as_bytes(), v)?;
        self.follows.flush()?;
        Ok(old.is_none())
    }

    /// Removes a follow and its counters.
    pub fn remove(&self, key: &Key) -> Result<bool> {
        let old = self.follows.remove(key.as_bytes())?;
        self.status.remove(key.as_bytes())?;
        self.follows.flush()?;
        Ok(old.is_some())
    }

    /// A feed's counters.
    pub fn counters(&self, key: &Key) -> Counters {
        self.status
            .get(key.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default()
    }

    /// Updates a feed's counters.
    pub fn update_counters(&self, key: &Key, f: impl FnOnce(&mut Counters)) -> Result<()> {
        let mut c = self.counters(key);
        f(&mut c);
        let v = serde_json::to_vec(&c).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.status.insert(key.as_bytes(), v)?;
        Ok(())
    }
}
