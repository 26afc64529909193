//! The OpenAPI 3.1 document of the HTTP API, served at /v1/openapi.json.

use serde_json::{json, Value};

fn filters() -> Value {
    json!([
        {"name": "feed", "in": "query", "schema": {"type": "string"}, "description": "Only this feed (z-base-32, hex or hyper:// key)."},
        {"name": "type", "in": "query", "schema": {"type": "string"}, "description": "Only values whose `type` is this."},
        {"name": "tag", "in": "query", "schema": {"type": "string"}, "description": "Only values with this tag."},
        {"name": "since", "in": "query", "schema": {"type": "string"}, "description": "sortAt at or after (RFC 3339 or epoch ms)."},
        {"name": "until", "in": "query", "schema": {"type": "string"}, "description": "sortAt before (RFC 3339 or epoch ms)."},
        {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "Opaque cursor from the previous page."},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}
    ])
}

/// The document.
pub fn document() -> Value {
    let err = json!({"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let page = json!({"description": "A page of entries", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}}});
    let mut search_params = filters();
    if let Some(a) = search_params.as_array_mut() {
        a.insert(0, json!({"name": "q", "in": "query", "required": true, "schema": {"type": "string"}, "description": "Search words (all must match); tantivy query syntax."}));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Apiary aggregator", "version": env!("CARGO_PKG_VERSION"),
                 "description": "A merged, searchable feed of followed Hyperbees. Errors are {\"error\": {\"code\", \"message\"}}."},
        "paths": {
            "/v1/feeds": {
                "get": {"summary": "Followed feeds and their status", "responses": {"200": {"description": "Feeds", "content": {"application/json": {"schema": {"type": "object", "properties": {"feeds": {"type": "array", "items": {"$ref": "#/components/schemas/FeedStatus"}}}}}}}}},
                "post": {"summary": "Follow a feed (admin token, or open registration)",
                         "security": [{"bearer": []}, {}],
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}, "peers": {"type": "array", "items": {"type": "string", "description": "host:port"}}}}}}},
                         "responses": {"201": {"description": "Now followed"}, "200": {"description": "Already followed (peers added)"}, "400": err, "401": err, "429": err}}
            },
            "/v1/feeds/{key}": {
                "parameters": [{"name": "key", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {"summary": "Status of a feed", "responses": {"200": {"description": "Status", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FeedStatus"}}}}, "400": err, "404": err}},
                "delete": {"summary": "Unfollow and purge a feed (admin)", "security": [{"bearer": []}], "responses": {"204": {"description": "Purged"}, "400": err, "401": err, "404": err}}
            },
            "/v1/feed": {"get": {"summary": "The merged feed, newest first", "parameters": filters(), "responses": {"200": page, "400": err, "429": err}}},
            "/v1/search": {"get": {"summary": "Full-text search (BM25)", "parameters": search_params, "responses": {"200": page, "400": err, "429": err}}},
            "/v1/entries/{feed}/{key}": {"get": {"summary": "One entry", "parameters": [
                {"name": "feed", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "key", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "Entry", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Entry"}}}}, "400": err, "404": err}}},
            "/v1/stream": {"get": {"summary": "Server-sent events `entry` as entries become searchable (filters: feed, type, tag)", "parameters": filters(), "responses": {"200": {"description": "text/event-stream"}}}},
            "/healthz": {"get": {"summary": "Liveness, with the number of feeds and the DHT state", "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4): process-wide, per feed (label `feed`) and `apiary_degraded{source}`", "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
            "/v1/admin/backup": {"post": {"summary": "Snapshot the data directory into `dir` (admin; what `apiary-aggregator backup DIR` calls). Answers when the backup is complete; index commits wait meanwhile. Restore: start an aggregator on `dir`.",
                "security": [{"bearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["dir"], "properties": {"dir": {"type": "string", "description": "Absolute path, new or an empty directory, outside the data directory."}}}}}},
                "responses": {"201": {"description": "Done: the manifest also written to DIR/backup.json (entries, each feed's indexedVersion, fork and copied length, files and bytes)", "content": {"application/json": {"schema": {"type": "object"}}}},
                              "400": err, "401": err, "409": err, "500": err}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Entry": {"type": "object", "properties": {
                    "feed": {"type": "string"}, "key": {"type": "string"}, "seq": {"type": "integer"}, "version": {"type": "integer"},
                    "seenAt": {"type": "string", "format": "date-time"}, "sortAt": {"type": "string", "format": "date-time"},
                    "type": {"type": ["string", "null"]}, "tags": {"type": "array", "items": {"type": "string"}}, "value": {}, "source": {"type": "string"}, "score": {"type": "number"}}},
                "Page": {"type": "object", "properties": {"entries": {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}}, "cursor": {"type": ["string", "null"]}}},
                "FeedStatus": {"type": "object", "properties": {
                    "key": {"type": "string", "description": "z-base-32"}, "hex": {"type": "string"}, "url": {"type": "string"}, "followedAt": {"type": "string"},
                    "length": {"type": "integer", "description": "Blocks known locally (verified)."},
                    "remoteLength": {"type": "integer", "description": "The longest length a peer announced (at least `length`)."},
                    "fork": {"type": "integer"},
                    "indexedVersion": {"type": "integer", "description": "Bee version whose entries are searchable."},
                    "lag": {"type": "integer", "description": "Versions not indexed yet: remoteLength - max(indexedVersion, 1), at least 0."},
                    "peers": {"type": "array", "description": "Known addresses first (via `direct`, connected or not), then every other connected peer serving the feed.",
                              "items": {"$ref": "#/components/schemas/FeedPeer"}},
                    "connectedPeers": {"type": "array", "items": {"type": "string"}, "description": "Labels (addresses) of the connected peers."},
                    "blocksDownloaded": {"type": "integer"}, "bytesDownloaded": {"type": "integer"},
                    "skipped": {"type": "object", "description": "Values not indexed.", "properties": {"tooLarge": {"type": "integer"}, "notJson": {"type": "integer"}}},
                    "errors": {"type": "integer"}, "lastError": {"type": ["string", "null"]}}},
                "FeedPeer": {"type": "object", "required": ["address", "via", "connected"], "properties": {
                    "address": {"type": "string", "description": "host:port, or the label of the session"},
                    "via": {"type": "string", "enum": ["direct", "dial-in", "dht"], "description": "How it was found: a known address we dial, a peer that dialed us, the DHT."},
                    "connected": {"type": "boolean"},
                    "publicKey": {"type": "string", "description": "Hex Noise public key of the peer (connected peers other than known addresses)."}}},
                "Health": {"type": "object", "required": ["ok", "feeds", "dht"], "properties": {
                    "ok": {"type": "boolean"}, "feeds": {"type": "integer", "description": "Feeds followed."},
                    "dht": {"type": "string", "description": "`off`, `starting`, `running`, `restarting`, `unavailable: <why>` or `stopped`.",
                            "anyOf": [{"enum": ["off", "starting", "running", "restarting", "stopped"]}, {"pattern": "^unavailable: "}]}}}
            }
        }
    })
}
