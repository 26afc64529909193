//! One replication connection: a task that owns a [`FramedSession`], speaks protomux, keeps
//! one `hypercore/alpha` channel per shared core, serves requests from the store and routes
//! answers to the requests of our replicas.
//!
//! Rules kept here (JS `hypercore/lib/replicator.js`, `protomux`):
//! - a remote open is answered only for a core we hold, and only if its capability proves it
//!   knows the core key (a wrong capability ends the connection);
//! - every request gets `data` or `noData`, never silence; after 64 invalid requests the
//!   connection is closed;
//! - answers are matched by request id, never by order;
//! - any message we cannot decode ends the connection with an error; other connections go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::replica::{PeerLink, RemoteState, Replica};
use super::Registry;
use crate::crypto;
use crate::error::{Error, Result};
use crate::id::DiscoveryKey;
use crate::merkle::{generate_proof, ProofRequest};
use crate::wire::messages::{self, ChannelHandshake, Data, Message, Request, Sync};
use crate::wire::mux::{self, Batch, MuxMessage};
use crate::wire::{FramedSession, Incoming, SessionInfo};

/// The protomux protocol name of hypercore replication.
pub const PROTOCOL: &str = "hypercore/alpha";
const MAX_INVALID_REQUESTS: u32 = 64;
/// Outgoing bytes buffered before we wait for the socket.
const FLUSH_AT: usize = 1024 * 1024;

/// Commands to a connection task.
#[derive(Debug)]
pub(crate) enum ConnCommand {
    Open(Arc<Replica>),
    Request {
        channel: u64,
        req: Request,
        reply: Reply,
    },
    Sync {
        channel: u64,
    },
    CloseCore(DiscoveryKey),
    Fail {
        reason: String,
    },
    Shutdown,
}

/// Where the answer to a request goes.
#[derive(Debug)]
pub(crate) enum Reply {
    /// One waiting caller.
    Once(oneshot::Sender<Result<Data>>),
    /// A range download: every answer goes to one queue, tagged with the block it is for,
    /// so one task takes many answers per wake-up.
    Tagged {
        tag: u64,
        to: mpsc::UnboundedSender<(u64, Result<Data>)>,
    },
}

impl Reply {
    fn send(self, r: Result<Data>) {
        match self {
            Reply::Once(tx) => {
                let _ = tx.send(r);
            }
            Reply::Tagged { tag, to } => {
                let _ = to.send((tag, r));
            }
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Reply::Once(tx) => tx.is_closed(),
            Reply::Tagged { to, .. } => to.is_closed(),
        }
    }
}

/// A handle on a running connection.
#[derive(Debug, Clone)]
pub struct Connection {
    info: SessionInfo,
    cmd: mpsc::Sender<ConnCommand>,
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
            .send(ConnCommand::Open(replica.clone()))
            .await
            .map_err(|_| Error::closed("connection closed"))
    }

    /// Closes our channel for a core.
    pub async fn close_core(&self, dk: DiscoveryKey) {
        let _ = self.cmd.send(ConnCommand::CloseCore(dk)).await;
    }

    /// Ends the connection.
    pub fn close(&self) {
        let _ = self.cmd.try_send(ConnCommand::Shutdown);
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
    link: Arc<PeerLink>,
    remote_id: Option<u64>,
    inflight: HashMap<u64, Reply>,
    next_req: u64,
    last_sync: Option<Sync>,
    announced: u64,
}

enum Out {
    Frame(Vec<u8>),
    Msg(u64, u64, Vec<u8>),
}

