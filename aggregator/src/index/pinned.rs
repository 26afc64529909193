//! Searchers kept for the later pages of a search. A search's cursor names the searcher
//! generation its first page read, and the next pages read that same generation while it is
//! kept here, so a commit landing between two pages does not shift the offsets (a new hit
//! above would show the last hit of a page again on the next). Kept: the last [`KEEP`]
//! generations that gave a cursor, each for [`FOR`]; a generation no longer kept is read at
//! the newest one (offsets as they are then).
//!
//! A kept searcher keeps its segments' files: after a merge, for up to [`FOR`], the merged
//! segments stay on disk beside their replacement (tantivy deletes a file only when no
//! searcher generation uses it).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tantivy::Searcher;

/// Generations kept at most.
const KEEP: usize = 64;
/// How long a generation is kept after the last page that named it.
const FOR: Duration = Duration::from_secs(60);

/// The kept searchers, oldest first.
#[derive(Default)]
pub(super) struct Pinned {
    kept: Mutex<VecDeque<(Instant, Searcher)>>,
}

impl Pinned {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Searcher)>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `searcher` (or refreshes it); returns its generation id, for the cursor.
    pub(super) fn pin(&self, searcher: &Searcher) -> u64 {
        let id = searcher.generation().generation_id();
        let now = Instant::now();
        let mut kept = self.lock();
        kept.retain(|(_, s)| s.generation().generation_id() != id);
        kept.push_back((now, searcher.clone()));
        while kept.len() > KEEP {
            kept.pop_front();
        }
        kept.retain(|(t, _)| now.duration_since(*t) < FOR);
        id
    }

    /// The kept searcher of generation `id`, if it still is.
    pub(super) fn get(&self, id: u64) -> Option<Searcher> {
        let now = Instant::now();
        let mut kept = self.lock();
        kept.retain(|(t, _)| now.duration_since(*t) < FOR);
        kept.iter()
            .find(|(_, s)| s.generation().generation_id() == id)
            .map(|(_, s)| s.clone())
    }
}
