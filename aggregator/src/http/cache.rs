//! Bodies of `/v1/feed` and `/v1/search` answers, kept until the next index commit.
//!
//! A feed is read far more often than it changes: the newest page, a tag's page, the same
//! search typed by many. Between two commits the index answers every request the same way,
//! so the body made for one is served to the next ones as is (no query, no stored-document
//! reads, no JSON). Keyed by the request's path and query, exactly as sent; everything is
//! dropped when the index's generation moves on ([`crate::index::Index::generation`]). Bounded
//! by bytes: when full, nothing more is kept until the next commit empties it, so a client
//! sending distinct queries cannot evict the popular ones (they were kept first).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;

/// The cache of one process.
#[derive(Debug)]
pub struct ReadCache {
    cap_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    bytes: usize,
    map: HashMap<Box<str>, Bytes>,
}

impl ReadCache {
    /// A cache of at most `cap_bytes` (bodies and keys); 0 keeps nothing.
    pub fn new(cap_bytes: usize) -> Self {
        ReadCache {
            cap_bytes,
            inner: Mutex::default(),
        }
    }

    /// The body kept for `key` at `generation`, if any.
    pub fn get(&self, generation: u64, key: &str) -> Option<Bytes> {
        if self.cap_bytes == 0 {
            return None;
        }
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.generation != generation {
            return None;
        }
        g.map.get(key).cloned()
    }

    /// Keeps `body` for `key`, made from an index at least at `generation` (read before the
    /// query ran, so a body from a newer one is kept under an older generation, never the
    /// other way round).
    pub fn put(&self, generation: u64, key: &str, body: Bytes) {
        let size = key.len() + body.len();
        if size > self.cap_bytes {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if generation > g.generation {
            g.generation = generation;
            g.map.clear();
            g.bytes = 0;
        }
        if generation < g.generation || g.bytes + size > self.cap_bytes {
            return;
        }
        if g.map.insert(key.into(), body).is_none() {
            g.bytes += size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_within_a_generation_and_bounded() {
        let c = ReadCache::new(100);
        c.put(1, "/a", Bytes::from_static(b"one"));
        assert_eq!(c.get(1, "/a").as_deref(), Some(&b"one"[..]));
        assert_eq!(c.get(2, "/a"), None, "a commit made it stale");
        c.put(2, "/b", Bytes::from_static(b"two"));
        assert_eq!(c.get(2, "/a"), None, "dropped with its generation");
        c.put(1, "/c", Bytes::from_static(b"old"));
        assert_eq!(c.get(1, "/c"), None, "an older generation is not kept");
        assert_eq!(c.get(2, "/c"), None);
        c.put(2, "/big", Bytes::from(vec![0u8; 200]));
        assert_eq!(c.get(2, "/big"), None, "larger than the cache");
        c.put(2, "/fill", Bytes::from(vec![0u8; 94]));
        assert_eq!(c.get(2, "/fill"), None, "past the cap with /b");
        assert!(c.get(2, "/b").is_some(), "what came first stays");
        let off = ReadCache::new(0);
        off.put(0, "/a", Bytes::from_static(b"x"));
        assert_eq!(off.get(0, "/a"), None);
    }
}
