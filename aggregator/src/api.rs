//! The wire types of the HTTP API: query parameters, path parameters, request bodies and
//! responses. Handlers take and return these, and `/v1/openapi.json` is derived from them
//! (utoipa), so the description says what the server reads and writes.
//!
//! Text forms the handlers check themselves (a feed key, a cursor, a time bound, a peer
//! address) are plain strings in the structs, described by the schema-only types of `forms`
//! (`BeeKey`, `FeedCursor`, …) whose patterns are what the server accepts.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

mod forms;
pub use forms::{BeeKey, FeedCursor, PeerAddr, SearchCursor, TimeBound};

/// `/v1/feeds/{key}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FeedPath {
    /// The feed's key.
    #[param(value_type = BeeKey)]
    pub key: String,
}

/// `/v1/entries/{feed}/{key}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EntryPath {
    /// The feed's key.
    #[param(value_type = BeeKey)]
    pub feed: String,
    /// The entry's key in the bee: the rest of the path, so it may contain `/`.
    #[param(min_length = 1)]
    pub key: String,
}

/// Query of `GET /v1/feed`. Unknown parameters are refused (400).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Only entries of this feed.
    #[param(value_type = Option<BeeKey>)]
    pub feed: Option<String>,
    /// Only values whose `type` is this.
    #[serde(rename = "type")]
    pub typ: Option<String>,
    /// Only values with this tag (case-insensitive, a leading `#` ignored).
    pub tag: Option<String>,
    /// Only entries whose sortAt is at or after this.
    #[param(value_type = Option<TimeBound>)]
    pub since: Option<String>,
    /// Only entries whose sortAt is before this.
    #[param(value_type = Option<TimeBound>)]
    pub until: Option<String>,
    /// The `cursor` of the previous page.
    #[param(value_type = Option<FeedCursor>)]
    pub cursor: Option<String>,
    /// Entries per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<usize>,
}

/// Query of `GET /v1/search`. Unknown parameters are refused (400).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The words to look for, all of them (tantivy query syntax: `"a phrase"`, `-word`,
    /// `a OR b`; what it cannot parse is read as plain words). Case, width and diacritics
    /// do not matter; a word of 5–8 letters may have one typo, of 9 or more two (those
    /// matches come after the exact ones); a `*` at the end makes the last word a prefix.
    #[param(min_length = 1, max_length = 1024)]
    pub q: String,
    /// The last word of `q` is a prefix (search as you type): `stal` finds "Stalker".
    pub prefix: Option<bool>,
    /// `relevance` (BM25, the default; fresh entries gain by the server's
    /// `search_recency_boost`) or `recent` (newest first, in the feed's order; hits then have
    /// no `score`). Either way the words as typed come first, then other forms of them
    /// (stems), then matches with a typo.
    #[param(pattern = "^(relevance|recent)$")]
    pub sort: Option<String>,
    /// Each hit gets a `snippet`: its text around the first match, the matched words marked.
    pub highlight: Option<bool>,
    /// Only entries of this feed.
    #[param(value_type = Option<BeeKey>)]
    pub feed: Option<String>,
    /// Only values whose `type` is this.
    #[serde(rename = "type")]
    pub typ: Option<String>,
    /// Only values with this tag (case-insensitive, a leading `#` ignored).
    pub tag: Option<String>,
    /// Only entries whose sortAt is at or after this.
    #[param(value_type = Option<TimeBound>)]
    pub since: Option<String>,
    /// Only entries whose sortAt is before this.
    #[param(value_type = Option<TimeBound>)]
    pub until: Option<String>,
    /// The `cursor` of the previous page.
    #[param(value_type = Option<SearchCursor>)]
    pub cursor: Option<String>,
    /// Entries per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<usize>,
}

/// Query of `GET /v1/stream`: the filters a live entry is matched against. Unknown
/// parameters are refused (400).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only entries of this feed.
    #[param(value_type = Option<BeeKey>)]
    pub feed: Option<String>,
    /// Only values whose `type` is this.
    #[serde(rename = "type")]
    pub typ: Option<String>,
    /// Only values with this tag (case-insensitive, a leading `#` ignored).
    pub tag: Option<String>,
}

