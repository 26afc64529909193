//! Registering a bee with an aggregator: `POST {url}/v1/feeds {"key", "peers"?}` with an
//! optional bearer token (the aggregator's HTTP API).

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Registers `key_hex`; returns the aggregator's JSON reply.
pub async fn register(
    url: &str,
    key_hex: &str,
    token: Option<&str>,
    address: Option<&str>,
) -> Result<Value> {
    let base = url.trim_end_matches('/');
    if !base.starts_with("http://") && !base.starts_with("https://") {
        return Err(Error::BadInput(format!(
            "aggregator URL {url:?} must start with http:// or https://"
        )));
    }
    let mut body = json!({"key": key_hex});
    if let Some(a) = address {
        body["peers"] = json!([a]);
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|e| Error::Remote(e.to_string()))?;
    let mut req = client.post(format!("{base}/v1/feeds")).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Error::Remote(format!("{base}: {e}")))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let reply: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let msg = reply
            .get("error")
            .and_then(|e| e.get("message"))
            .cloned()
            .unwrap_or(reply);
        return Err(Error::Remote(format!("{status}: {msg}")));
    }
    Ok(reply)
}
