//! The keys a feed's first pass has put so far, as Bloom filters.
//!
//! On a feed's first pass the index holds none of its entries, so a put of a key the pass
//! has not put before is an insert (no delete of an older entry), and a del of such a key
//! has nothing to delete. Deletes are what make indexing expensive: tantivy looks each one
//! up in every segment at commit time, so a 10M-entry ingest where every put was an upsert
//! spent most of its time there.
//!
//! The set of keys put so far used to be a `HashSet<Vec<u8>>`: ~60 bytes per key, kept for
//! the whole pass of every feed at once (they all advance together), which was 600 MB of the
//! 1.2 GB peak of a 10M-entry ingest (100 bees × 100k keys, heaptrack). A Bloom filter is
//! ~1.25 bytes per key. Its only error is a false "maybe put before", which turns an insert
//! into an upsert or sends a delete of a key that is not indexed: both are correct, only a
//! little slower (about 1 in 100 keys). It cannot forget a key, so a put after a del is an
//! upsert too, which is also correct.
//!
//! The filters grow with the pass (each new one twice the size of the last), so a feed that
//! grows while it is read needs no size up front, and past [`FirstPass::MAX_KEYS`] the pass
//! gives up: every put replaces, every del deletes, as on later passes.

use std::hash::BuildHasher;

/// Keys put so far in a feed's first pass; `None` when not a first pass (or given up).
pub(crate) struct FirstPass(Option<Filters>);

struct Filters {
    /// Filled in order; only the last one takes new keys.
    filters: Vec<Bloom>,
    /// Seeded per pass, so an author cannot pick keys that collide on purpose.
    hasher: std::collections::hash_map::RandomState,
    /// Keys put into the filters.
    keys: usize,
}

/// One Bloom filter for `capacity` keys at [`BITS_PER_KEY`] bits each.
struct Bloom {
    bits: Vec<u64>,
    capacity: usize,
    keys: usize,
}

/// 10 bits per key and 7 probes: a false positive rate of about 0.8% per filter when full.
const BITS_PER_KEY: usize = 10;
const PROBES: u64 = 7;
/// The smallest filter's capacity (1.25 KiB).
const FIRST_CAPACITY: usize = 1024;

impl Bloom {
    fn new(capacity: usize) -> Self {
        let words = (capacity * BITS_PER_KEY).div_ceil(64).max(1);
        Bloom {
            bits: vec![0; words],
            capacity,
            keys: 0,
        }
    }

    fn insert(&mut self, h: u64) {
        let m = self.bits.len() as u64 * 64;
        for (word, mask) in positions(m, h) {
            if let Some(w) = self.bits.get_mut(word) {
                *w |= mask;
            }
        }
        self.keys += 1;
    }

    fn contains(&self, h: u64) -> bool {
        let m = self.bits.len() as u64 * 64;
        positions(m, h).all(|(word, mask)| self.bits.get(word).is_some_and(|w| w & mask != 0))
    }
}

/// The (word, bit mask) of each probe of a hash in `m` bits: double hashing of its halves.
fn positions(m: u64, h: u64) -> impl Iterator<Item = (usize, u64)> {
    let (a, b) = (h & 0xffff_ffff, (h >> 32) | 1);
    (0..PROBES).map(move |i| {
        let bit = a.wrapping_add(i.wrapping_mul(b)) % m.max(1);
        ((bit / 64) as usize, 1u64 << (bit % 64))
    })
}

impl FirstPass {
    /// Keys past which a first pass gives up (~5 MiB of filters).
    pub(crate) const MAX_KEYS: usize = 1 << 22;

    /// A first pass (`first`) of about `expected` keys (the entries it will read; more is
    /// fine), or a later pass, which may replace or delete any key.
    pub(crate) fn new(first: bool, expected: u64) -> Self {
        let capacity = usize::try_from(expected)
            .unwrap_or(usize::MAX)
            .clamp(FIRST_CAPACITY, Self::MAX_KEYS);
        FirstPass(first.then(|| Filters {
            filters: vec![Bloom::new(capacity)],
            hasher: Default::default(),
            keys: 0,
        }))
    }