struct Conn {
    info: SessionInfo,
    registry: Arc<Registry>,
    cmd_tx: mpsc::Sender<ConnCommand>,
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
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (done_tx, done_rx) = watch::channel(None);
    let info = session.info.clone();
    let handle = Connection {
        info: info.clone(),
        cmd: cmd_tx.clone(),
        done: done_rx,
    };
    let mut conn = Conn {
        info,
        registry,
        cmd_tx,
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
    tokio::spawn(async move {
        for r in announce {
            conn.open_channel(&r);
        }
        let res = conn.run(&mut incoming, cmd_rx).await;
        let _ = conn.flush().await;
        conn.teardown();
        match &res {
            Ok(()) => tracing::debug!(peer = %conn.info.remote_label, "connection closed"),
            Err(e) => tracing::info!(peer = %conn.info.remote_label, "connection ended: {e}"),
        }
        let _ = done_tx.send(Some(res.map_err(|e| e.to_string())));
    });
    handle
}

impl Conn {
    async fn run(
        &mut self,
        incoming: &mut Incoming,
        mut cmds: mpsc::Receiver<ConnCommand>,
    ) -> Result<()> {
        let mut gc = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                frame = incoming.recv() => match frame {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(f)) => self.on_frame(&f).await?,
                },
                cmd = cmds.recv() => match cmd {
                    None | Some(ConnCommand::Shutdown) => return Ok(()),
                    Some(c) => self.on_command(c)?,
                },
                _ = gc.tick() => self.cancel_abandoned(),
            }
            // Take whatever else is queued before writing, so replies go out batched.
            while let Ok(c) = cmds.try_recv() {
                if matches!(c, ConnCommand::Shutdown) {
                    return Ok(());
                }
                self.on_command(c)?;
                if self.out_bytes >= FLUSH_AT {
                    break;
                }
            }
            self.flush().await?;
        }
    }

    fn teardown(&mut self) {
        for (_, ch) in self.channels.drain() {
            ch.replica.remove_peer(&ch.link);
            for (_, reply) in ch.inflight {
                reply.send(Err(Error::closed("connection closed")));
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
        if let Some(id) = self.by_dk.get(replica.discovery_key()) {
            return *id;
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
        let link = Arc::new(PeerLink {
            conn: self.cmd_tx.clone(),
            channel: id,
            remote: Mutex::new(RemoteState::default()),
            label: self.info.remote_label.clone(),
            origin: self.info.origin,
            remote_public_key: self.info.remote_public_key,
        });
        self.channels.insert(
            id,
            Channel {
                replica: replica.clone(),
                link,
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
            ch.replica.remove_peer(&ch.link);
            for (_, reply) in ch.inflight {
                reply.send(Err(Error::closed("channel closed")));
            }
        }
    }

    fn on_command(&mut self, c: ConnCommand) -> Result<()> {
        match c {
            ConnCommand::Open(r) => {
                self.open_channel(&r);
            }
            ConnCommand::Request {
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
                ch.inflight.insert(req.id, reply);
                self.send_msg(channel, &Message::Request(req));
            }
            ConnCommand::Sync { channel } => self.send_sync(channel, false),
            ConnCommand::CloseCore(dk) => {
                if let Some(local) = self.by_dk.get(&dk).copied() {
                    self.push(Out::Frame(mux::encode_close(local)));
                    self.remove_channel(local);
                }
            }
            ConnCommand::Fail { reason } => return Err(Error::protocol(reason)),
            ConnCommand::Shutdown => {}
        }
        Ok(())
    }

    /// Sends our sync (if it changed, or always when `force`) and any new contiguous range.
    fn send_sync(&mut self, local: u64, force: bool) {
        let Some(ch) = self
            .channels
            .get_mut(&local)
            .filter(|c| c.remote_id.is_some())
        else {
            return;
        };
        let remote = ch.link.remote().clone();
        let sync = ch.replica.sync_for(&remote);
        let contiguous = ch.replica.contiguous_length();
        let send_sync = force || ch.last_sync.as_ref() != Some(&sync);
        let send_range = contiguous > ch.announced;
        ch.last_sync = Some(sync.clone());
        if send_range {
            ch.announced = contiguous;
        }
        if send_sync {
            self.send_msg(local, &Message::Sync(sync));
        }
        if send_range {
            self.send_msg(
                local,
                &Message::Range {
                    drop: false,
                    start: 0,
                    length: contiguous,
                },
            );
        }
    }

    fn cancel_abandoned(&mut self) {
        let mut cancels = Vec::new();
        for (local, ch) in self.channels.iter_mut() {
            ch.inflight.retain(|id, reply| {
                let keep = !reply.is_closed();
                if !keep {
                    cancels.push((*local, *id));
                }
                keep
            });
        }
        for (local, id) in cancels {
            self.send_msg(local, &Message::Cancel { request: id });
        }
    }

    async fn on_frame(&mut self, frame: &[u8]) -> Result<()> {
        for m in mux::decode_frame(frame)? {
            match m {
                MuxMessage::Open {
                    remote_id,
                    protocol,
                    id,
                    handshake,
                } => self.on_open(remote_id, &protocol, id, &handshake)?,
                MuxMessage::Reject { local_id } => {
                    if self
                        .channels
                        .get(&local_id)
                        .is_some_and(|c| c.remote_id.is_none())
                    {
                        self.remove_channel(local_id);
                    }
                }
                MuxMessage::Close { remote_id } => {
                    if let Some(local) = self.by_remote.get(&remote_id).copied() {
                        self.remove_channel(local);
                    }
                }
                MuxMessage::Message {
                    remote_id,
                    ty,
                    payload,
                } => {
                    // Messages for channels we do not know are ignored, as protomux does.
                    if let Some(local) = self.by_remote.get(&remote_id).copied() {
                        if let Some(msg) = Message::decode(ty, &payload)? {
                            self.on_message(local, msg)?;
                        }
                    }
                }
            }
            if self.out_bytes >= FLUSH_AT {
                self.flush().await?;
            }
        }
        Ok(())
    }

    fn on_open(
        &mut self,
        remote_id: u64,
        protocol: &str,
        id: Option<Vec<u8>>,
        handshake: &[u8],
    ) -> Result<()> {
        if remote_id == 0 || self.by_remote.contains_key(&remote_id) {
            return Err(Error::protocol(format!(
                "invalid channel open (id {remote_id})"
            )));
        }
        let dk = id.as_deref().and_then(|b| DiscoveryKey::from_slice(b).ok());
        let (Some(dk), true) = (dk, protocol == PROTOCOL || protocol == "hypercore") else {
            self.push(Out::Frame(mux::encode_reject(remote_id)));
            return Ok(());
        };
        let local = match self.by_dk.get(&dk).copied() {
            Some(l) if self.channels.get(&l).is_some_and(|c| c.remote_id.is_none()) => l,
            Some(_) => return Err(Error::protocol("second open for one core")),
            None => match self.registry.get(&dk) {
                Some(r) => self.open_channel(&r),
                None => {
                    self.push(Out::Frame(mux::encode_reject(remote_id)));
                    return Ok(());
                }
            },
        };
        let hs = ChannelHandshake::decode(handshake)?;
        let Some(ch) = self.channels.get_mut(&local) else {
            return Ok(());
        };
        let expected = crypto::capability(
            !self.info.is_initiator,
            ch.replica.key().as_bytes(),
            &self.info.handshake_hash,
        );
        if hs.capability != expected {
            return Err(Error::protocol(format!(
                "remote sent a wrong capability for core {}",
                ch.replica.key()
            )));
        }
        ch.remote_id = Some(remote_id);
        self.by_remote.insert(remote_id, local);
        let (replica, link) = (ch.replica.clone(), ch.link.clone());
        replica.add_peer(link);
        self.send_sync(local, true);
        Ok(())
    }

    fn on_message(&mut self, local: u64, msg: Message) -> Result<()> {
        let Some(ch) = self.channels.get_mut(&local) else {
            return Ok(());
        };
        match msg {
            Message::Sync(s) => {
                {
                    let mut r = ch.link.remote();
                    if r.fork != s.fork {
                        r.contiguous = 0;
                    }
                    r.fork = s.fork;
                    r.length = s.length;
                    r.has_manifest = s.has_manifest;
                    r.downloading = s.downloading;
                }
                let replica = ch.replica.clone();
                replica.on_peer_update();
                self.send_sync(local, false);
            }
            Message::Request(r) => self.serve(local, r)?,
            Message::Cancel { .. } => {} // we answer at once; nothing to cancel
            Message::Data(d) => {
                if let Some(reply) = ch.inflight.remove(&d.request) {
                    reply.send(Ok(*d));
                }
            }
            Message::NoData { request, .. } => {
                if let Some(reply) = ch.inflight.remove(&request) {
                    let seq = 0;
                    reply.send(Err(Error::NotAvailable { seq }));
                }
            }
            Message::Range {
                drop: dropped,
                start,
                length,
            } => {
                {
                    let mut r = ch.link.remote();
                    if !dropped && start <= r.contiguous {
                        r.contiguous = r.contiguous.max(start.saturating_add(length));
                    } else if dropped && start < r.contiguous {
                        r.contiguous = start;
                    }
                }
                ch.replica.on_peer_update();
            }
            Message::Want { .. } => {
                // Tell the peer what we hold from the start; finer availability is not tracked.
                let contiguous = ch.replica.contiguous_length();
                if contiguous > 0 {
                    ch.announced = ch.announced.max(contiguous);
                    self.send_msg(
                        local,
                        &Message::Range {
                            drop: false,
                            start: 0,
                            length: contiguous,
                        },
                    );
                }
            }
            Message::Unwant { .. } | Message::Bitfield { .. } | Message::Extension { .. } => {}
        }
        Ok(())
    }

    fn serve(&mut self, local: u64, r: Request) -> Result<()> {
        let Some(ch) = self.channels.get(&local) else {
            return Ok(());
        };
        let replica = ch.replica.clone();
        let head = replica.head();
        let no_data = |reason| Message::NoData {
            request: r.id,
            reason,
        };
        let reply = if r.fork != head.fork || r.seek.is_some() {
            no_data(messages::NOT_AVAILABLE)
        } else {
            let store = replica.store();
            let value = match r.block {
                Some((i, _)) => store.block(i)?,
                None => None,
            };
            if r.block.is_some() && value.is_none() {
                no_data(messages::NOT_AVAILABLE)
            } else {
                let req = ProofRequest {
                    block: r.block,
                    hash: r.hash,
                    upgrade: r.upgrade,
                };
                match generate_proof(&head, &req, value, |i| store.node(i)) {
                    Ok(proof) => Message::Data(Box::new(Data {
                        request: r.id,
                        proof,
                        manifest: if r.manifest { replica.manifest() } else { None },
                    })),
                    Err(Error::NotAvailable { .. }) => no_data(messages::NOT_AVAILABLE),
                    Err(Error::Store(e)) => return Err(Error::Store(e)),
                    Err(_) => {
                        self.invalid += 1;
                        if self.invalid > MAX_INVALID_REQUESTS {
                            return Err(Error::protocol("too many invalid requests"));
                        }
                        no_data(messages::INVALID_REQUEST)
                    }
                }
            }
        };
        self.send_msg(local, &reply);
        Ok(())
    }
}
