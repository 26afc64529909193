//! The reading endpoints: feed status, the merged feed, search, entries (the live stream is
//! in `live`).

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::{feed_status, parse_key, Http};
use crate::api::{
    Entry, EntryPath, FeedList, FeedPath, FeedQuery, FeedStatus, Page as ApiPage, SearchQuery,
};
use crate::error::{Error, ErrorBody, Result};
use crate::index::{Filters, SearchOptions, SearchSort};

/// Followed feeds and their status.
#[utoipa::path(get, path = "/v1/feeds", tag = "feeds",
    responses(
        (status = 200, description = "Every followed feed", body = FeedList, links(
            ("FirstFeed" = (operation_id = "get_feed", description = "The first feed's status",
                parameters(("key" = "$response.body#/feeds/0/key")))))),
        (status = 500, description = "The state store failed", body = ErrorBody),
    ))]
pub(super) async fn list_feeds(State(s): State<Http>) -> Result<Json<FeedList>> {
    let mut feeds = Vec::new();
    for k in s.agg.followed()? {
        if let Some(v) = s.agg.status(&k)? {
            feeds.push(feed_status(v)?);
        }
    }
    Ok(Json(FeedList { feeds }))
}

/// Status of a followed feed.
#[utoipa::path(get, path = "/v1/feeds/{key}", tag = "feeds",
    params(FeedPath),
    responses(
        (status = 200, description = "Its status", body = FeedStatus),
        (status = 400, description = "Not a key", body = ErrorBody),
        (status = 404, description = "Not followed", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody),
    ))]
pub(super) async fn get_feed(
    State(s): State<Http>,
    path: std::result::Result<Path<FeedPath>, PathRejection>,
) -> Result<Json<FeedStatus>> {
    let Path(p) = path?;
    let key = parse_key(&p.key)?;
    let v = s
        .agg
        .status(&key)?
        .ok_or_else(|| Error::NotFound(format!("feed {key} is not followed")))?;
    Ok(Json(feed_status(v)?))
}

/// `since`/`until`: epoch milliseconds (beyond what an i64 of microseconds holds: its end)
/// or RFC 3339.
fn time_param(name: &str, v: &str) -> Result<i64> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let neg = v.starts_with('-');
        let ms = v
            .parse::<i64>()
            .unwrap_or(if neg { i64::MIN } else { i64::MAX });
        return Ok(ms.saturating_mul(1000));
    }
    crate::extract::parse_time(&Value::String(v.to_owned())).ok_or_else(|| {
        Error::BadRequest(format!(
            "{name} must be RFC 3339 or epoch milliseconds, got {v:?}"
        ))
    })
}

/// The filters of `/v1/feed`, `/v1/search` (with a time window) and `/v1/stream` (without).
pub(super) fn filters(
    feed: Option<&str>,
    typ: Option<&String>,
    tag: Option<&String>,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<Filters> {
    Ok(Filters {
        feed: feed.map(|f| parse_key(f).map(|k| k.to_z32())).transpose()?,
        typ: typ.cloned(),
        tag: tag.map(|t| t.trim_start_matches('#').to_lowercase()),
        since: since.map(|v| time_param("since", v)).transpose()?,
        until: until.map(|v| time_param("until", v)).transpose()?,
    })
}

fn page_limit(limit: Option<usize>) -> Result<usize> {
    let limit = limit.unwrap_or(20);
    if limit == 0 || limit > crate::index::MAX_LIMIT {
        return Err(Error::BadRequest(format!(
            "limit must be 1 to {}",
            crate::index::MAX_LIMIT
        )));
    }
    Ok(limit)
}

/// What the read cache keys a request by: its path and query as sent.
fn cache_key(uri: &Uri) -> &str {
    uri.path_and_query().map_or("", |p| p.as_str())
}

fn json_body(body: Bytes) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

/// The page as JSON, kept in the read cache for the next request like this one.
fn cached_page(s: &Http, generation: u64, uri: &Uri, p: crate::index::Page) -> Response {
    let page = ApiPage {
        entries: p.entries,
        cursor: p.cursor,
    };
    match serde_json::to_vec(&page) {
        Ok(v) => {
            let body = Bytes::from(v);
            s.cache.put(generation, cache_key(uri), body.clone());
            json_body(body)
        }
        Err(e) => Error::Internal(format!("page serialisation failed: {e}")).into_response(),
    }
}

/// The merged feed, newest first.
#[utoipa::path(get, path = "/v1/feed", tag = "feeds",
    params(FeedQuery),
    responses(
        (status = 200, description = "A page of entries", body = ApiPage, links(
            ("FirstEntry" = (operation_id = "entry", description = "The first entry of the page",
                parameters(("feed" = "$response.body#/entries/0/feed"),
                    ("key" = "$response.body#/entries/0/key")))),
            ("NextPage" = (operation_id = "merged_feed", description = "The next page",
                parameters(("cursor" = "$response.body#/cursor")))))),
        (status = 400, description = "A parameter the endpoint does not take, or one it cannot \
            read (key, time, cursor, limit)", body = ErrorBody),
        (status = 500, description = "The index failed", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ))]