    /// A put of `key`: whether an older entry of it may be indexed.
    pub(crate) fn put(&mut self, key: &[u8]) -> bool {
        let Some(f) = &mut self.0 else {
            return true;
        };
        if f.keys >= Self::MAX_KEYS {
            self.0 = None;
            return true;
        }
        let h = f.hasher.hash_one(key);
        if f.filters.iter().any(|b| b.contains(h)) {
            return true;
        }
        let full = f.filters.last().is_none_or(|b| b.keys >= b.capacity);
        if full {
            let next = f.filters.last().map_or(FIRST_CAPACITY, |b| b.capacity * 2);
            f.filters.push(Bloom::new(next));
        }
        if let Some(b) = f.filters.last_mut() {
            b.insert(h);
        }
        f.keys += 1;
        false
    }

    /// A del of `key` (or a value not indexed): whether an entry of it may be indexed.
    pub(crate) fn may_be_indexed(&self, key: &[u8]) -> bool {
        match &self.0 {
            Some(f) => {
                let h = f.hasher.hash_one(key);
                f.filters.iter().any(|b| b.contains(h))
            }
            None => true,
        }
    }

    /// Bytes held by the filters.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |f| {
            f.filters.iter().map(|b| b.bits.len() * 8).sum::<usize>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_pass_deletes_only_keys_it_put() {
        let mut first = FirstPass::new(true, 0);
        // Nothing of the feed is indexed: a del of an unseen key has nothing to delete, a
        // first put inserts.
        assert!(!first.may_be_indexed(b"a"));
        assert!(!first.put(b"a"));
        // Put again: the first one may be indexed now.
        assert!(first.put(b"a"));
        assert!(!first.put(b"b"));
        // Deleted: the entry may be indexed (delete it); a put after that replaces.
        assert!(first.may_be_indexed(b"a"));
        assert!(first.put(b"a"));
        // Not a first pass: anything may be indexed from before.
        let later = FirstPass::new(false, 0);
        assert!(later.may_be_indexed(b"z"));
        let mut later = later;
        assert!(later.put(b"a") && later.put(b"a"));
    }

    /// A key put is never reported unseen (that would index it twice), in a pass sized up
    /// front and in one that grows; keys never put are reported seen rarely; memory stays
    /// near 1.25 bytes per key (2.5 for a grown pass).
    #[test]
    fn no_false_negatives_few_false_positives_small() {
        for expected in [300_000, 0] {
            check_pass(FirstPass::new(true, expected), expected);
        }
    }

    fn check_pass(mut first: FirstPass, expected: u64) {
        let n = 300_000u32;
        let mut repeats = 0;
        for i in 0..n {
            if first.put(format!("key-{i}").as_bytes()) {
                repeats += 1; // a false positive on a new key: an upsert instead of an insert
            }
        }
        for i in 0..n {
            let k = format!("key-{i}");
            assert!(first.may_be_indexed(k.as_bytes()), "{k} forgotten");
            assert!(first.put(k.as_bytes()), "{k} forgotten");
        }
        let unseen = (0..n)
            .filter(|i| first.may_be_indexed(format!("other-{i}").as_bytes()))
            .count();
        // ~0.8% for one full filter; a grown pass adds the rates of its filters.
        let (most, bytes) = if expected > 0 { (1, 13) } else { (8, 30) };
        assert!(
            unseen < n as usize * most / 100,
            "{expected}: {unseen} false positives"
        );
        assert!(
            repeats < n as usize * most / 100,
            "{expected}: {repeats} false repeats"
        );
        assert!(
            first.bytes() * 10 < n as usize * bytes,
            "{} bytes",
            first.bytes()
        );
    }

    #[test]
    fn a_first_pass_of_too_many_keys_gives_up() {
        let mut first = FirstPass::new(true, 0);
        if let Some(f) = &mut first.0 {
            f.keys = FirstPass::MAX_KEYS; // as if that many were put
        }
        // One more: it gives up, and from then on every put replaces, every del deletes.
        assert!(first.put(b"one more"));
        assert!(first.0.is_none());
        assert!(first.put(b"new") && first.may_be_indexed(b"never seen"));
    }
}
