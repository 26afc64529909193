//! The deterministic "social post" dataset, ported from `js/data.js` (itself a port of the
//! reference `../shared/bench/js-reference/lib.js`): mulberry32 PRNG (posts: seed 1,
//! vocabulary: seed 42), 2000 pseudo-words, Zipf-like word pick, TID-like keys.
//!
//! The values are the exact bytes JS `JSON.stringify` gives for
//! `{type, text, createdAt, tags}` (in that key order), so a bee built from here holds the
//! same keys and values as the JS writer's. `bench-data --check` compares the two generators
//! line by line.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// mulberry32: floats in `[0, 1)`, bit for bit like the JS `prng(seed)`.
#[derive(Debug, Clone)]
pub struct Prng {
    state: u32,
}

impl Prng {
    /// A generator with `seed` (JS `seed >>> 0`).
    pub fn new(seed: u32) -> Self {
        Prng { state: seed }
    }

    /// The next float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x6d2b_79f5);
        let mut t = self.state;
        t = (t ^ (t >> 15)).wrapping_mul(t | 1);
        t ^= t.wrapping_add((t ^ (t >> 7)).wrapping_mul(t | 61));
        f64::from(t ^ (t >> 14)) / 4_294_967_296.0
    }
}

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "de", "po", "an", "el", "or", "un", "is", "ba",
    "ge", "hu", "fi", "zo", "ch", "st", "tr", "pl",
];

/// The 16 tags.
pub const TAGS: [&str; 16] = [
    "news", "tech", "rust", "p2p", "music", "art", "sports", "food", "travel", "photo", "science",
    "politics", "games", "books", "dev", "meme",
];

/// Index of `floor(len * u)` for a float `u` in `[0, 1)` (as JS `Math.floor` on an array length).
fn pick(len: usize, u: f64) -> usize {
    // len * u < len, so the cast stays in range.
    ((len as f64 * u).floor() as usize).min(len - 1)
}

/// 2000 pseudo-words of 1-3 syllables, at least 3 characters, in first-seen order (seed 42).
pub fn vocab() -> &'static [String] {
    static VOCAB: OnceLock<Vec<String>> = OnceLock::new();
    VOCAB.get_or_init(|| {
        let mut rand = Prng::new(42);
        let mut seen = HashSet::new();
        let mut words = Vec::with_capacity(2000);
        while words.len() < 2000 {
            let syllables = 1 + pick(3, rand.next_f64());
            let mut w = String::new();
            for _ in 0..syllables {
                w.push_str(SYLLABLES[pick(SYLLABLES.len(), rand.next_f64())]);
            }
            if w.len() >= 3 && seen.insert(w.clone()) {
                words.push(w);
            }
        }
        words
    })
}

/// Zipf-like: rank = floor(V * u^2.5).
fn pick_word(rand: &mut Prng) -> &'static str {
    let v = vocab();
    &v[pick(v.len(), rand.next_f64().powf(2.5))]
}

use apiary_core::tid::tid;

/// 2024-01-01T00:00:00Z in ms since the epoch.
pub const T0_MS: u64 = 1_704_067_200_000;

/// JS `new Date(ms).toISOString()` for ms since the epoch (years 1970-9999).
pub fn iso_date(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let in_day = ms % 86_400_000;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// One post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// The bee key (13 characters).
    pub key: String,
    /// 20-60 words.
    pub text: String,
    /// ISO date.
    pub created_at: String,
    /// 0-3 tags.
    pub tags: Vec<&'static str>,
}

/// Post `i`: 2024-01-01 + i * 1.7 s + up to 1 s jitter; 20-60 words; 0-3 tags. The PRNG calls
/// happen in the reference's order (jitter, word count, words, tag count, tags).
pub fn post(i: u64, rand: &mut Prng) -> Post {
    let ms = T0_MS + i * 1700 + pick(1000, rand.next_f64()) as u64;
    let word_count = 20 + pick(41, rand.next_f64());
    let mut text = String::with_capacity(word_count * 7);
    for k in 0..word_count {
        if k > 0 {
            text.push(' ');
        }
        text.push_str(pick_word(rand));
    }
    let tag_count = pick(4, rand.next_f64());
    let tags = (0..tag_count)
        .map(|_| TAGS[pick(TAGS.len(), rand.next_f64())])
        .collect();
    Post {
        key: tid(ms * 1000 + i % 1000, 0),
        text,
        created_at: iso_date(ms),
        tags,
    }
}

impl Post {
    /// The value as JS `JSON.stringify({type: 'post', text, createdAt, tags})` writes it.
    pub fn value_json(&self) -> String {
        self.json(None)
    }

    /// The value with a last field `"pubNs": "<ns>"` (a string, as the reference `live.js`
    /// stores `process.hrtime.bigint().toString()`).
    pub fn value_json_with_pub_ns(&self, pub_ns: u64) -> String {
        self.json(Some(pub_ns))
    }

    fn json(&self, pub_ns: Option<u64>) -> String {
        let mut s = String::with_capacity(self.text.len() + 96);
        s.push_str(r#"{"type":"post","text":"#);
        push_json_string(&mut s, &self.text);
        s.push_str(r#","createdAt":"#);
        push_json_string(&mut s, &self.created_at);
        s.push_str(r#","tags":["#);
        for (k, t) in self.tags.iter().enumerate() {
            if k > 0 {
                s.push(',');
            }
            push_json_string(&mut s, t);
        }
        s.push(']');
        if let Some(ns) = pub_ns {
            let _ = write!(s, r#","pubNs":"{ns}""#);
        }
        s.push('}');
        s
    }
}

/// The query set of the reference `index.js`: `n` queries of 1 or 2 words from PRNG `seed`
/// (7 in the reference), with the data's Zipf-like word pick. The PRNG calls happen in the
/// reference's order: `rq() < 0.5 ? w() : w() + ' ' + w()` (the coin first, then the words
/// left to right). Two-word queries are meant with AND semantics.
pub fn reference_queries(n: usize, seed: u32) -> Vec<String> {
    let mut rq = Prng::new(seed);
    (0..n)
        .map(|_| {
            if rq.next_f64() < 0.5 {
                pick_word(&mut rq).to_owned()
            } else {
                let a = pick_word(&mut rq);
                let b = pick_word(&mut rq);
                format!("{a} {b}")
            }
        })
        .collect()
}

/// A JSON string literal as `JSON.stringify` writes it (the generated text is plain ASCII
/// letters and spaces, but escape anyway).
fn push_json_string(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso_date(T0_MS), "2024-01-01T00:00:00.000Z");
        assert_eq!(iso_date(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_date(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }

    #[test]
    fn reference_queries_start_like_index_js() {
        // The first queries of the reference index.js (prng(7)), as node prints them.
        let q = reference_queries(3, 7);
        assert_eq!(q, ["raorsu", "kagefi nege", "orpl"]);
    }

    #[test]
    fn tids_sort_like_times() {
        assert_eq!(tid(0, 0), "2222222222222");
        assert!(tid(1_000_000, 0) < tid(1_000_001, 0));
    }
}
