//! The JSON form of a stored document: the [`Entry`] the API serves and the live stream sends.

use serde_json::value::RawValue;
use tantivy::schema::{Field, OwnedValue, Value as _};
use tantivy::TantivyDocument;

use super::Fields;
use crate::api::Entry;
use crate::extract;

/// The entry of a document still needed afterwards (the live event of one being indexed).
pub(super) fn doc_entry(f: &Fields, d: &TantivyDocument) -> Entry {
    entry_of(f, d.field_values().iter().map(|v| (v.field, &v.value)))
}

/// [`doc_entry`] of a document not needed afterwards: its strings move into the entry
/// instead of being copied (a page's documents are read for it alone).
pub(super) fn doc_into_entry(f: &Fields, d: TantivyDocument) -> Entry {
    entry_of(f, d.into_iter().map(|v| (v.field, v.value)))
}

/// A stored value, owned or borrowed: its numbers are read in place, its string taken (moved
/// out of an owned value, copied from a borrowed one).
trait Stored: AsRef<OwnedValue> {
    fn into_string(self) -> Option<String>;
    fn to_u64(&self) -> Option<u64> {
        self.as_ref().as_u64()
    }
    fn to_i64(&self) -> Option<i64> {
        self.as_ref().as_i64()
    }
}

impl Stored for OwnedValue {
    fn into_string(self) -> Option<String> {
        match self {
            OwnedValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl Stored for &OwnedValue {
    fn into_string(self) -> Option<String> {
        self.as_str().map(str::to_owned)
    }
}

/// The entry of a document's stored values, in one pass (the first value of each field,
/// every tag).
fn entry_of<V: Stored>(f: &Fields, values: impl Iterator<Item = (Field, V)>) -> Entry {
    let (mut feed, mut key, mut typ, mut value) = (None, None, None, None);
    let (mut seq, mut version, mut seen_at, mut sort_at) = (None, None, None, None);
    let mut tags = Vec::new();
    for (field, v) in values {
        if field == f.value {
            value = value.or_else(|| v.into_string());
        } else if field == f.feed {
            feed = feed.or_else(|| v.into_string());
        } else if field == f.key {
            key = key.or_else(|| v.into_string());
        } else if field == f.tag {
            tags.extend(v.into_string());
        } else if field == f.typ {
            typ = typ.or_else(|| v.into_string());
        } else if field == f.seq {
            seq = seq.or(v.to_u64());
        } else if field == f.version {
            version = version.or(v.to_u64());
        } else if field == f.seen_at {
            seen_at = seen_at.or(v.to_i64());
        } else if field == f.sort_at {
            sort_at = sort_at.or(v.to_i64());
        }
    }
    // Checked, not trusted: the index is on disk (this parses without building a tree).
    let value = value
        .and_then(|v| RawValue::from_string(v).ok())
        .unwrap_or_else(|| RawValue::NULL.to_owned());
    let feed = feed.unwrap_or_default();
    let key = key.unwrap_or_default();
    Entry {
        source: format!("hyper://{feed}"),
        proof: crate::api::proof_link(&feed, &key),
        feed,
        key,
        seq,
        version,
        seen_at: seen_at.map(extract::format_time),
        sort_at: sort_at.map(extract::format_time),
        typ,
        tags,
        value,
        score: None,
        snippet: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_entry_reads_the_same_from_a_borrowed_and_an_owned_document() {
        let (_, f) = super::super::schema();
        let mut d = TantivyDocument::new();
        d.add_text(f.id, "id");
        d.add_text(f.feed, "feedkey");
        d.add_text(f.key, "k1");
        d.add_u64(f.seq, 7);
        d.add_u64(f.version, 8);
        d.add_i64(f.seen_at, 1_700_000_000_000_000);
        d.add_i64(f.sort_at, 1_600_000_000_000_000);
        d.add_text(f.typ, "post");
        d.add_text(f.tag, "a");
        d.add_text(f.tag, "b");
        d.add_text(f.value, r#"{"title":"x"}"#);
        d.add_text(f.value, r#""second value ignored""#);
        let borrowed = serde_json::to_value(doc_entry(&f, &d)).unwrap();
        let owned = serde_json::to_value(doc_into_entry(&f, d)).unwrap();
        assert_eq!(borrowed, owned);
        assert_eq!(owned["value"], serde_json::json!({"title": "x"}));
        assert_eq!(owned["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(owned["seq"], 7);
        assert_eq!(owned["type"], "post");
        // A stored value that is not JSON (a damaged index) reads as null.
        let mut bad = TantivyDocument::new();
        bad.add_text(f.value, "{not json");
        assert_eq!(doc_into_entry(&f, bad).value.get(), "null");
    }
}
