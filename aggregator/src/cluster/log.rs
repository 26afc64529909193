//! The entry log: each feed's verified ops as a chain of messages on a JetStream stream.
//!
//! # Format (`apiary-entry-log/1`)
//!
//! Subject `{prefix}.{feed}` (the feed's z-base-32 key, one subject per feed). Each message is
//! one link of the feed's chain: the ops a follower made of blocks `from..to` of the bee at
//! `fork`, as JSON:
//!
//! ```json
//! {"v":1,"feed":"<z32>","fork":0,"from":1,"to":4097,"purge":false,
//!  "ops":[{"seq":7,"key":"<base64>","op":"put","seen":1764612000000000,"value":{"title":"Alien"}},
//!         {"seq":9,"key":"<base64>","op":"del"}]}
//! ```
//!
//! - `op`: `put` (replace the entry of the key), `insert` (the key is not indexed: the feed's
//!   first pass has not put it before), `del`.
//! - `seen`: when the follower saw it (µs), part of the entry's sort time, so that every
//!   indexer sorts alike.
//! - `value`: the author's JSON as written.
//! - `purge`: the author truncated (a new `fork`): drop the feed's entries first.
//! - `to` is the bee version the feed is at once the message is applied.
//! - `end`: the feed was unfollowed (a tombstone, `ops` empty): drop its entries. A later
//!   follow starts a new chain after it, from version 0.
//!
//! - `chain`: 0 for a feed's first chain, else the stream sequence of the tombstone it
//!   follows.
//!
//! Headers: `Nats-Msg-Id` = `feed:fork:seq` (the last block the message covers; `@chain`
//! appended after a re-follow, so that JetStream's deduplication does not take a new
//! chain's link for the old chain's within its window), and
//! `Nats-Expected-Last-Subject-Sequence` = the stream sequence of the previous link (0 for
//! the first). The second is what makes the chain exact: a message is stored only if it
//! follows the link its writer read, so two followers that both believe they hold a feed
//! (a lease moving while the old holder still runs) cannot interleave, and a link lost in
//! a leader election cannot be followed by a later one. A follower that resumes a feed reads
//! the last link and goes on from its `to`.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::index::{Checkpoint, IndexOp};

/// Largest message we publish (NATS refuses over its `max_payload`, 1 MiB by default).
const MAX_MESSAGE: usize = 512 * 1024;

/// One link of a feed's chain.
#[derive(Debug, Serialize, Deserialize)]
pub struct Link {
    /// Format version (1).
    pub v: u8,
    /// Feed z32.
    pub feed: String,
    /// The bee's fork.
    pub fork: u64,
    /// The feed's version before this link.
    pub from: u64,
    /// The feed's version after it.
    pub to: u64,
    /// Drop the feed's entries first (a new fork).
    #[serde(default)]
    pub purge: bool,
    /// The feed was unfollowed: drop its entries; a new chain may follow.
    #[serde(default)]
    pub end: bool,
    /// Which chain of the feed: 0 for the first, else the stream sequence of the tombstone
    /// it follows (message ids must differ from an earlier chain's).
    #[serde(default)]
    pub chain: u64,
    /// The ops, in log order, one per key.
    pub ops: Vec<LinkOp>,
}

/// One op of a link.
#[derive(Debug, Serialize, Deserialize)]
pub struct LinkOp {
    /// Block that wrote it.
    pub seq: u64,
    /// Entry key, base64.
    pub key: String,
    /// What to do.
    pub op: OpKind,
    /// When the follower saw it (µs).
    #[serde(default)]
    pub seen: i64,
    /// The value (puts).
    #[serde(default)]
    pub value: Option<Box<RawValue>>,
}

/// An op's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Replace.
    Put,
    /// Add (not indexed before).
    Insert,
    /// Remove.
    Del,
}

/// Where a feed's chain ends: its checkpoint and the stream sequence of its last link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tip {
    /// The version and fork the last link brought the feed to.
    pub cp: Checkpoint,
    /// Stream sequence of the last link (0: none).
    pub seq: u64,
    /// The chain the next link belongs to (see [`Link::chain`]).
    pub chain: u64,
}

/// The subject of a feed's chain.
pub fn subject(prefix: &str, feed: &str) -> String {
    format!("{prefix}.{feed}")
}

/// Reads the end of a feed's chain.
pub async fn tip(stream: &jetstream::stream::Stream, prefix: &str, feed: &str) -> Result<Tip> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
    match stream
        .get_last_raw_message_by_subject(&subject(prefix, feed))
        .await
    {
        Ok(m) => {
            let link: LinkHead = serde_json::from_slice(&m.payload)
                .map_err(|e| Error::Unavailable(format!("entry log of {feed}: bad link: {e}")))?;
            // After a tombstone a new chain starts from nothing.
            let (cp, chain) = match link.end {
                true => (Checkpoint::default(), m.sequence),
                false => (
                    Checkpoint {
                        version: link.to,
                        fork: link.fork,
                    },
                    link.chain,
                ),
            };
            Ok(Tip {
                cp,
                seq: m.sequence,
                chain,
            })
        }
        Err(e) if e.kind() == K::NoMessageFound => Ok(Tip::default()),
        Err(e) => Err(Error::Unavailable(format!("entry log of {feed}: {e}"))),
    }
}

/// The fields of a link needed to resume its chain (the ops are not decoded).
#[derive(Deserialize)]
struct LinkHead {
    fork: u64,
    to: u64,
    #[serde(default)]
    end: bool,
    #[serde(default)]
    chain: u64,
}

