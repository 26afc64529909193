//! Keys, values and the post convention.
//!
//! Keys are UTF-8, 1 to 1024 bytes, without control characters (NUL separates subs). Values
//! are JSON, stored compact. A post is
//! `{"type":"post","text":…,"createdAt":RFC3339,"tags":[…]}` under a time-sortable id.

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Largest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Largest value, in bytes (after compacting).
pub const MAX_VALUE: usize = 4 * 1024 * 1024;

/// Checks a key.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(Error::BadInput(format!(
            "key must be 1 to {MAX_KEY} bytes, got {}",
            key.len()
        )));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(Error::BadInput(format!(
            "key {key:?} contains the control character {c:?}"
        )));
    }
    Ok(())
}

/// Parses JSON text into the stored bytes.
pub fn encode_json_text(text: &str) -> Result<Vec<u8>> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::BadInput(format!("value is not JSON: {e}")))?;
    encode_value(&v)
}

/// A JSON value as stored bytes.
pub fn encode_value(v: &Value) -> Result<Vec<u8>> {
    let b = serde_json::to_vec(v).map_err(|e| Error::BadInput(e.to_string()))?;
    if b.len() > MAX_VALUE {
        return Err(Error::BadInput(format!(
            "value is {} bytes, the limit is {MAX_VALUE}",
            b.len()
        )));
    }
    Ok(b)
}

/// Stored bytes back to JSON (a value that is not JSON shows as a string).
pub fn decode_value(b: Option<&[u8]>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => serde_json::from_slice(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
    }
}

use apiary_core::tid::{now_micros, tid};

/// A new post: its key and value.
pub fn new_post(text: &str, tags: &[String]) -> Result<(String, Value)> {
    if text.trim().is_empty() {
        return Err(Error::BadInput("a post needs some text".into()));
    }
    for t in tags {
        if t.is_empty() || t.len() > 64 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::BadInput(format!(
                "tag {t:?}: 1-64 characters without spaces"
            )));
        }
    }
    let micros = now_micros();
    let created = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let key = tid(micros, u32::from(rand::random::<u16>() & 0x3ff));
    Ok((
        key,
        json!({"type": "post", "text": text, "createdAt": created, "tags": tags}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_checked() {
        assert!(check_key("").is_err());
        assert!(check_key("a\u{0}b").is_err());
        assert!(check_key(&"x".repeat(2000)).is_err());
        assert!(check_key("ключ 😀").is_ok());
        assert!(encode_json_text("{bad").is_err());
        assert_eq!(encode_json_text("{ \"a\" : 1 }").unwrap(), br#"{"a":1}"#);
        assert!(new_post(" ", &[]).is_err());
        let (k, v) = new_post("hello", &["rust".into()]).unwrap();
        assert_eq!(k.len(), 13);
        assert_eq!(v["type"], "post");
    }
}