/// Body of `POST /v1/feeds`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddFeed {
    /// The bee to follow.
    #[schema(value_type = BeeKey)]
    pub key: String,
    /// Replication addresses known to serve it (besides the DHT and publishers that dial in).
    #[serde(default)]
    #[schema(value_type = Vec<PeerAddr>, max_items = 16)]
    pub peers: Vec<String>,
}

/// Body of `POST /v1/admin/backup`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Where the snapshot goes: an absolute path without `..` (names up to 63 characters, so
    /// at most 255 bytes), new or an empty directory, outside the data directory, that the
    /// aggregator's user may make or write (else 409).
    #[schema(
        pattern = r"^(?![\s\S]*/\.\.(?:/|$))(?:/[^/\x00]{1,63})+/?$",
        max_length = 1000
    )]
    pub dir: String,
}

/// `GET /v1/feeds`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedList {
    /// Every followed feed.
    pub feeds: Vec<FeedStatus>,
}

/// A followed feed and how far it is replicated and indexed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedStatus {
    /// Its key, z-base-32.
    pub key: String,
    /// Its key, hex.
    pub hex: String,
    /// `hyper://KEY`.
    pub url: String,
    /// When it was first followed (RFC 3339).
    #[schema(format = DateTime)]
    pub followed_at: String,
    /// Blocks known locally (verified).
    pub length: u64,
    /// The longest length a peer announced (at least `length`).
    pub remote_length: u64,
    /// The fork (bumped by each truncation).
    pub fork: u64,
    /// Bee version whose entries are searchable.
    pub indexed_version: u64,
    /// Versions not indexed yet: remoteLength - max(indexedVersion, 1), at least 0.
    pub lag: u64,
    /// Known addresses first (via `direct`, connected or not), then every other connected
    /// peer serving the feed.
    pub peers: Vec<FeedPeer>,
    /// Labels (addresses) of the connected peers.
    pub connected_peers: Vec<String>,
    /// Blocks downloaded since the process started.
    pub blocks_downloaded: u64,
    /// Bytes downloaded since the process started.
    pub bytes_downloaded: u64,
    /// Values not indexed.
    pub skipped: Skipped,
    /// Ingest errors since the process started.
    pub errors: u64,
    /// The last ingest error.
    pub last_error: Option<String>,
    /// Cluster mode only: which node follows the feed, and this replica's place in the
    /// entry log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<FeedCluster>,
}

/// A feed in cluster mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedCluster {
    /// The node answering.
    pub node: String,
    /// The virtual shard the feed hashes to.
    pub shard: u32,
    /// The follower holding that shard's lease, as last seen (none: not leased yet).
    pub holder: Option<String>,
    /// The entry log sequence committed with this node's index (the indexed version above
    /// is this replica's).
    pub stream_sequence: u64,
}

/// Values of a feed that were not indexed, by reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// Over `max_value_bytes`.
    pub too_large: u64,
    /// Not JSON.
    pub not_json: u64,
}

/// A peer of a feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedPeer {
    /// `host:port`, or the label of the session.
    pub address: String,
    // Inline, and described by `Via`'s own doc: utoipa wraps an inlined enum that has a doc
    // of its own here in a `oneOf`.
    #[schema(inline)]
    pub via: Via,
    /// Whether a replication session with it is open.
    pub connected: bool,
    /// Hex Noise public key of the peer (connected peers other than known addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// How a peer was found: a known address we dial, a peer that dialed us, the DHT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// A known address (config, `peers` of a follow).
    Direct,
    /// A publisher that connected to our replication port.
    DialIn,
    /// Found on the hyperswarm DHT.
    Dht,
}

