//! Whether the aggregator can write, and why not. Reads are served whatever this says;
//! ingest pauses while anything is wrong and resumes on its own when it is fixed.
//!
//! Sources, each with its reason while it lasts:
//! - `index`: a commit failed (full disk, no descriptors, an I/O error). The writer rolled
//!   back to the last commit and retries; every ingest op not committed was dropped, so the
//!   [`Health::epoch`] moved on and feeds re-read from their committed checkpoints.
//! - `disk`: the data directory's free space is under `min_free_disk_mb`. Ingest pauses
//!   *before* the disk is full: the block store (sled) cannot recover from a failed write
//!   without being reopened.
//! - `store`: the block store failed to write; only a restart reopens it (the process exits
//!   after a grace period, and resumes from its committed checkpoints when started again).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Every source of [`Health::set`], for `apiary_degraded{source=…}` in /metrics.
pub const SOURCES: [&str; 3] = ["disk", "index", "store"];

/// The health of the write path.
#[derive(Debug, Default)]
pub struct Health {
    reasons: Mutex<BTreeMap<&'static str, String>>,
    epoch: AtomicU64,
    /// The process is shutting down: ingest stops at its next step, so the last commit
    /// covers everything that was sent to the index.
    stopping: AtomicBool,
}

impl Health {
    fn reasons(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.reasons.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or clears, with `None`) the reason of one source.
    pub fn set(&self, source: &'static str, reason: Option<String>) {
        let mut r = self.reasons();
        match reason {
            Some(why) => {
                if r.get(source) != Some(&why) {
                    tracing::warn!(source, "degraded: {why}");
                }
                r.insert(source, why);
            }
            None => {
                if r.remove(source).is_some() {
                    tracing::info!(source, "no longer degraded");
                }
            }
        }
    }

    /// What is wrong, one line per source; empty when healthy.
    pub fn degraded(&self) -> Vec<String> {
        self.reasons().values().cloned().collect()
    }

    /// Whether `source` (one of [`SOURCES`]) is degraded now.
    pub fn is_set(&self, source: &str) -> bool {
        self.reasons().contains_key(source)
    }

    /// Whether ingest should pause: something is degraded, or the process is stopping.
    pub fn is_degraded(&self) -> bool {
        self.stopping.load(Ordering::Acquire) || !self.reasons().is_empty()
    }

    /// Stops ingest for good (shutdown). Not a degradation: /healthz and /metrics do not
    /// show it.
    pub fn stop_ingest(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Bumped whenever ingest ops that were not committed were dropped: a feed that made ops
    /// in an older epoch goes back to its committed checkpoint.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// An index commit failed and was rolled back.
    pub fn index_failed_with(&self, reason: String) {
        self.set("index", Some(reason));
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether the index is in its failed state.
    pub fn index_failed(&self) -> bool {
        self.reasons().contains_key("index")
    }

    /// A commit went through again. Ops queued while failed were dropped: a new epoch.
    pub fn index_recovered(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.set("index", None);
    }
}

/// Every 2 s: pauses ingest while the data directory has less than `min_free_mb` free (the
/// block store cannot recover from a failed write without a restart, so it must not reach
/// one), and ends the process, after a grace period for reads, when the store did fail.
pub(crate) async fn watch_disk_and_store(
    agg: std::sync::Weak<crate::Aggregator>,
    dir: std::path::PathBuf,
    min_free_mb: u64,
) {
    const GRACE: Duration = Duration::from_secs(30);
    let mut store_failed_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Some(agg) = agg.upgrade() else { return };
        let free_mb = fs4::available_space(&dir).ok().map(|b| b / (1024 * 1024));
        agg.health.set(
            "disk",
            free_mb.filter(|f| *f < min_free_mb).map(|f| {
                format!(
                    "{f} MB free in {} (min_free_disk_mb = {min_free_mb}): ingest paused",
                    dir.display()
                )
            }),
        );
        if let Some(e) = agg.replicator().store().write_error() {
            let at = *store_failed_at.get_or_insert_with(tokio::time::Instant::now);
            agg.health.set(
                "store",
                Some(format!("the block store failed to write ({e}); it needs a restart, which happens in {} s", GRACE.as_secs())),
            );
            if at.elapsed() >= GRACE {
                tracing::error!("the block store failed to write ({e}): exiting so that a restart reopens it; ingest resumes from the committed checkpoints");
                eprintln!("fatal: the block store failed to write ({e}); restart to reopen it");
                std::process::exit(75); // EX_TEMPFAIL: a restart fixes it
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_epochs() {
        let h = Health::default();
        assert!(!h.is_degraded());
        h.set("disk", Some("12 MB free".into()));
        h.index_failed_with("commit failed: ENOSPC".into());
        assert_eq!(h.degraded().len(), 2);
        assert!(h.index_failed());
        assert_eq!(h.epoch(), 1);
        h.index_recovered();
        h.set("disk", None);
        assert!(!h.is_degraded());
        assert_eq!(h.epoch(), 2);
        h.stop_ingest();
        assert!(h.is_degraded() && h.degraded().is_empty());
    }
}
