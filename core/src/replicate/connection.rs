//! One replication connection: a task that owns a [`FramedSession`], speaks protomux, keeps
//! one `hypercore/alpha` channel per shared core, serves requests from the store and routes
//! answers to the requests of our replicas.
//!
//! Two handles talk to the task, each through its own queue: [`Connection`] (the replicator's:
//! open or close a core's channel, end the connection) and [`Peer`] (a replica's, one per
//! channel: requests, announcements, a verdict on the peer). The message enums of both are
//! private to this module. The protocol handling of incoming frames is in `protocol`.
//!
//! Rules kept here (JS `hypercore/lib/replicator.js`, `protomux`):
//! - a remote open is answered only for a core we hold, and only if its capability proves it
//!   knows the core key (a wrong capability ends the connection);
//! - every request gets `data` or `noData`, never silence; after 64 invalid requests the
//!   connection is closed;
//! - answers are matched by request id, never by order;
//! - any message we cannot decode ends the connection with an error; other connections go on.

mod peer;
mod protocol;

pub(crate) use peer::Answers;
pub use peer::{Peer, RemoteState};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use self::peer::{PeerCommand, Reply};
use super::replica::Replica;
use super::Registry;
use crate::crypto;
use crate::error::{Error, Result};
use crate::id::DiscoveryKey;
use crate::merkle::flat;
use crate::wire::messages::{ChannelHandshake, Message, Request, Sync};
use crate::wire::mux::{self, Batch};
use crate::wire::{FramedSession, Incoming, SessionInfo};

/// The protomux protocol name of hypercore replication.
pub const PROTOCOL: &str = "hypercore/alpha";
const MAX_INVALID_REQUESTS: u32 = 64;
/// Outgoing bytes buffered before we wait for the socket.
const FLUSH_AT: usize = 1024 * 1024;
/// Commands queued to a connection task, per handle kind.
const QUEUE: usize = 1024;

/// What the [`Connection`] handle asks of its task.
#[derive(Debug)]
enum Command {
    Open(Arc<Replica>),
    CloseCore(DiscoveryKey),
    Shutdown,
}

/// A handle on a running connection.
#[derive(Debug, Clone)]
pub struct Connection {
    info: SessionInfo,
    cmd: mpsc::Sender<Command>,
    done: watch::Receiver<Option<std::result::Result<(), String>>>,
}

impl Connection {
    /// Who is on the other end.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Opens a channel for `replica` on this connection (the peer may then serve it).
    pub async fn open(&self, replica: &Arc<Replica>) -> Result<()> {
        self.cmd
            .send(Command::Open(replica.clone()))
            .await
            .map_err(|_| Error::closed("connection closed"))
    }

    /// Closes our channel for a core.
    pub async fn close_core(&self, dk: DiscoveryKey) {
        let _ = self.cmd.send(Command::CloseCore(dk)).await;
    }

    /// Ends the connection.
    pub fn close(&self) {
        let _ = self.cmd.try_send(Command::Shutdown);
    }

    /// True once the task has ended.
    pub fn is_closed(&self) -> bool {
        self.done.borrow().is_some()
    }

    /// Waits for the end; `Err` carries why it failed (a protocol violation, a bad proof, ...).
    pub async fn closed(&self) -> std::result::Result<(), String> {
        let mut rx = self.done.clone();
        loop {
            if let Some(r) = rx.borrow().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return Err("connection task vanished".into());
            }
        }
    }
}

struct Channel {
    replica: Arc<Replica>,
    peer: Arc<Peer>,
    /// What the remote told us about its copy; ours to write, the peer handle reads it.
    remote: watch::Sender<RemoteState>,
    remote_id: Option<u64>,
    /// Our requests awaiting an answer, by request id.
    inflight: HashMap<u64, Pending>,
    next_req: u64,
    last_sync: Option<Sync>,
    announced: u64,
}

/// A request of ours awaiting its answer.
struct Pending {
    reply: Reply,
    /// The block it is for (see [`subject`]): what a `noData` answer says is not available.
    seq: u64,
}

/// The block a request is for: the block asked for, else the first block under the node
/// asked for, else the first block of the upgrade.
fn subject(req: &Request) -> u64 {
    match (req.block, req.hash, req.upgrade) {
        (Some((seq, _)), _, _) => seq,
        (None, Some((index, _)), _) => flat::left_span(index) / 2,
        (None, None, Some((start, _))) => start,
        (None, None, None) => 0,
    }
}

