//! `GET /v1/proofs/{feed}/{key}`: a proof bundle (`apiary-bee-proof/1`, see
//! [`apiary_core::bundle`]) that the feed's author signed a log in which the bee maps the key
//! to the value the aggregator shows, or holds no such key. Nothing in it needs trusting us.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{parse_key, Http};
use crate::api::EntryPath;
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
            (the value, or absence). Check it with `apiary-aggregator verify`.",
            body = Object),
        (status = 400, description = "Not a key, or a version the signed log does not reach", body = ErrorBody),
        (status = 404, description = "The feed is not followed", body = ErrorBody),
        (status = 503, description = "A block the proof needs is not held and no peer has it", body = ErrorBody),
        (status = 504, description = "No peer sent a block the proof needs in time", body = ErrorBody),
    ))]
pub(super) async fn proof(
    State(s): State<Http>,
    path: std::result::Result<Path<EntryPath>, PathRejection>,
    query: std::result::Result<Query<ProofQuery>, QueryRejection>,
) -> Result<Json<apiary_core::bundle::Bundle>> {
    let Path(p) = path?;
    let Query(q) = query?;
    let feed = parse_key(&p.feed)?;
    let replica = s
        .agg
        .replica(&feed)
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
    apiary_core::bundle::build(&replica, &p.key, version)
        .await
        .map(Json)
        .map_err(|e| match e {
            apiary_core::Error::InvalidArgument { reason } => Error::BadRequest(reason),
            // The author's tree, not the request: nothing to prove until it changes.
            apiary_core::Error::Decode { .. } | apiary_core::Error::Verification { .. } => {
                Error::Unavailable(format!("the feed's bee cannot be proven: {e}"))
            }
            e => Error::Core(e),
        })
}
