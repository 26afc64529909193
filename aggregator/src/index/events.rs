//! The live stream's events: each entry once it is verified and made a document for the
//! index writer (by `index/prepare`: not after the next commit, which is up to
//! `commit_interval_ms` later, nor behind a commit under way), with an id a reconnecting
//! client passes back as `Last-Event-ID` to get what it missed.
//!
//! Ids are `<boot>-<n>`: `boot` tells this process from an earlier one (whose events are
//! gone), `n` counts every entry applied since start, kept or not. The last [`RING`] events are
//! kept for resuming; they are only made (an [`Entry`] and its JSON, once for every
//! subscriber) while someone listens or listened within [`LINGER`], so a bulk ingest nobody
//! watches pays nothing. A client whose next event is no longer kept gets `reset`, with the
//! newest id: it re-reads `/v1/feed` for what it missed.
//!
//! An event can come before its entry is searchable (by up to the commit interval and one
//! commit's time), and an
//! entry can come twice after a failed commit (the feed re-reads from its checkpoint): same
//! feed, key and seq.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::api::Entry;

/// Events kept for clients that reconnect; also the broadcast buffer a slow client may lag.
pub const RING: usize = 4096;
/// How long after the last subscriber left events are still kept for its return.
pub const LINGER: Duration = Duration::from_secs(60);

/// One entry of the live stream.
#[derive(Debug)]
pub struct LiveEvent {
    /// Counts every applied entry since start.
    pub n: u64,
    /// The entry, for the filters.
    pub entry: Arc<Entry>,
    /// Its server-sent event (`event: entry`, `id`, `data` and the blank line), made once for
    /// every subscriber.
    pub sse: Bytes,
}

/// A subscription: what is replayed, then the live receiver.
pub struct Subscription {
    /// Kept events after the client's `Last-Event-ID`, oldest first.
    pub replay: Vec<Arc<LiveEvent>>,
    /// Events the client missed are no longer kept: tell it to re-read.
    pub reset: bool,
    /// Later events.
    pub rx: broadcast::Receiver<Arc<LiveEvent>>,
    /// The newest id at subscription (for `reset`; none before the first event).
    pub newest: Option<String>,
}

/// The event log of one process.
pub struct Events {
    boot: String,
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// Kept events and the next `n`, under one lock with the broadcast send, so a subscriber
    /// sees each event once: in its replay or on its receiver.
    ring: Mutex<(VecDeque<Arc<LiveEvent>>, u64)>,
    /// Until when (µs since the epoch) events are kept although nobody listens.
    linger_until: AtomicI64,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl Default for Events {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(RING);
        Events {
            boot: format!("{:x}", apiary_core::tid::now_micros()),
            tx,
            ring: Mutex::new((VecDeque::with_capacity(RING), 0)),
            linger_until: AtomicI64::new(0),
        }
    }
}

impl Events {
    /// Whether an applied entry should be made into an event (else it is only counted).
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0 || now_micros() < self.linger_until.load(Ordering::Relaxed)
    }

    /// Counts an applied entry nobody will see: a resume across it gets `reset`.
    pub fn skip(&self) {
        let mut g = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        g.1 += 1;
    }

    /// Publishes an applied entry.
    pub fn publish(&self, entry: Entry) {
        let json = serde_json::to_string(&entry).unwrap_or_default();
        let mut g = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.id(g.1);
        // serde_json escapes control characters, so the JSON is one line: one `data:` field.
        let sse = Bytes::from(format!("event: entry\nid: {id}\ndata: {json}\n\n"));
        let ev = Arc::new(LiveEvent {
            n: g.1,
            entry: Arc::new(entry),
            sse,
        });
        g.1 += 1;
        if g.0.len() == RING {
            g.0.pop_front();
        }
        g.0.push_back(ev.clone());
        // No receiver is not an error: the ring keeps it for a returning client.
        let _ = self.tx.send(ev);
    }

    /// The id a client sees for event `n`.
    pub fn id(&self, n: u64) -> String {
        format!("{}-{n}", self.boot)
    }

    /// Subscribes; `last`: the client's `Last-Event-ID` (any text: one not made by this
    /// process is a `reset`).
    pub fn subscribe(&self, last: Option<&str>) -> Subscription {
        let g = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let next = g.1;
        let newest = next.checked_sub(1).map(|n| self.id(n));
        let Some(last) = last else {
            return Subscription {
                replay: Vec::new(),
                reset: false,
                rx,
                newest,
            };
        };
        let after = last
            .strip_prefix(self.boot.as_str())
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n < next);
        if let Some(n) = after {
            let replay: Vec<_> = g.0.iter().filter(|e| e.n > n).cloned().collect();
            // The ids are unique and between n and next: as many as that means no gap.
            if replay.len() as u64 == next - n - 1 {
                return Subscription {
                    replay,
                    reset: false,
                    rx,
                    newest,
                };
            }
        }
        Subscription {
            replay: Vec::new(),
            reset: true,
            rx,
            newest,
        }
    }

    /// A subscriber left: keep events for its return.
    pub fn left(&self) {
        let until = now_micros().saturating_add(LINGER.as_micros() as i64);
        self.linger_until.fetch_max(until, Ordering::Relaxed);
    }
}

fn now_micros() -> i64 {
    apiary_core::tid::now_micros() as i64
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An entry of feed `f` with this key (also for the stream's tests).
    pub(crate) fn entry(key: &str) -> Entry {
        Entry {
            source: String::new(),
            proof: String::new(),
            feed: "f".into(),
            key: key.into(),
            seq: Some(1),
            version: Some(2),
            seen_at: None,
            sort_at: None,
            typ: None,
            tags: Vec::new(),
            value: serde_json::value::RawValue::NULL.to_owned(),
            score: None,
            snippet: None,
        }
    }

    #[test]
    fn resume_replays_what_was_kept_and_resets_past_it() {
        let ev = Events::default();
        let first = ev.subscribe(None);
        assert!(ev.wanted());
        for k in ["a", "b", "c"] {
            ev.publish(entry(k));
        }
        drop(first);
        ev.left();
        assert!(ev.wanted(), "kept for a returning client");
        let s = ev.subscribe(Some(&ev.id(0)));
        assert!(!s.reset);
        let keys: Vec<_> = s.replay.iter().map(|e| e.entry.key.clone()).collect();
        assert_eq!(keys, ["b", "c"]);
        assert!(ev.subscribe(Some(&ev.id(2))).replay.is_empty());
        // Another process's id, a future one, garbage: reset.
        for bad in ["0-1", &ev.id(3), "x", ""] {
            assert!(ev.subscribe(Some(bad)).reset, "{bad}");
        }
        // Entries nobody saw: a resume across them is a reset.
        ev.skip();
        ev.publish(entry("d"));
        assert!(ev.subscribe(Some(&ev.id(2))).reset);
        assert!(!ev.subscribe(Some(&ev.id(3))).reset);
    }

    #[test]
    fn the_ring_forgets_the_oldest() {
        let ev = Events::default();
        let _s = ev.subscribe(None);
        for i in 0..RING + 10 {
            ev.publish(entry(&i.to_string()));
        }
        assert!(ev.subscribe(Some(&ev.id(5))).reset);
        let s = ev.subscribe(Some(&ev.id(9)));
        assert!(!s.reset);
        assert_eq!(s.replay.len(), RING);
    }
}
