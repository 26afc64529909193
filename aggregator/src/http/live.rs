//! `/v1/stream`: the live stream as server-sent events, written for many subscribers.
//!
//! Each event's bytes (`event: entry`, its id, its JSON) are made once when it is published
//! ([`LiveEvent::sse`]); a subscriber only filters and copies them. A subscriber that wakes
//! with several events waiting writes them as one chunk, so when the server falls behind
//! (10,000 subscribers and an entry every 10 ms is a million events a second) the number of
//! writes stays bounded by how often each subscriber is polled, not by the event rate: the
//! batches grow instead of the queue. Keep-alive comments come from a per-subscriber
//! interval that is not reset per event (resetting a timer per event and subscriber was a
//! large share of the cost).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::Response;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::Stream;

use super::read::filters;
use super::Http;
use crate::api::StreamQuery;
use crate::error::{ErrorBody, Result};
use crate::index::events::{Events, LiveEvent, Subscription};
use crate::index::Filters;

/// How long a quiet stream waits before a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// At most this many bytes of events go in one chunk (the rest follow in the next).
const MAX_CHUNK: usize = 256 * 1024;

/// Server-sent events as entries are verified and applied (before the commit that makes them
/// searchable).
///
/// Events: `entry` (data: an Entry as JSON; id: pass the last one back as `Last-Event-ID` to
/// resume without a gap), `reset` (data `{}`, id: the newest) when the events after the
/// client's `Last-Event-ID` are no longer kept (`/v1/feed` has them), and `lagged` (data `{}`)
/// when this client fell behind the buffer: the stream then ends, and a reconnect with its
/// last id resumes from what is still kept.
#[utoipa::path(get, path = "/v1/stream", tag = "feeds",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event \
            received: the stream starts after it")),
    responses(
        (status = 200, description = "An endless text/event-stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "A parameter the endpoint does not take, or a bad key", body = ErrorBody),
    ))]