/// One entry of a bee, with where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The feed's key, z-base-32.
    pub feed: String,
    /// The entry's key in the bee.
    pub key: String,
    /// The log block that holds it.
    pub seq: Option<u64>,
    /// The bee version it was read at.
    pub version: Option<u64>,
    /// When the aggregator first saw it (RFC 3339).
    #[schema(format = DateTime)]
    pub seen_at: Option<String>,
    /// The earlier of its `createdAt` and `seenAt` (RFC 3339): the feed's order.
    #[schema(format = DateTime)]
    pub sort_at: Option<String>,
    /// The value's `type`, if any.
    #[serde(rename = "type")]
    pub typ: Option<String>,
    /// The value's tags, lowercased.
    pub tags: Vec<String>,
    /// The value as the author wrote it (null when it is not JSON).
    // Raw: the author's JSON text is written out as it is stored, not parsed into a tree and
    // escaped again (a fifth of a feed page's CPU).
    #[schema(value_type = Value)]
    pub value: Box<RawValue>,
    /// `hyper://FEED`.
    pub source: String,
    /// The path of this entry's proof bundle (`/v1/proofs/{feed}/{key}`): what lets anyone
    /// check the value against the author's key without trusting this server.
    pub proof: String,
    /// Relevance (BM25, with the recency boost), in search results only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// In search results asked with `highlight=true`: the entry's text around its first
    /// match, as HTML (escaped, the matched words in `<mark>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
}

/// A page of entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page {
    /// Newest first (`/v1/feed`), or most relevant first (`/v1/search`).
    pub entries: Vec<Entry>,
    /// Pass it back as `cursor` for the next page; null on the last page.
    pub cursor: Option<String>,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always true: the process answers.
    pub ok: bool,
    /// `degraded` while ingest is paused (reads are served either way).
    pub status: HealthStatus,
    /// Why ingest is paused (a failed index commit, low disk, a failed block store).
    pub degraded: Vec<String>,
    /// Feeds followed.
    pub feeds: usize,
    /// The DHT: `off`, `starting`, `running`, `restarting`, `unavailable: <why>` or `stopped`.
    #[schema(pattern = "^(off|starting|running|restarting|stopped|unavailable: [\\s\\S]*)$")]
    pub dht: String,
}

/// Whether ingest runs.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Ingest runs.
    Ok,
    /// Ingest is paused (see `degraded`).
    Degraded,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Healthy, and every feed indexed up to what is known of it.
    pub ready: bool,
    /// Why not.
    pub why: Vec<String>,
}

/// What a backup copied, as also written to `DIR/backup.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupManifest {
    /// Format of this manifest.
    pub format: u32,
    /// When the backup finished (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Version of the aggregator that took it.
    pub apiary_version: String,
    /// Where it is.
    pub dir: String,
    /// The data directory it was taken from.
    pub from: String,
    /// Entries in the copied index commit.
    pub entries: u64,
    /// Per feed: the checkpoint of the copied commit and the blocks copied.
    pub feeds: Vec<BackupFeed>,
    /// The copied index commit.
    pub index: BackupFiles,
    /// The copied block store.
    pub store: BackupStore,
    /// Keys copied from the state trees.
    pub state_keys: u64,
    /// How long it took.
    pub took_ms: u64,
}

/// A feed in a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupFeed {
    /// The feed's key, z-base-32.
    pub feed: String,
    /// Bee version the copied index covers.
    pub indexed_version: u64,
    /// Fork of that checkpoint.
    pub fork: u64,
    /// Length of the copied head (blocks past `contiguous` may be missing: a head can be
    /// ahead of the blocks fetched so far).
    pub length: u64,
    /// Blocks held from block 0 without a gap: a restore indexes up to here without a peer.
    pub contiguous: u64,
}

/// Files of the copied index commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupFiles {
    /// How many.
    pub files: u64,
    /// Their size.
    pub bytes: u64,
}

/// The copied block store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupStore {
    /// Cores.
    pub cores: u64,
    /// Blocks.
    pub blocks: u64,
    /// Their size.
    pub bytes: u64,
}

/// The path of the proof bundle of `key` in `feed`: the key percent-encoded as a path (its
/// `/` kept, as the route takes the rest of the path).
pub fn proof_link(feed: &str, key: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(12 + feed.len() + key.len());
    out.push_str("/v1/proofs/");
    out.push_str(feed);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
