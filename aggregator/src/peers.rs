//! Known peer addresses: one connection per address, shared by every feed that names it,
//! kept up with backoff. On each (re)connect the channels of all feeds wanting that address
//! are opened. (Publishers that dial in need none of this: their channels pair by themselves.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_core::replicate::{Connection, Replica, Replicator};
use apiary_core::Key;
use tracing::Instrument;

struct Entry {
    wanted: HashMap<Key, Arc<Replica>>,
    conn: Option<Connection>,
    task: tokio::task::JoinHandle<()>,
}

/// The pool.
pub struct PeerPool {
    rep: Replicator,
    entries: Mutex<HashMap<String, Entry>>,
    /// Where the connections' tasks run: ingest's runtime, also when asked from the HTTP
    /// API's (`priority.rs`).
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for PeerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerPool")
    }
}

impl PeerPool {
    /// A pool dialing through `rep`, its tasks on `rt`.
    pub fn new(rep: Replicator, rt: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(PeerPool {
            rep,
            entries: Mutex::new(HashMap::new()),
            rt,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for `replica` on the peer at `addr`.
    pub fn want(self: &Arc<Self>, addr: &str, replica: Arc<Replica>) {
        let mut m = self.lock();
        if let Some(e) = m.get_mut(addr) {
            if e.wanted
                .get(replica.key())
                .is_some_and(|r| Arc::ptr_eq(r, &replica))
            {
                // Already wanted and opened (or opened on the next connect): opening the
                // channel again would restart it under the running feed (a cluster node
                // re-reconciles its feeds at every change of the follow list).
                return;
            }
            if let Some(c) = &e.conn {
                let (c, r) = (c.clone(), replica.clone());
                self.rt
                    .spawn(async move { c.open(&r).await }.in_current_span());
            }
            e.wanted.insert(*replica.key(), replica);
            return;
        }
        let me = self.clone();
        let a = addr.to_owned();
        let span = tracing::info_span!("peer", addr = %a);
        let task = self
            .rt
            .spawn(async move { me.keep_up(a).await }.instrument(span));
        let mut wanted = HashMap::new();
        wanted.insert(*replica.key(), replica);
        m.insert(
            addr.to_owned(),
            Entry {
                wanted,
                conn: None,
                task,
            },
        );
    }

    /// Drops every want of `key`; addresses nobody wants any more are disconnected.
    /// Opens a wanted feed again on every live connection that wants it (its channel is
    /// gone: closed by the remote, or an open lost a race with a close).
    pub fn reopen(&self, key: &Key) {
        for e in self.lock().values() {
            if let (Some(c), Some(r)) = (&e.conn, e.wanted.get(key)) {
                let (c, r) = (c.clone(), r.clone());
                self.rt
                    .spawn(async move { c.open(&r).await }.in_current_span());
            }
        }
    }

    pub fn unwant(&self, key: &Key) {
        let mut m = self.lock();
        m.retain(|_, e| {
            if e.wanted.remove(key).is_some() {
                if let Some(c) = &e.conn {
                    let (c, dk) = (c.clone(), key.discovery_key());
                    self.rt
                        .spawn(async move { c.close_core(dk).await }.in_current_span());
                }
            }
            if e.wanted.is_empty() {
                e.task.abort();
                if let Some(c) = &e.conn {
                    c.close();
                }
                return false;
            }
            true
        });
    }

    /// `(address, connected)` of the peers known for `key`.
    pub fn peers_of(&self, key: &Key) -> Vec<(String, bool)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.wanted.contains_key(key))
            .map(|(a, e)| (a.clone(), e.conn.as_ref().is_some_and(|c| !c.is_closed())))
            .collect()
    }

    async fn keep_up(self: Arc<Self>, addr: String) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.rep.connect(&addr).await {
                Ok(conn) => {
                    let wanted: Vec<Arc<Replica>> = {
                        let mut m = self.lock();
                        let Some(e) = m.get_mut(&addr) else { return };
                        e.conn = Some(conn.clone());
                        e.wanted.values().cloned().collect()
                    };
                    for r in wanted {
                        let _ = conn.open(&r).await;
                    }
                    let since = tokio::time::Instant::now();
                    let why = conn.closed().await.err().unwrap_or_else(|| "closed".into());
                    tracing::info!(peer = %addr, "disconnected: {why}");
                    if let Some(e) = self.lock().get_mut(&addr) {
                        e.conn = None;
                    }
                    if since.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_millis(500);
                    }
                }
                Err(e) => tracing::info!(peer = %addr, "cannot connect: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}