enum Out {
    Frame(Vec<u8>),
    Msg(u64, u64, Vec<u8>),
}

struct Conn {
    info: SessionInfo,
    registry: Arc<Registry>,
    /// Handed to the [`Peer`] of every channel.
    peer_tx: mpsc::Sender<PeerCommand>,
    outgoing: mpsc::Sender<Vec<u8>>,
    channels: HashMap<u64, Channel>,
    by_remote: HashMap<u64, u64>,
    by_dk: HashMap<DiscoveryKey, u64>,
    next_local: u64,
    out: Vec<Out>,
    out_bytes: usize,
    invalid: u32,
}

/// Starts the task of a connection over `session`, opening channels for `announce`.
pub(crate) fn spawn(
    session: FramedSession,
    registry: Arc<Registry>,
    announce: Vec<Arc<Replica>>,
) -> Connection {
    let (cmd_tx, cmd_rx) = mpsc::channel(QUEUE);
    let (peer_tx, peer_rx) = mpsc::channel(QUEUE);
    let (done_tx, done_rx) = watch::channel(None);
    let info = session.info.clone();
    let handle = Connection {
        info: info.clone(),
        cmd: cmd_tx,
        done: done_rx,
    };
    let mut conn = Conn {
        info,
        registry,
        peer_tx,
        outgoing: session.outgoing,
        channels: HashMap::new(),
        by_remote: HashMap::new(),
        by_dk: HashMap::new(),
        next_local: 1,
        out: Vec::new(),
        out_bytes: 0,
        invalid: 0,
    };
    let mut incoming = session.incoming;
    let span = tracing::info_span!(
        "conn",
        peer = %conn.info.remote_label,
        remote = %crate::Key::from_bytes(conn.info.remote_public_key),
        origin = %conn.info.origin,
    );
    tokio::spawn(
        async move {
            for r in announce {
                conn.open_channel(&r);
            }
            let res = conn.run(&mut incoming, cmd_rx, peer_rx).await;
            let _ = conn.flush().await;
            conn.teardown();
            match &res {
                Ok(()) => tracing::debug!(peer = %conn.info.remote_label, "connection closed"),
                Err(e) => tracing::info!(peer = %conn.info.remote_label, "connection ended: {e}"),
            }
            let _ = done_tx.send(Some(res.map_err(|e| e.to_string())));
        }
        .instrument(span),
    );
    handle
}

