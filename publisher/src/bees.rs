//! The publisher's bees: named bees in one data directory.
//!
//! Layout of the data directory:
//! ```text
//! store/              sled database: every core's blocks and tree, plus the `bees` tree
//! keys/NAME.secret    the bee's Ed25519 secret key (hex of 64 bytes, mode 0600)
//! keys/identity.secret  this publisher's Noise identity (what peers see)
//! run/serve.sock      a running `serve`'s control socket (`control`)
//! lock                held by the process that has the directory open (`lock`)
//! ```
//! The `bees` sled tree maps a bee name to `{"key": hex, "compat": bool, "created": rfc3339}`.
//! Secret keys are never logged or printed.
//!
//! One `Bees` may serve many callers at once (`serve`: replication, the page, control socket
//! clients), so each bee has exactly one writer (appends to a core must not interleave) and
//! creation is serialised (the name check and the record insert are one step).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apiary_core::bee::BeeWriter;
use apiary_core::crypto::KeyPair;
use apiary_core::replicate::{Replicator, ReplicatorOptions};
use apiary_core::store::Store;
use apiary_core::Key;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What is recorded about a bee.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeeInfo {
    /// Core key (hex).
    pub key: String,
    /// Old-style core (key = public key).
    #[serde(default)]
    pub compat: bool,
    /// When it was made.
    pub created: String,
}

/// The bees of one data directory, opened for writing.
pub struct Bees {
    dir: PathBuf,
    rep: Replicator,
    /// Seed of the Noise identity, which is also the DHT identity.
    identity_seed: [u8; 32],
    meta: sled::Tree,
    writers: std::sync::Mutex<BTreeMap<String, Arc<BeeWriter>>>,
    creating: tokio::sync::Mutex<()>,
    created: tokio::sync::broadcast::Sender<(String, Key)>,
    /// Held while the data directory is ours.
    _lock: crate::lock::DirLock,
}

impl std::fmt::Debug for Bees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bees({})", self.dir.display())
    }
}

/// Checks a bee name: 1–64 of `A-Z a-z 0-9 _ - .`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::BadInput(format!(
            "bee name {name:?}: use 1-64 letters, digits, '_', '-' or '.' (not starting with '.')"
        )))
    }
}

fn write_secret(path: &Path, kp: &KeyPair) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(hex::encode(kp.secret_key()).as_bytes())
        .map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(())
}

fn read_secret(path: &Path) -> Result<KeyPair> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bytes = hex::decode(text.trim())
        .map_err(|_| Error::BadInput(format!("{} is not a hex secret key", path.display())))?;
    KeyPair::from_secret_key(&bytes)
        .map_err(|e| Error::BadInput(format!("{}: {e}", path.display())))
}