/// Publishes the ops of one ingest step (`Purge`?, entry ops, then the `Checkpoint` that ends
/// the batch) as links after `tip`, in messages of at most [`MAX_MESSAGE`] bytes; moves
/// `tip` along. Fails if a link is refused (another writer moved the chain: the caller reads
/// the tip again) or not acknowledged in time. Counts the links stored in `stored`.
pub async fn publish(
    js: &jetstream::Context,
    prefix: &str,
    feed: &str,
    tip: &mut Tip,
    ops: Vec<IndexOp>,
    stored: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    let mut purge = false;
    let mut end = None;
    let mut entries = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            IndexOp::Purge { .. } => purge = true,
            IndexOp::Checkpoint { version, fork, .. } => end = Some((version, fork)),
            IndexOp::Upsert(d) => entries.push(put_op(OpKind::Put, *d)?),
            IndexOp::Insert(d) => entries.push(put_op(OpKind::Insert, *d)?),
            IndexOp::Delete { key, .. } => entries.push(del_op(0, &key)),
        }
    }
    let Some((to, fork)) = end else {
        return Err(Error::Unavailable(
            "an ingest step without its checkpoint".into(),
        ));
    };
    let from = if purge { 0 } else { tip.cp.version };
    // Split into messages; every piece but the last ends at its last op's block.
    let mut pieces: Vec<Vec<LinkOp>> = vec![Vec::new()];
    let mut size = 0;
    for op in entries {
        let len = op.key.len() + op.value.as_ref().map_or(0, |v| v.get().len()) + 64;
        if size + len > MAX_MESSAGE && pieces.last().is_some_and(|p| !p.is_empty()) {
            pieces.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(p) = pieces.last_mut() {
            p.push(op);
        }
    }
    let count = pieces.len();
    let mut at = from;
    for (i, ops) in pieces.into_iter().enumerate() {
        let last = i + 1 == count;
        let piece_to = match ops.iter().map(|o| o.seq).max() {
            _ if last => to,
            Some(s) => (s + 1).max(at),
            None => at,
        };
        let link = Link {
            v: 1,
            feed: feed.to_owned(),
            fork,
            from: at,
            to: piece_to,
            purge: purge && i == 0,
            end: false,
            chain: tip.chain,
            ops,
        };
        let body = serde_json::to_vec(&link)
            .map_err(|e| Error::Unavailable(format!("entry log: encoding a link: {e}")))?;
        let msg = PublishMessage::build()
            .payload(body.into())
            .message_id(match tip.chain {
                0 => format!("{feed}:{fork}:{}", piece_to.saturating_sub(1)),
                c => format!("{feed}:{fork}:{}@{c}", piece_to.saturating_sub(1)),
            })
            .expected_last_subject_sequence(tip.seq);
        let ack = tokio::time::timeout(Duration::from_secs(10), async {
            js.send_publish(subject(prefix, feed), msg)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| Error::Unavailable(format!("entry log of {feed}: no ack in 10 s")))?
        .map_err(|e| Error::Unavailable(format!("entry log of {feed}: {e}")))?;
        if ack.duplicate && ack.sequence <= tip.seq {
            // The id of a link before our tip: not this link (ids are per chain, so this is
            // not expected); read the tip again rather than believe it stored.
            return Err(Error::Unavailable(format!(
                "entry log of {feed}: link {} taken for an older one",
                piece_to
            )));
        }
        *tip = Tip {
            cp: Checkpoint {
                version: piece_to,
                fork,
            },
            seq: ack.sequence,
            chain: tip.chain,
        };
        stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        at = piece_to;
    }
    Ok(())
}

/// Ends a feed's chain with a tombstone (whatever its tip: an unfollow wins over a
/// follower still running, whose next link is then refused).
pub async fn end(js: &jetstream::Context, prefix: &str, feed: &str) -> Result<()> {
    let link = Link {
        v: 1,
        feed: feed.to_owned(),
        fork: 0,
        from: 0,
        to: 0,
        purge: true,
        end: true,
        chain: 0,
        ops: Vec::new(),
    };
    let body = serde_json::to_vec(&link)
        .map_err(|e| Error::Unavailable(format!("entry log: encoding a link: {e}")))?;
    let failed = |e: String| Error::Unavailable(format!("entry log of {feed}: {e}"));
    tokio::time::timeout(Duration::from_secs(10), async {
        js.send_publish(
            subject(prefix, feed),
            PublishMessage::build().payload(body.into()),
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| failed("no ack in 10 s".into()))?
    .map_err(failed)?;
    Ok(())
}

fn put_op(op: OpKind, d: crate::index::EntryDoc) -> Result<LinkOp> {
    let value = RawValue::from_string(d.value)
        .map_err(|e| Error::Unavailable(format!("entry log: a value is not JSON: {e}")))?;
    Ok(LinkOp {
        seq: d.seq,
        key: base64::engine::general_purpose::STANDARD.encode(&d.key),
        op,
        seen: d.seen_at,
        value: Some(value),
    })
}

fn del_op(seq: u64, key: &[u8]) -> LinkOp {
    LinkOp {
        seq,
        key: base64::engine::general_purpose::STANDARD.encode(key),
        op: OpKind::Del,
        seen: 0,
        value: None,
    }
}

/// Decodes a link (untrusted: anything in the stream, whoever wrote it).
pub fn decode(payload: &[u8]) -> Result<Link> {
    let link: Link = serde_json::from_slice(payload)
        .map_err(|e| Error::Corrupt(format!("entry log: not a link: {e}")))?;
    if link.v != 1 || link.to < link.from {
        return Err(Error::Corrupt(format!(
            "entry log: link v{} from {} to {} of {}",
            link.v, link.from, link.to, link.feed
        )));
    }
    Ok(link)
}

/// An op's key bytes.
pub fn key_bytes(op: &LinkOp) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(&op.key)
        .map_err(|e| Error::Corrupt(format!("entry log: bad key: {e}")))
}
