//! [`Peer`]: the handle a replica holds on one channel of a connection, and all it sees of
//! that connection. Requests, announcements and a verdict on the peer go to the connection's
//! task as [`PeerCommand`]s (private to the connection); answers come back on the channel the
//! request named ([`Reply`]). What the remote told us about its copy ([`RemoteState`]) is the
//! connection's: it alone writes it, and the peer handle reads it from a `watch`.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::wire::messages::{Data, Request};
use crate::wire::{Origin, SessionInfo};

/// Where the answers of a range download go: `(tag, answer)`, the tag naming the block.
pub(crate) type Answers = mpsc::UnboundedSender<(u64, Result<Data>)>;

/// What a [`Peer`] asks of its connection's task.
#[derive(Debug)]
pub(super) enum PeerCommand {
    /// Send `req` on `channel`; the answer goes to `reply`.
    Request {
        channel: u64,
        req: Request,
        reply: Reply,
    },
    /// Send our sync on `channel` (our head changed).
    Sync { channel: u64 },
    /// The peer misbehaved: end the connection with this reason.
    Fail { reason: String },
}

/// Where the answer to a request goes.
#[derive(Debug)]
pub(super) enum Reply {
    /// One waiting caller.
    Once(oneshot::Sender<Result<Data>>),
    /// A range download: every answer goes to one queue, tagged with the block it is for,
    /// so one task takes many answers per wake-up.
    Tagged { tag: u64, to: Answers },
}

impl Reply {
    pub(super) fn send(self, r: Result<Data>) {
        match self {
            Reply::Once(tx) => {
                let _ = tx.send(r);
            }
            Reply::Tagged { tag, to } => {
                let _ = to.send((tag, r));
            }
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        match self {
            Reply::Once(tx) => tx.is_closed(),
            Reply::Tagged { to, .. } => to.is_closed(),
        }
    }
}

/// What a peer told us about its copy of a core (written by its connection only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteState {
    /// Its fork.
    pub fork: u64,
    /// Its length.
    pub length: u64,
    /// It holds blocks `[0, contiguous)`.
    pub contiguous: u64,
    /// It can send the manifest.
    pub has_manifest: bool,
    /// It wants data.
    pub downloading: bool,
    /// The channel is gone.
    pub closed: bool,
}

/// One peer's channel for a core: what a replica sees of a connection.
#[derive(Debug)]
pub struct Peer {
    cmds: mpsc::Sender<PeerCommand>,
    channel: u64,
    remote: watch::Receiver<RemoteState>,
    /// The remote end (an address), for logs and status.
    pub label: String,
    /// How the session with it was made.
    pub origin: Origin,
    /// The remote's Noise public key.
    pub remote_public_key: [u8; 32],
}

impl Peer {
    /// A peer for `channel` of the connection fed by `cmds`, and the sender of its remote
    /// state, which the connection keeps.
    pub(super) fn new(
        cmds: mpsc::Sender<PeerCommand>,
        channel: u64,
        info: &SessionInfo,
    ) -> (Self, watch::Sender<RemoteState>) {
        let (tx, remote) = watch::channel(RemoteState::default());
        let peer = Peer {
            cmds,
            channel,
            remote,
            label: info.remote_label.clone(),
            origin: info.origin,
            remote_public_key: info.remote_public_key,
        };
        (peer, tx)
    }

    /// What the peer last told us about its copy.
    pub fn remote(&self) -> RemoteState {
        *self.remote.borrow()
    }

    /// The channel (or the whole connection) is gone.
    pub fn is_closed(&self) -> bool {
        // The connection drops the sender with the channel; it says `closed` before that.
        self.remote.borrow().closed || self.remote.has_changed().is_err()
    }

    /// Sends `req` and waits up to `timeout` for its answer (`noData` is
    /// [`Error::NotAvailable`]).
    pub(crate) async fn request(&self, req: Request, timeout: Duration) -> Result<Data> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(PeerCommand::Request {
                channel: self.channel,
                req,
                reply: Reply::Once(tx),
            })
            .await
            .map_err(|_| Error::closed("connection closed"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::closed("connection closed before answering")),
            Err(_) => Err(Error::Timeout {
                what: format!("request to {}", self.label),
            }),
        }
    }

    /// Sends `req`; its answer goes to `to` tagged with `tag`. False if the connection is gone.
    pub(crate) async fn request_tagged(&self, req: Request, tag: u64, to: &Answers) -> bool {
        let cmd = PeerCommand::Request {
            channel: self.channel,
            req,
            reply: Reply::Tagged {
                tag,
                to: to.clone(),
            },
        };
        self.cmds.send(cmd).await.is_ok()
    }

    /// Tells the peer our head (sends our sync if it changed). Never waits.
    pub(crate) fn announce(&self) {
        let _ = self.cmds.try_send(PeerCommand::Sync {
            channel: self.channel,
        });
    }

    /// Ends the connection to this peer, which broke the protocol. Never waits.
    pub(crate) fn fail(&self, reason: String) {
        let _ = self.cmds.try_send(PeerCommand::Fail { reason });
    }
}