/// Creations a slow [`Bees::subscribe_created`] receiver may be behind before it lags.
const CREATED_BACKLOG: usize = 64;

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Bees {
    /// Opens the data directory (creating it). [`Error::Busy`] if another process holds it.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("keys")).map_err(|e| Error::io(dir, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(dir.join("keys"), std::fs::Permissions::from_mode(0o700));
        }
        // Before the store: another process on this directory is `Error::Busy`.
        let lock = crate::lock::lock(dir)?;
        let store = Store::open(dir.join("store"))?;
        let meta = store
            .db()
            .open_tree("bees")
            .map_err(apiary_core::Error::from)?;
        let identity_path = dir.join("keys").join("identity.secret");
        let identity = if identity_path.exists() {
            read_secret(&identity_path)?
        } else {
            let kp = KeyPair::generate();
            write_secret(&identity_path, &kp)?;
            kp
        };
        let identity_seed = identity.seed();
        let rep = Replicator::with_identity(
            store,
            identity,
            ReplicatorOptions {
                announce_all: true,
                ..Default::default()
            },
        );
        Ok(Bees {
            dir: dir.to_path_buf(),
            rep,
            identity_seed,
            meta,
            writers: Default::default(),
            creating: Default::default(),
            created: tokio::sync::broadcast::channel(CREATED_BACKLOG).0,
            _lock: lock,
        })
    }

    /// Tells of every bee created from now on, as `(name, key)`, whoever created it (a CLI
    /// command through the control socket, the page): for parts of `serve` that must act on
    /// new bees, such as announcing them. Only creations after the call are seen; a receiver
    /// more than 64 creations behind gets `RecvError::Lagged` and should re-read [`Bees::list`].
    pub fn subscribe_created(&self) -> tokio::sync::broadcast::Receiver<(String, Key)> {
        self.created.subscribe()
    }

    /// The seed of this publisher's key pair: its Noise identity and, on the DHT, the key
    /// readers can find it by. Stable across restarts.
    pub fn identity_seed(&self) -> [u8; 32] {
        self.identity_seed
    }

    /// The replicator all bees are registered with.
    pub fn replicator(&self) -> &Replicator {
        &self.rep
    }

    /// Every bee, by name.
    pub fn list(&self) -> Result<Vec<(String, BeeInfo)>> {
        self.meta
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(apiary_core::Error::from)?;
                let name = String::from_utf8_lossy(&k).into_owned();
                let info: BeeInfo = serde_json::from_slice(&v)
                    .map_err(|e| Error::Corrupt(format!("record of bee {name}: {e}")))?;
                Ok((name, info))
            })
            .collect()
    }

    /// The record of one bee.
    pub fn info(&self, name: &str) -> Result<BeeInfo> {
        check_name(name)?;
        let v = self
            .meta
            .get(name.as_bytes())
            .map_err(apiary_core::Error::from)?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no bee named {name:?} (see `apiary-publisher bees`)"
                ))
            })?;
        serde_json::from_slice(&v).map_err(|e| Error::Corrupt(format!("record of bee {name}: {e}")))
    }

    /// Creates a bee: a fresh key pair, a manifest-v1 core (or compat), and its header block.
    /// The core is registered with the replicator at once (so connected peers are offered it)
    /// and [`Bees::subscribe_created`] receivers are told.
    pub async fn create(&self, name: &str, compat: bool) -> Result<(Key, Arc<BeeWriter>)> {
        check_name(name)?;
        let _one_at_a_time = self.creating.lock().await;
        if self
            .meta
            .contains_key(name.as_bytes())
            .map_err(apiary_core::Error::from)?
        {
            return Err(Error::BadInput(format!(
                "a bee named {name:?} exists already"
            )));
        }
        let kp = KeyPair::generate();
        let secret = self.dir.join("keys").join(format!("{name}.secret"));
        write_secret(&secret, &kp)?;
        let core = self.rep.create_core(kp, compat)?;
        let w = Arc::new(BeeWriter::new(core.clone())?);
        // The header makes the bee recognisable to readers before its first entry. Nobody
        // else can write yet: `writer()` needs the record, inserted below.
        w.batch(Vec::new()).await?;
        let info = BeeInfo {
            key: core.key().to_hex(),
            compat,
            created: now_rfc3339(),
        };
        let json = serde_json::to_vec(&info).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.meta
            .insert(name.as_bytes(), json)
            .map_err(apiary_core::Error::from)?;
        self.rep.store().flush().await?;
        // A `writer()` call since the record went in may have cached a writer: use that one.
        let w = self
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_insert(w)
            .clone();
        // No receiver is not an error: nothing in this process wants to know.
        let _ = self.created.send((name.to_owned(), *core.key()));
        Ok((*core.key(), w))
    }

    /// The writer of a bee.
    pub fn writer(&self, name: &str) -> Result<Arc<BeeWriter>> {
        if let Some(w) = self
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(w.clone());
        }
        let info = self.info(name)?;
        let kp = read_secret(&self.dir.join("keys").join(format!("{name}.secret")))?;
        let core = self.rep.create_core(kp, info.compat)?;
        if core.key().to_hex() != info.key {
            return Err(Error::Corrupt(format!(
                "the secret key of bee {name} does not match its core key"
            )));
        }
        let w = Arc::new(BeeWriter::new(core)?);
        // Two callers may have raced here: both get the first writer cached.
        Ok(self
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_insert(w)
            .clone())
    }

    /// Opens every bee (so that `serve` shares them all).
    pub fn open_all(&self) -> Result<Vec<(String, Arc<BeeWriter>)>> {
        self.list()?
            .into_iter()
            .map(|(name, _)| Ok((name.clone(), self.writer(&name)?)))
            .collect()
    }

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<()> {
        self.rep.store().flush().await?;
        Ok(())
    }
}
