//! Time buckets: the feed's time windows as a few indexed terms instead of a range scan.
//!
//! A page of `/v1/feed` is looked for in a time window below its cursor. Asked of the
//! `sort_at` fast field, tantivy's range query reads the column of every segment from start
//! to end (its doc set reports a size of 0, so it leads every intersection): at 1M entries,
//! 53% of the aggregator's CPU under a feed load went to `get_row_ids_for_value_range`, and
//! a page cost ~2 ms whatever the window held.
//!
//! So each entry is also indexed under the aligned buckets that hold its `sort_at` at
//! [`LEVELS`] widths (2^26 µs ≈ 67 s, then ×16 up to 2^50 µs ≈ 36 years), in one u64 field:
//! term = `level << 56 | bucket`, where `bucket` is the order-preserving unsigned form of
//! `sort_at` shifted right by the level's width. A window `[lo, hi]` becomes the union of
//! the few buckets that cover it ([`cover`]: the widest aligned bucket that fits at each step,
//! a part-covered bucket at the finest level at the edges), whose postings hold only the
//! entries of that time, plus at most a finest bucket's worth on each side: the caller keeps
//! the exact bounds on the rows it reads (their `sort_at` comes with them).

/// Bucket widths, as powers of two of microseconds.
pub const LEVELS: [u32; 7] = [26, 30, 34, 38, 42, 46, 50];

/// `sort_at` in an unsigned form with the same order (negative times sort first).
fn ordered(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

fn term(level: usize, bucket: u64) -> u64 {
    ((level as u64) << 56) | bucket
}

/// The terms an entry with this `sort_at` is indexed under: one per level.
pub fn terms_of(sort_at: i64) -> impl Iterator<Item = u64> {
    let o = ordered(sort_at);
    LEVELS
        .iter()
        .enumerate()
        .map(move |(level, &shift)| term(level, o >> shift))
}

/// Terms whose buckets together hold every time in `[lo, hi]` (inclusive), and little else
/// (part of one finest bucket at each end). Empty when `lo > hi`.
pub fn cover(lo: i64, hi: i64) -> Vec<u64> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    let (mut a, b) = (ordered(lo), ordered(hi));
    loop {
        // The widest bucket that starts at `a` and ends within `b`; else the finest bucket
        // holding `a` (an edge, covered in part).
        let level = (0..LEVELS.len())
            .rev()
            .find(|&l| {
                let width_less_one = (1u64 << LEVELS[l]) - 1;
                a & width_less_one == 0 && a | width_less_one <= b
            })
            .unwrap_or(0);
        let shift = LEVELS[level];
        out.push(term(level, a >> shift));
        let end = a | ((1u64 << shift) - 1);
        if end >= b {
            return out;
        }
        a = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FINEST: i64 = 1 << 26;

    fn covered(cover: &[u64], t: i64) -> bool {
        terms_of(t).any(|x| cover.contains(&x))
    }

    proptest! {
        #[test]
        fn every_time_in_the_window_is_covered_and_little_else(
            lo in any::<i64>(),
            len in prop_oneof![0i64..1 << 20, 0i64..1 << 40, 0i64..1 << 52],
            pick in 0.0f64..1.0,
            outside in 0i64..1 << 40,
        ) {
            let hi = lo.saturating_add(len);
            let c = cover(lo, hi);
            // ≤ 15 buckets per level on each side, and the two edges.
            prop_assert!(c.len() <= 2 * 15 * LEVELS.len() + 2, "{} terms", c.len());
            let inside = lo.saturating_add(((hi as i128 - lo as i128) as f64 * pick) as i64);
            for t in [lo, hi, inside] {
                prop_assert!(covered(&c, t), "{t} in [{lo}, {hi}] not covered");
            }
            // Past a finest bucket beyond either end, nothing is covered.
            if let Some(t) = hi.checked_add(FINEST).and_then(|t| t.checked_add(outside)) {
                prop_assert!(!covered(&c, t), "{t} above [{lo}, {hi}] covered");
            }
            if let Some(t) = lo.checked_sub(FINEST).and_then(|t| t.checked_sub(outside)) {
                prop_assert!(!covered(&c, t), "{t} below [{lo}, {hi}] covered");
            }
        }
    }

    #[test]
    fn edges_and_the_whole_range() {
        assert!(cover(5, 4).is_empty());
        assert_eq!(cover(0, 0).len(), 1);
        let all = cover(i64::MIN, i64::MAX);
        assert!(all.len() <= 1 << 14, "{}", all.len());
        for t in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert!(covered(&all, t));
        }
        // An hour, a day: a few dozen terms.
        let hour = 3_600_000_000;
        let now = 1_764_460_800_000_000;
        assert!(cover(now - hour, now).len() < 64);
        assert!(cover(now - 24 * hour, now).len() < 64);
    }
}
