//! One DHT connection on the Rust side: a [`FramedSession`] whose messages travel through
//! the bridge, with flow control in both directions (see `js/bridge.js`):
//!
//! - in: the bridge sends at most [`WINDOW`] bytes we have not acknowledged, and we
//!   acknowledge only what replication has taken from the session, so a fast remote is
//!   slowed by its transport instead of filling our memory;
//! - out: we keep at most [`WINDOW`] bytes in flight to the bridge, which acknowledges what
//!   the connection accepted (after `drain` when its buffer was full).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use apiary_core::wire::{FramedSession, Incoming, Origin, SessionInfo};
use apiary_core::DiscoveryKey;
use tokio::sync::{mpsc, Notify};
use tracing::Instrument;

use crate::frame::{encode_data, MAX_MESSAGE};

/// Unacknowledged bytes allowed each way per connection (the bridge uses the same).
pub const WINDOW: usize = 1 << 20;
/// We acknowledge consumed bytes in steps of this much.
const ACK_EVERY: usize = 64 * 1024;

/// A connection hyperswarm made, handed over as a replication session.
#[derive(Debug)]
pub struct DhtSession {
    /// The session: replication runs on it as on a TCP one.
    pub session: FramedSession,
    /// Whether we dialed (found the remote by a lookup) rather than were dialed.
    pub client: bool,
    /// The topics (discovery keys) under which we found the remote (client side).
    pub topics: Vec<DiscoveryKey>,
    /// Further topics the same remote is found under while the connection lasts.
    pub more_topics: mpsc::UnboundedReceiver<DiscoveryKey>,
}

/// Bytes in flight from us to the bridge for one connection.
#[derive(Debug, Default)]
pub(crate) struct OutCredit {
    in_flight: AtomicUsize,
    acked: Notify,
}

impl OutCredit {
    pub(crate) fn ack(&self, bytes: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(bytes))
            });
        self.acked.notify_waiters();
    }

    async fn wait_for_room(&self) {
        loop {
            let notified = self.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) < WINDOW {
                return;
            }
            notified.await;
        }
    }
}

/// What the bridge reader keeps of a live connection.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) incoming: mpsc::UnboundedSender<apiary_core::Result<Vec<u8>>>,
    pub(crate) topics: mpsc::UnboundedSender<DiscoveryKey>,
    pub(crate) out: Arc<OutCredit>,
}

/// The facts the bridge reports of a new connection.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) conn: u32,
    pub(crate) info: SessionInfo,
    pub(crate) client: bool,
    pub(crate) topics: Vec<DiscoveryKey>,
}

/// Builds the session of a new connection: its entry for the reader, and the session for
/// replication. `link` is the bridge's input (already-encoded frames).
pub(crate) fn open(o: Opened, link: mpsc::UnboundedSender<Vec<u8>>) -> (Entry, DhtSession) {
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (topics_tx, topics_rx) = mpsc::unbounded_channel();
    let out = Arc::new(OutCredit::default());
    // Acknowledge what replication took, in steps, so the bridge may send more.
    let consumed = Mutex::new(0usize);
    let ack_link = link.clone();
    let conn = o.conn;
    let taken = Box::new(move |n: usize| {
        let mut c = consumed.lock().unwrap_or_else(|p| p.into_inner());
        *c += n;
        if *c >= ACK_EVERY {
            let _ = ack_link.send(crate::bridge::control_frame(
                &serde_json::json!({"op": "ack", "conn": conn, "bytes": *c}),
            ));
            *c = 0;
        }
    });
    let (out_tx, out_rx) = mpsc::channel(256);
    tokio::spawn(pump_out(o.conn, out_rx, link, out.clone()).in_current_span());
    let session = FramedSession {
        info: o.info,
        incoming: Incoming::with_credit(in_rx, taken),
        outgoing: out_tx,
    };
    (
        Entry {
            incoming: in_tx,
            topics: topics_tx,
            out,
        },
        DhtSession {
            session,
            client: o.client,
            topics: o.topics,
            more_topics: topics_rx,
        },
    )
}

/// Our messages to the bridge, within the window; tells the bridge to close the connection
/// when replication drops the session.
async fn pump_out(
    conn: u32,
    mut rx: mpsc::Receiver<Vec<u8>>,
    link: mpsc::UnboundedSender<Vec<u8>>,
    credit: Arc<OutCredit>,
) {
    while let Some(msg) = rx.recv().await {
        if msg.is_empty() {
            continue; // keep-alives are the bridge's business
        }
        if msg.len() > MAX_MESSAGE {
            tracing::warn!(
                conn,
                len = msg.len(),
                "dropping an oversized outgoing message"
            );
            continue;
        }
        credit.wait_for_room().await;
        credit.in_flight.fetch_add(msg.len(), Ordering::AcqRel);
        let mut frame = Vec::with_capacity(msg.len() + 9);
        encode_data(conn, &msg, &mut frame);
        if link.send(frame).is_err() {
            return; // the bridge is gone; the reader ends the session
        }
    }
    let _ = link.send(crate::bridge::control_frame(
        &serde_json::json!({"op": "close", "conn": conn}),
    ));
}

/// The session facts of a DHT connection.
pub(crate) fn info(
    local_public_key: [u8; 32],
    remote_public_key: [u8; 32],
    handshake_hash: [u8; 64],
    is_initiator: bool,
    remote: String,
) -> SessionInfo {
    SessionInfo {
        is_initiator,
        handshake_hash,
        remote_public_key,
        local_public_key,
        remote_label: remote,
        origin: Origin::Dht,
    }
}