pub(super) async fn stream(
    State(s): State<Http>,
    headers: axum::http::HeaderMap,
    q: std::result::Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(q) = q?;
    let fl = filters(
        q.feed.as_deref(),
        q.typ.as_ref(),
        q.tag.as_ref(),
        None,
        None,
    )?;
    let log = s.agg.index.events().clone();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let sub = log.subscribe(last);
    let mut resp = Response::new(Body::from_stream(Live::new(sub, fl, log)));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx would otherwise hold events back.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// One subscriber's body: what was replayed, then the live events in batches.
struct Live {
    first: Option<Bytes>,
    rx: BroadcastStream<Arc<LiveEvent>>,
    fl: Filters,
    keep_alive: Interval,
    /// Something was written since the last keep-alive tick.
    wrote: bool,
    /// The stream ended (the client lagged behind the buffer).
    done: bool,
    /// Told when the client leaves, to keep events for its return.
    log: Arc<Events>,
}

impl Live {
    /// The body of a subscription: the `reset` or replayed events first (or a comment, as SSE
    /// clients expect the head at once), then the live ones.
    fn new(sub: Subscription, fl: Filters, log: Arc<Events>) -> Self {
        let mut first = Vec::new();
        if sub.reset {
            first.extend_from_slice(b"event: reset\n");
            if let Some(id) = &sub.newest {
                first.extend_from_slice(format!("id: {id}\n").as_bytes());
            }
            first.extend_from_slice(b"data: {}\n\n");
        }
        for e in sub.replay.iter().filter(|e| fl.matches(&e.entry)) {
            first.extend_from_slice(&e.sse);
        }
        if first.is_empty() {
            first.extend_from_slice(b":\n\n");
        }
        let start = tokio::time::Instant::now() + KEEP_ALIVE;
        let mut keep_alive = tokio::time::interval_at(start, KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Live {
            first: Some(Bytes::from(first)),
            rx: BroadcastStream::new(sub.rx),
            fl,
            keep_alive,
            wrote: false,
            done: false,
            log,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.log.left();
    }
}

impl Stream for Live {
    type Item = std::result::Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            this.wrote = true;
            return Poll::Ready(Some(Ok(first)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        // Every event already waiting goes in this chunk; a single one is sent without a copy.
        let mut parts: Vec<Bytes> = Vec::new();
        let mut size = 0;
        while size < MAX_CHUNK {
            match Pin::new(&mut this.rx).poll_next(cx) {
                Poll::Ready(Some(Ok(e))) => {
                    if this.fl.matches(&e.entry) {
                        size += e.sse.len();
                        parts.push(e.sse.clone());
                    }
                }
                Poll::Ready(Some(Err(_lagged))) => {
                    // A subscriber that fell behind the buffer is told so (it can re-read
                    // /v1/feed or resume with its last id) and dropped: nothing is buffered
                    // for it.
                    this.done = true;
                    parts.push(Bytes::from_static(b"event: lagged\ndata: {}\n\n"));
                    break;
                }
                Poll::Ready(None) => {
                    this.done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        let chunk = match parts.len() {
            0 if this.done => return Poll::Ready(None),
            0 => {
                if this.keep_alive.poll_tick(cx).is_ready() {
                    let quiet = !std::mem::take(&mut this.wrote);
                    if quiet {
                        return Poll::Ready(Some(Ok(Bytes::from_static(b":\n\n"))));
                    }
                    // Registers the waker for the next tick.
                    let _ = this.keep_alive.poll_tick(cx);
                }
                return Poll::Pending;
            }
            1 => parts.swap_remove(0),
            _ => Bytes::from(parts.concat()),
        };
        this.wrote = true;
        Poll::Ready(Some(Ok(chunk)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::future::poll_fn;

    use super::*;
    use crate::api::Entry;
    use crate::index::events::RING;

    fn entry(key: &str, typ: &str) -> Entry {
        Entry {
            typ: Some(typ.into()),
            ..crate::index::events::tests::entry(key)
        }
    }

    fn only(typ: &str) -> Filters {
        Filters {
            typ: Some(typ.into()),
            ..Filters::default()
        }
    }

    async fn next(live: &mut Live) -> Option<String> {
        poll_fn(|cx| Pin::new(&mut *live).poll_next(cx))
            .await
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
    }

    fn pending(live: &mut Live) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        Pin::new(live).poll_next(&mut cx).is_pending()
    }

    #[tokio::test]
    async fn waiting_events_go_out_as_one_chunk_filtered() {
        let log = Arc::new(Events::default());
        let mut live = Live::new(log.subscribe(None), only("post"), log.clone());
        assert_eq!(next(&mut live).await.unwrap(), ":\n\n");
        assert!(pending(&mut live), "nothing published yet");
        log.publish(entry("a", "post"));
        log.publish(entry("b", "like"));
        log.publish(entry("c", "post"));
        let chunk = next(&mut live).await.unwrap();
        let id = |n| log.id(n);
        assert_eq!(
            chunk.matches("event: entry\n").count(),
            2,
            "a and c in one chunk: {chunk}"
        );
        assert!(chunk.contains(&format!("id: {}\n", id(0))), "{chunk}");
        assert!(chunk.contains(&format!("id: {}\n", id(2))), "{chunk}");
        assert!(!chunk.contains("\"b\""), "b is filtered out: {chunk}");
        assert!(pending(&mut live));
        // A resume after a's id replays c only (b does not match).
        let mut again = Live::new(log.subscribe(Some(&id(0))), only("post"), log.clone());
        let replay = next(&mut again).await.unwrap();
        assert_eq!(replay.matches("event: entry\n").count(), 1, "{replay}");
        assert!(replay.contains(&format!("id: {}\n", id(2))), "{replay}");
    }

    #[tokio::test]
    async fn a_subscriber_behind_the_buffer_is_told_and_ended() {
        let log = Arc::new(Events::default());
        let mut live = Live::new(log.subscribe(None), Filters::default(), log.clone());
        assert_eq!(next(&mut live).await.unwrap(), ":\n\n");
        for i in 0..RING + 2 {
            log.publish(entry(&i.to_string(), "post"));
        }
        let chunk = next(&mut live).await.unwrap();
        assert_eq!(chunk, "event: lagged\ndata: {}\n\n");
        assert_eq!(next(&mut live).await, None);
        // An id no longer kept: reset with the newest id.
        let mut late = Live::new(
            log.subscribe(Some(&log.id(0))),
            Filters::default(),
            log.clone(),
        );
        let first = next(&mut late).await.unwrap();
        assert_eq!(
            first,
            format!(
                "event: reset\nid: {}\ndata: {{}}\n\n",
                log.id(RING as u64 + 1)
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_keep_alive_comments() {
        let log = Arc::new(Events::default());
        let mut live = Live::new(log.subscribe(None), Filters::default(), log.clone());
        assert_eq!(next(&mut live).await.unwrap(), ":\n\n");
        // Time is paused: the runtime jumps to the tick.
        assert_eq!(next(&mut live).await.unwrap(), ":\n\n");
        log.publish(entry("a", "post"));
        assert!(next(&mut live).await.unwrap().starts_with("event: entry\n"));
    }
}
