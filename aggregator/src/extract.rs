//! Value extraction: what an entry's JSON value gives the index besides the value itself
//! (its text, type, tags and creation time), and the time forms of the API.
//!
//! Any JSON value is indexed: its text is gathered from the common text fields (`text`,
//! `title`, `body`, `name`, `description`, … at any depth up to 4, or the value itself if it is
//! a string), `type` and `tags` become filters, and `createdAt` (RFC 3339 or epoch
//! milliseconds) only ever moves an entry *back* in time: `sortAt = min(createdAt, seenAt)`,
//! so a forged future date cannot pin a post on top of the feed.

use serde_json::Value;

/// Field names whose string values are searchable text.
pub const TEXT_FIELDS: &[&str] = &[
    "text",
    "title",
    "body",
    "name",
    "description",
    "summary",
    "content",
    "caption",
    "subject",
    "message",
    "headline",
    "comment",
    "note",
    "label",
    "displayName",
    "bio",
    "alt",
];

const MAX_TEXT: usize = 64 * 1024;
const MAX_TAGS: usize = 32;
const MAX_DEPTH: usize = 4;

/// What an entry contributes to the index besides its key and provenance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Searchable text.
    pub text: String,
    /// `type` of the value, if a short string.
    pub kind: Option<String>,
    /// Tags, lower-case, without `#`.
    pub tags: Vec<String>,
    /// `createdAt` in microseconds since the epoch.
    pub created_at: Option<i64>,
    /// The language the value declares (`lang`, the first of `langs` as AT Protocol posts
    /// carry, or `language`), a short tag as given.
    pub lang: Option<String>,
}

/// Extracts the indexable parts of a value.
pub fn extract(v: &Value) -> Extracted {
    let mut out = Extracted::default();
    match v {
        Value::String(s) => push_text(&mut out.text, s),
        _ => gather(v, 0, &mut out.text),
    }
    if let Some(Value::String(t)) = v.get("type") {
        if !t.is_empty() && t.len() <= 64 {
            out.kind = Some(t.clone());
        }
    }
    match v.get("tags") {
        Some(Value::Array(a)) => {
            for t in a.iter().filter_map(Value::as_str) {
                add_tag(&mut out.tags, t);
            }
        }
        Some(Value::String(t)) => add_tag(&mut out.tags, t),
        _ => {}
    }
    out.created_at = ["createdAt", "created_at"]
        .iter()
        .find_map(|k| v.get(*k))
        .and_then(parse_time);
    let lang = match v.get("langs") {
        Some(Value::Array(a)) => a.first().and_then(Value::as_str),
        _ => None,
    };
    out.lang = lang
        .or_else(|| v.get("lang").and_then(Value::as_str))
        .or_else(|| v.get("language").and_then(Value::as_str))
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.len() <= 35)
        .map(str::to_owned);
    out
}

fn add_tag(tags: &mut Vec<String>, t: &str) {
    let t = t.trim().trim_start_matches('#').to_lowercase();
    if !t.is_empty() && t.len() <= 64 && tags.len() < MAX_TAGS && !tags.contains(&t) {
        tags.push(t);
    }
}

fn push_text(out: &mut String, s: &str) {
    if out.len() >= MAX_TEXT {
        return;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let room = MAX_TEXT - out.len();
    let mut end = s.len().min(room);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&s[..end]);
}

fn gather(v: &Value, depth: usize, out: &mut String) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if TEXT_FIELDS.contains(&k.as_str()) => push_text(out, s),
                    Value::Array(a) if TEXT_FIELDS.contains(&k.as_str()) => {
                        for s in a.iter().filter_map(Value::as_str) {
                            push_text(out, s);
                        }
                    }
                    Value::Object(_) | Value::Array(_) => gather(x, depth + 1, out),
                    _ => {}
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                gather(x, depth + 1, out);
            }
        }
        _ => {}
    }
}

/// RFC 3339 text or epoch milliseconds → microseconds.
pub fn parse_time(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1000).ok())
        }
        Value::Number(n) => n.as_i64().and_then(|ms| ms.checked_mul(1000)),
        _ => None,
    }
}

/// Microseconds → RFC 3339 (how the API writes every time).
pub fn format_time(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `sortAt`: the earlier of the claimed creation time and when we first saw the entry.
pub fn sort_at(created_at: Option<i64>, seen_at: i64) -> i64 {
    match created_at {
        Some(c) if c > 0 => c.min(seen_at),
        _ => seen_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn posts_movies_and_anything() {
        let p = extract(
            &json!({"type": "post", "text": "hello world", "createdAt": "2024-01-01T00:00:00Z", "tags": ["Rust", "#p2p", "rust"]}),
        );
        assert_eq!(p.text, "hello world");
        assert_eq!(p.kind.as_deref(), Some("post"));
        assert_eq!(p.tags, vec!["rust", "p2p"]);
        assert_eq!(p.created_at, Some(1_704_067_200_000_000));
        let m = extract(
            &json!({"title": "Alien", "meta": {"description": "space horror", "year": 1979}}),
        );
        assert!(
            m.text.contains("Alien") && m.text.contains("space horror"),
            "{}",
            m.text
        );
        assert!(!m.text.contains("1979"));
        assert_eq!(extract(&json!("just text")).text, "just text");
        assert_eq!(extract(&json!(42)).text, "");
        assert_eq!(
            extract(&json!({"createdAt": 1000})).created_at,
            Some(1_000_000)
        );
        assert_eq!(extract(&json!({"createdAt": "yesterday"})).created_at, None);
    }

    #[test]
    fn a_future_date_cannot_pin_a_post_on_top() {
        let now = 1_800_000_000_000_000;
        assert_eq!(sort_at(Some(now + 10_000_000_000), now), now);
        assert_eq!(sort_at(Some(now - 5), now), now - 5);
        assert_eq!(sort_at(None, now), now);
    }

    #[test]
    fn deep_and_huge_values_are_bounded() {
        let mut v = json!({"text": "bottom"});
        for _ in 0..100 {
            v = json!({"inner": v});
        }
        assert_eq!(extract(&v).text, "");
        let big = extract(&json!({"text": "é".repeat(100_000)}));
        assert!(big.text.len() <= MAX_TEXT);
    }
}