pub(super) async fn merged_feed(
    State(s): State<Http>,
    uri: Uri,
    q: std::result::Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response> {
    let generation = s.agg.index.generation();
    if let Some(body) = s.cache.get(generation, cache_key(&uri)) {
        return Ok(json_body(body));
    }
    let Query(q) = q?;
    let fl = filters(
        q.feed.as_deref(),
        q.typ.as_ref(),
        q.tag.as_ref(),
        q.since.as_deref(),
        q.until.as_deref(),
    )?;
    let limit = page_limit(q.limit)?;
    let index = s.agg.index.clone();
    let page = s
        .read_blocking(move || index.feed(&fl, q.cursor.as_deref(), limit))
        .await?;
    Ok(cached_page(&s, generation, &uri, page))
}

/// Full-text search (BM25), most relevant first, with the feed's filters.
#[utoipa::path(get, path = "/v1/search", tag = "feeds",
    params(SearchQuery),
    responses(
        (status = 200, description = "A page of entries, each with its `score`", body = ApiPage,
            links(("FirstEntry" = (operation_id = "entry", description = "The best match",
                parameters(("feed" = "$response.body#/entries/0/feed"),
                    ("key" = "$response.body#/entries/0/key")))))),
        (status = 400, description = "No `q`, or a parameter the endpoint does not take, or one \
            it cannot read (key, time, cursor, limit)", body = ErrorBody),
        (status = 500, description = "The index failed", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ))]
pub(super) async fn search(
    State(s): State<Http>,
    uri: Uri,
    q: std::result::Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response> {
    let generation = s.agg.index.generation();
    if let Some(body) = s.cache.get(generation, cache_key(&uri)) {
        return Ok(json_body(body));
    }
    let Query(q) = q?;
    let fl = filters(
        q.feed.as_deref(),
        q.typ.as_ref(),
        q.tag.as_ref(),
        q.since.as_deref(),
        q.until.as_deref(),
    )?;
    let limit = page_limit(q.limit)?;
    let opts = SearchOptions {
        prefix: q.prefix.unwrap_or(false),
        sort: match q.sort.as_deref() {
            None | Some("relevance") => SearchSort::Relevance,
            Some("recent") => SearchSort::Recent,
            Some(_) => return Err(Error::BadRequest("sort is relevance or recent".into())),
        },
        highlight: q.highlight.unwrap_or(false),
        recency: s.agg.cfg.recency(),
    };
    let index = s.agg.index.clone();
    let page = s
        .read_blocking(move || index.search(&q.q, &fl, q.cursor.as_deref(), limit, opts))
        .await?;
    Ok(cached_page(&s, generation, &uri, page))
}

/// One entry, with where it came from.
#[utoipa::path(get, path = "/v1/entries/{feed}/{key}", tag = "feeds",
    params(EntryPath),
    responses(
        (status = 200, description = "The entry", body = Entry),
        (status = 400, description = "Not a key", body = ErrorBody),
        (status = 404, description = "No such entry (or the feed is not followed)", body = ErrorBody),
        (status = 500, description = "The index failed", body = ErrorBody),
    ))]
pub(super) async fn entry(
    State(s): State<Http>,
    path: std::result::Result<Path<EntryPath>, PathRejection>,
) -> Result<Json<Entry>> {
    let Path(p) = path?;
    let feed = parse_key(&p.feed)?;
    s.agg
        .index
        .entry(&feed.to_z32(), p.key.as_bytes())?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("no entry {:?} in feed {feed}", p.key)))
}