impl Conn {
    async fn run(
        &mut self,
        incoming: &mut Incoming,
        mut cmds: mpsc::Receiver<Command>,
        mut peer_cmds: mpsc::Receiver<PeerCommand>,
    ) -> Result<()> {
        let mut gc = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                frame = incoming.recv() => match frame {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(f)) => self.on_frame(&f).await?,
                },
                // Our `peer_tx` keeps this queue open; a closed one only disables the branch.
                Some(c) = peer_cmds.recv() => self.on_peer_command(c)?,
                Some(c) = cmds.recv() => {
                    if !self.on_command(c) {
                        return Ok(());
                    }
                }
                _ = gc.tick() => self.cancel_abandoned(),
            }
            // Take whatever else is queued before writing, so replies go out batched.
            while let Ok(c) = peer_cmds.try_recv() {
                self.on_peer_command(c)?;
                if self.out_bytes >= FLUSH_AT {
                    break;
                }
            }
            while let Ok(c) = cmds.try_recv() {
                if !self.on_command(c) {
                    return Ok(());
                }
            }
            self.flush().await?;
        }
    }

    fn teardown(&mut self) {
        for (_, ch) in self.channels.drain() {
            ch.remote.send_modify(|r| r.closed = true);
            ch.replica.remove_peer(&ch.peer);
            for (_, p) in ch.inflight {
                p.reply.send(Err(Error::closed("connection closed")));
            }
        }
    }

    fn push(&mut self, o: Out) {
        self.out_bytes += match &o {
            Out::Frame(f) => f.len(),
            Out::Msg(_, _, p) => p.len() + 4,
        };
        self.out.push(o);
    }

    fn send_msg(&mut self, local: u64, m: &Message) {
        self.push(Out::Msg(local, m.type_id(), m.encode()));
    }

    async fn flush(&mut self) -> Result<()> {
        let mut batch = Batch::new();
        for o in std::mem::take(&mut self.out) {
            match o {
                Out::Msg(local, ty, payload) => {
                    batch.push(local, ty, &payload);
                    if batch.byte_len() >= FLUSH_AT {
                        self.send_batch(std::mem::take(&mut batch)).await?;
                    }
                }
                Out::Frame(f) => {
                    self.send_batch(std::mem::take(&mut batch)).await?;
                    self.send_frame(f).await?;
                }
            }
        }
        self.send_batch(batch).await?;
        self.out_bytes = 0;
        Ok(())
    }

    async fn send_batch(&self, b: Batch) -> Result<()> {
        match b.finish() {
            Some(f) => self.send_frame(f).await,
            None => Ok(()),
        }
    }

    async fn send_frame(&self, f: Vec<u8>) -> Result<()> {
        self.outgoing
            .send(f)
            .await
            .map_err(|_| Error::closed("socket closed"))
    }

    fn open_channel(&mut self, replica: &Arc<Replica>) -> u64 {
        if let Some(id) = self.by_dk.get(replica.discovery_key()).copied() {
            let current = self
                .registry
                .get(replica.discovery_key())
                .is_some_and(|r| Arc::ptr_eq(&r, replica));
            if let Some(ch) = self.channels.get_mut(&id) {
                if current && !Arc::ptr_eq(&ch.replica, replica) {
                    // The core's replica object was replaced (a writer opened over a reader):
                    // the channel now serves and feeds the registered one. (A late open of
                    // an object no longer registered changes nothing.)
                    ch.replica.remove_peer(&ch.peer);
                    ch.replica = replica.clone();
                    if ch.remote_id.is_some() {
                        replica.add_peer(ch.peer.clone());
                    }
                }
            }
            return id;
        }
        let id = self.next_local;
        self.next_local += 1;
        let capability = crypto::capability(
            self.info.is_initiator,
            replica.key().as_bytes(),
            &self.info.handshake_hash,
        );
        let hs = ChannelHandshake {
            seeks: false,
            capability,
        };
        self.push(Out::Frame(mux::encode_open(
            id,
            PROTOCOL,
            Some(replica.discovery_key().as_bytes()),
            &hs.encode(),
        )));
        let (peer, remote) = Peer::new(self.peer_tx.clone(), id, &self.info);
        self.channels.insert(
            id,
            Channel {
                replica: replica.clone(),
                peer: Arc::new(peer),
                remote,
                remote_id: None,
                inflight: HashMap::new(),
                next_req: 1,
                last_sync: None,
                announced: 0,
            },
        );
        self.by_dk.insert(*replica.discovery_key(), id);
        id
    }

    fn remove_channel(&mut self, local: u64) {
        if let Some(ch) = self.channels.remove(&local) {
            if let Some(r) = ch.remote_id {
                self.by_remote.remove(&r);
            }
            self.by_dk.remove(ch.replica.discovery_key());
            ch.remote.send_modify(|r| r.closed = true);
            ch.replica.remove_peer(&ch.peer);
            for (_, p) in ch.inflight {
                p.reply.send(Err(Error::closed("channel closed")));
            }
        }
    }

    /// A command of the [`Connection`] handle; false to end the connection.
    fn on_command(&mut self, c: Command) -> bool {
        match c {
            Command::Open(r) => {
                self.open_channel(&r);
            }
            Command::CloseCore(dk) => {
                if let Some(local) = self.by_dk.get(&dk).copied() {
                    self.push(Out::Frame(mux::encode_close(local)));
                    self.remove_channel(local);
                }
            }
            Command::Shutdown => return false,
        }
        true
    }

    /// A command of a [`Peer`] handle.
    fn on_peer_command(&mut self, c: PeerCommand) -> Result<()> {
        match c {
            PeerCommand::Request {
                channel,
                mut req,
                reply,
            } => {
                let Some(ch) = self
                    .channels
                    .get_mut(&channel)
                    .filter(|c| c.remote_id.is_some())
                else {
                    reply.send(Err(Error::closed("channel closed")));
                    return Ok(());
                };
                req.id = ch.next_req;
                ch.next_req += 1;
                let seq = subject(&req);
                ch.inflight.insert(req.id, Pending { reply, seq });
                self.send_msg(channel, &Message::Request(req));
            }
            PeerCommand::Sync { channel } => self.send_sync(channel, false),
            PeerCommand::Fail { reason } => return Err(Error::protocol(reason)),
        }
        Ok(())
    }
}
