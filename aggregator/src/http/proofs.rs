//! `GET /v1/proofs/{feed}/{key}`: a proof bundle (`apiary-bee-proof/1`, see
//! [`apiary_core::bundle`]) that the feed's author signed a log in which the bee maps the key
//! to the value the aggregator shows, or holds no such key. Nothing in it needs trusting us.

use std::time::Duration;

use apiary_core::bundle::{build, build_inclusion, Bundle, Inclusion};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::{parse_key, Http};
use crate::api::EntryPath;
use crate::config::Retention;
use crate::error::{Error, ErrorBody, Result};

/// Query of `GET /v1/proofs/{feed}/{key}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProofQuery {
    /// The bee version to prove the key at (1 to the signed length held). Default: the
    /// version the index holds the feed at.
    #[param(minimum = 1)]
    pub version: Option<u64>,
}

/// A proof bundle for one key of a feed.
#[utoipa::path(get, path = "/v1/proofs/{feed}/{key}", tag = "feeds",
    params(EntryPath, ProofQuery),
    responses(
        (status = 200, description = "An `apiary-bee-proof/1` bundle: the signed tree, the \
            blocks a hyperbee get of the key reads with their Merkle nodes, and the result \
            (the value, or absence). Check it with `apiary-aggregator verify`. Under \
            `retention = \"index-only\"` with no peer of the feed online: an \
            `apiary-inclusion-proof/1` (the entry's block is in the signed log).",
            body = Object),
        (status = 400, description = "Not a key, or version 0", body = ErrorBody),
        (status = 404, description = "The feed is not followed, or its signed log does not reach the version (or is empty)", body = ErrorBody),
        (status = 503, description = "A block the proof needs is not held and no peer has it \
            (cluster mode: a node that does not hold the feed fetches the blocks from the \
            feed's peers; none answered)", body = ErrorBody),
        (status = 504, description = "No peer sent a block the proof needs in time", body = ErrorBody),
    ))]
pub(super) async fn proof(
    State(s): State<Http>,
    path: std::result::Result<Path<EntryPath>, PathRejection>,
    query: std::result::Result<Query<ProofQuery>, QueryRejection>,
) -> Result<Json<Proof>> {
    let Path(p) = path?;
    let Query(q) = query?;
    let feed = parse_key(&p.feed)?;
    let replica = s
        .agg
        .proof_replica(&feed, FETCH_WITHIN)
        .await?
        .ok_or_else(|| Error::NotFound(format!("feed {feed} is not followed")))?;
    let version = match q.version {
        Some(v) => v,
        None => {
            // What the index shows, unless it is of another fork or not there yet.
            let cp = s.agg.index.checkpoint(&feed.to_z32());
            if cp.version > 0 && cp.fork == replica.fork() && cp.version <= replica.length() {
                cp.version
            } else {
                replica.length()
            }
        }
    };
    // Nothing signed yet, or not that far: no such proof (404), not a bad request.
    let length = replica.length();
    if length == 0 || version > length {
        return Err(Error::NotFound(format!(
            "feed {feed} has a signed log of {length} blocks: no version {version} to prove"
        )));
    }
    let index_only = s.agg.cfg.retention == Retention::IndexOnly;
    // Index-only: what is still held first (a recent block, or one fetched for another
    // proof), then the feed's peers, then the inclusion of the entry's block alone.
    let held = match index_only {
        true => build(&replica, &p.key, version, false).await,
        false => build(&replica, &p.key, version, true).await,
    };
    let missing = matches!(held, Err(apiary_core::Error::NotAvailable { .. }));
    if !(index_only && missing) {
        return held.map(|b| Json(Proof::Bundle(b))).map_err(refused);
    }
    if !replica.peers().is_empty() {
        let fetched = tokio::time::timeout(FETCH_WITHIN, build(&replica, &p.key, version, true))
            .await
            .unwrap_or(Err(apiary_core::Error::NotAvailable { seq: 0 }));
        crate::retention::drop_again(&s.agg, &feed, &replica).await;
        if let Ok(b) = fetched {
            return Ok(Json(Proof::Bundle(b)));
        }
    }
    // No peer has the blocks: what the tree alone proves, for the entry the index holds.
    let z = feed.to_z32();
    let entry = s.agg.index.entry(&z, p.key.as_bytes())?;
    let Some(seq) = entry.and_then(|e| e.seq) else {
        return Err(Error::Unavailable(format!(
            "no peer of feed {feed} is online to prove that {:?} is absent",
            p.key
        )));
    };
    let note = "index-only: the blocks a lookup reads are not held and no peer of this feed \
        answered; this proves only that the entry's block, of this size and hash, is in the \
        author's signed log, not its key or value";
    build_inclusion(&replica, &p.key, version, seq, note)
        .map(|i| Json(Proof::Inclusion(i)))
        .map_err(refused)
}

/// How long a proof waits for the feed's peers to send the blocks it lacks.
const FETCH_WITHIN: Duration = Duration::from_secs(5);

/// A full bundle, or (index-only, no peer online) an inclusion proof.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum Proof {
    /// `apiary-bee-proof/1`.
    Bundle(Bundle),
    /// `apiary-inclusion-proof/1`.
    Inclusion(Inclusion),
}

fn refused(e: apiary_core::Error) -> Error {
    match e {
        apiary_core::Error::InvalidArgument { reason } => Error::BadRequest(reason),
        // The author's tree, not the request: nothing to prove until it changes.
        apiary_core::Error::Decode { .. } | apiary_core::Error::Verification { .. } => {
            Error::Unavailable(format!("the feed's bee cannot be proven: {e}"))
        }
        e => Error::Core(e),
    }
}
