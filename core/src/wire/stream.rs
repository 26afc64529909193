//! The encrypted transport: uint24le framing, Noise XX, then secret-stream data frames
//! (JS `@hyperswarm/secret-stream` over a plain TCP socket, as `core.replicate(isInitiator)`
//! piped to a socket produces).
//!
//! Raw stream, per direction: handshake frames, one 56-byte id frame
//! (`streamId(32) || secretstream header(24)`, `streamId = B256(NS_<sender role>; key =
//! handshake hash)`), then one encrypted frame per message. Empty messages are keep-alives.
//!
//! What comes out is a [`FramedSession`]: whole plaintext messages in and out, plus who we
//! talk to. Replication works on that and never on the socket, so any carrier that yields
//! the same (e.g. a future DHT bridge) can be plugged in.

use std::time::Duration;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;

use super::noise::Handshake;
use super::secretstream::{Pull, Push, ABYTES, HEADERBYTES};
use crate::crypto::{self, KeyPair};
use crate::error::{Error, Result};

/// Largest frame payload the uint24le length allows.
pub const MAX_FRAME: usize = (1 << 24) - 1;
/// Largest plaintext message one encrypted frame carries.
pub const MAX_MESSAGE: usize = MAX_FRAME - ABYTES;
/// How long the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An empty message goes out after this much silence, as JS does (`setKeepAlive(5000)`).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// A session that sends nothing, not even a keep-alive (JS and we send one every 5 s), for
/// this long is dead or stalled, and is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of received messages a session may hold before replication takes them; the socket
/// is not read meanwhile, so a peer that floats us messages is slowed by TCP instead.
pub const INCOMING_BUDGET: usize = 4 << 20;
/// Bytes of received messages all TCP sessions of the process together may hold before
/// replication takes them: many peers flooding at once wait on this instead of growing RSS.
pub const INCOMING_TOTAL: usize = 256 << 20;
static INCOMING_ALL: Semaphore = Semaphore::const_new(INCOMING_TOTAL);

/// Outgoing messages queued per session. Replication sends batches of at most 1 MiB, so this
/// bounds what a peer that never reads can make us hold.
const OUTGOING_QUEUE: usize = 16;

/// How a session came to be: which carrier made it, and who dialed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// We dialed a known address over TCP.
    Dialed,
    /// A peer dialed our TCP listener.
    Accepted,
    /// Hyperswarm found it on the DHT (either side may have dialed).
    Dht,
}

impl Origin {
    /// The name status pages show: `direct`, `dial-in` or `dht`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Dialed => "direct",
            Origin::Accepted => "dial-in",
            Origin::Dht => "dht",
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who the session is with, and the secrets that bind replication to it.
#[derive(Clone)]
pub struct SessionInfo {
    /// Whether we sent the first Noise message.
    pub is_initiator: bool,
    /// The Noise handshake hash (keys replication capabilities).
    pub handshake_hash: [u8; 64],
    /// The remote's static Ed25519 key.
    pub remote_public_key: [u8; 32],
    /// Our static Ed25519 key.
    pub local_public_key: [u8; 32],
    /// A printable name of the remote end (an address), for logs.
    pub remote_label: String,
    /// Which carrier made the session.
    pub origin: Origin,
}

impl std::fmt::Debug for SessionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionInfo")
            .field("is_initiator", &self.is_initiator)
            .field("remote", &self.remote_label)
            .field("origin", &self.origin)
            .field("remote_public_key", &hex::encode(self.remote_public_key))
            .finish()
    }
}

/// An authenticated, encrypted channel of whole messages.
#[derive(Debug)]
pub struct FramedSession {
    /// Peer and handshake facts.
    pub info: SessionInfo,
    /// Incoming messages; an `Err` is the last item when the stream broke.
    pub incoming: Incoming,
    /// Outgoing messages; dropping every sender closes our side.
    pub outgoing: mpsc::Sender<Vec<u8>>,
}

/// Called with the size of each message as the session's reader takes it.
pub type TakenFn = Box<dyn Fn(usize) + Send + Sync>;

/// The incoming side of a session. A carrier with its own flow control (the DHT bridge
/// grants the remote credit only for what replication has consumed, which bounds its queue)
/// learns of each message taken through a callback; for TCP the bounded channel is the flow
/// control.
pub struct Incoming {
    rx: Rx,
    taken: Option<TakenFn>,
}

enum Rx {
    Bounded(mpsc::Receiver<Result<Vec<u8>>>),
    Credit(mpsc::UnboundedReceiver<Result<Vec<u8>>>),
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("credit", &self.taken.is_some())
            .finish()
    }
}

impl Drop for Incoming {
    /// Credit is given back for what was never taken, so a session that ends with messages
    /// queued leaks no budget (the sender's later sends fail and it keeps theirs).
    fn drop(&mut self) {
        if let (Rx::Credit(rx), Some(taken)) = (&mut self.rx, &self.taken) {
            rx.close();
            while let Ok(m) = rx.try_recv() {
                if let Ok(m) = m {
                    taken(m.len());
                }
            }
        }
    }
}

impl Incoming {
    /// Messages from a bounded channel (its capacity is the flow control).
    pub fn new(rx: mpsc::Receiver<Result<Vec<u8>>>) -> Self {
        Incoming {
            rx: Rx::Bounded(rx),
            taken: None,
        }
    }

    /// Messages from a queue that the sender keeps bounded by credit; `taken` is told the
    /// length of each message as it is received, so the sender can grant more.
    pub fn with_credit(rx: mpsc::UnboundedReceiver<Result<Vec<u8>>>, taken: TakenFn) -> Self {
        Incoming {
            rx: Rx::Credit(rx),
            taken: Some(taken),
        }
    }

    /// The next message; `None` once the stream ended cleanly.
    pub async fn recv(&mut self) -> Option<Result<Vec<u8>>> {
        let m = match &mut self.rx {
            Rx::Bounded(rx) => rx.recv().await,
            Rx::Credit(rx) => rx.recv().await,
        };
        if let (Some(Ok(msg)), Some(f)) = (&m, &self.taken) {
            f(msg.len());
        }
        m
    }
}

fn stream_id(hash: &[u8; 64], initiator: bool) -> [u8; 32] {
    let ns = crypto::namespace("hyperswarm/secret-stream", 2);
    let n = ns.get(usize::from(!initiator)).copied().unwrap_or_default();
    crypto::hash_keyed(hash, &[&n])
}

/// Reads one uint24le-framed payload into `buf`; `Ok(false)` at a clean end. The buffer grows
/// as bytes arrive (a claimed 16 MiB costs nothing until it is sent), and each read must make
/// progress within [`IDLE_TIMEOUT`].
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<bool> {
    const STEP: usize = 64 * 1024;
    let mut len = [0u8; 3];
    match idle(r.read_exact(&mut len)).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let n = usize::from(len[0]) | usize::from(len[1]) << 8 | usize::from(len[2]) << 16;
    buf.clear();
    while buf.len() < n {
        let at = buf.len();
        let step = (n - at).min(STEP.max(at));
        buf.resize(at + step, 0);
        idle(r.read_exact(buf.get_mut(at..).unwrap_or_default())).await?;
    }
    Ok(true)
}

/// An I/O step that must finish within [`IDLE_TIMEOUT`].
async fn idle<T>(f: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(IDLE_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no data for {} s", IDLE_TIMEOUT.as_secs()),
            ))
        })
}

fn frame_into(out: &mut Vec<u8>, payload: &[u8]) {
    let n = payload.len() as u32;
    out.extend_from_slice(&n.to_le_bytes()[..3]);
    out.extend_from_slice(payload);
}

/// Runs the Noise handshake on `socket` and starts the reader and writer tasks.
pub async fn secret_stream<S>(
    socket: S,
    is_initiator: bool,
    keys: KeyPair,
    remote_label: String,
) -> Result<FramedSession>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(socket);
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let local_public_key = keys.public_key();
    let setup = async {
        let mut hs = Handshake::new(is_initiator, keys);
        let mut buf = Vec::new();
        while !hs.is_complete() {
            if hs.is_our_turn() {
                let msg = hs.write_message()?;
                let mut out = Vec::with_capacity(msg.len() + 3);
                frame_into(&mut out, &msg);
                wr.write_all(&out).await?;
            } else {
                if !read_frame(&mut rd, &mut buf).await? {
                    return Err(Error::closed("connection closed during the handshake"));
                }
                hs.read_message(&buf)?;
            }
        }
        let res = hs.finish()?;
        let (push, header) = Push::new(&res.tx);
        let mut id = Vec::with_capacity(59);
        let mut payload = stream_id(&res.hash, is_initiator).to_vec();
        payload.extend_from_slice(&header);
        frame_into(&mut id, &payload);
        wr.write_all(&id).await?;
        wr.flush().await?;
        if !read_frame(&mut rd, &mut buf).await? {
            return Err(Error::closed("connection closed before the stream header"));
        }
        if buf.len() != 32 + HEADERBYTES
            || buf.get(..32) != Some(&stream_id(&res.hash, !is_initiator)[..])
        {
            return Err(Error::crypto("bad secret-stream id header"));
        }
        let mut h = [0u8; HEADERBYTES];
        h.copy_from_slice(buf.get(32..).unwrap_or(&[0u8; HEADERBYTES]));
        let pull = Pull::new(&res.rx, &h);
        Ok::<_, Error>((res, push, pull))
    };
    let (res, push, pull) = tokio::time::timeout(HANDSHAKE_TIMEOUT, setup)
        .await
        .map_err(|_| Error::Timeout {
            what: "Noise handshake".into(),
        })??;

    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
    let budget = Arc::new(Semaphore::new(INCOMING_BUDGET));
    let give_back = budget.clone();
    let incoming = Incoming::with_credit(
        in_rx,
        Box::new(move |n| {
            give_back.add_permits(n.clamp(1, INCOMING_BUDGET));
            INCOMING_ALL.add_permits(n.clamp(1, INCOMING_BUDGET));
        }),
    );
    tokio::spawn(read_loop(rd, pull, in_tx, budget).in_current_span());
    tokio::spawn(write_loop(wr, push, out_rx).in_current_span());
    Ok(FramedSession {
        info: SessionInfo {
            is_initiator,
            handshake_hash: res.hash,
            remote_public_key: res.remote_public_key,
            local_public_key,
            remote_label,
            origin: if is_initiator {
                Origin::Dialed
            } else {
                Origin::Accepted
            },
        },
        incoming,
        outgoing: out_tx,
    })
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    mut pull: Pull,
    tx: mpsc::UnboundedSender<Result<Vec<u8>>>,
    budget: Arc<Semaphore>,
) {
    let mut buf = Vec::new();
    loop {
        let item = match read_frame(&mut rd, &mut buf).await {
            Ok(false) => return, // clean end: dropping `tx` tells the reader
            Ok(true) => match pull.pull_in_place(&mut buf) {
                Ok((_, [])) => continue, // keep-alive
                Ok((_, plain)) => Ok(plain.to_vec()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let stop = item.is_err();
        if let Ok(m) = &item {
            // Wait (not reading the socket) until replication has taken enough of what we
            // hold; the session's reader gives the permits back as it takes each message.
            // This session's budget first, then the process-wide one (in that order only,
            // so no two readers wait on each other).
            let need = u32::try_from(m.len().clamp(1, INCOMING_BUDGET)).unwrap_or(u32::MAX);
            match budget.acquire_many(need).await {
                Ok(p) => p.forget(),
                Err(_) => return,
            }
            match INCOMING_ALL.acquire_many(need).await {
                Ok(p) => p.forget(),
                Err(_) => return,
            }
        }
        let len = item.as_ref().map_or(0, Vec::len);
        if tx.send(item).is_err() {
            if len > 0 {
                // Never queued: its credit comes back here.
                INCOMING_ALL.add_permits(len.clamp(1, INCOMING_BUDGET));
            }
            return;
        }
        if stop {
            return;
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut push: Push,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let first = match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(_) => Vec::new(), // keep-alive
        };
        out.clear();
        let mut msg = Some(first);
        // Drain what is queued so one socket write carries many small messages.
        while let Some(m) = msg.take() {
            if m.len() > MAX_MESSAGE {
                tracing::warn!(len = m.len(), "dropping an oversized outgoing message");
            } else {
                let n = (m.len() + ABYTES) as u32;
                out.extend_from_slice(&n.to_le_bytes()[..3]);
                push.push_into(&m, super::secretstream::TAG_MESSAGE, &mut out);
            }
            if out.len() < 256 * 1024 {
                msg = rx.try_recv().ok();
            }
        }
        if wr.write_all(&out).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_sides_talk_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut s = secret_stream(sock, false, KeyPair::generate(), "client".into())
                .await
                .unwrap();
            while let Some(Ok(m)) = s.incoming.recv().await {
                s.outgoing
                    .send(m.iter().rev().copied().collect())
                    .await
                    .unwrap();
            }
        });
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut c = secret_stream(sock, true, KeyPair::generate(), "server".into())
            .await
            .unwrap();
        for i in 0..100u32 {
            let msg = format!("message {i}").into_bytes();
            c.outgoing.send(msg.clone()).await.unwrap();
            let back = c.incoming.recv().await.unwrap().unwrap();
            assert_eq!(back, msg.iter().rev().copied().collect::<Vec<_>>());
        }
        drop(c);
        server.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_claimed_frame_grows_with_its_bytes_and_a_silent_peer_times_out() {
        let (mut tx, mut rx) = tokio::io::duplex(1 << 20);
        // Claims 16 MiB - 1, sends 10 bytes, then nothing.
        tx.write_all(&[0xff, 0xff, 0xff]).await.unwrap();
        tx.write_all(&[7u8; 10]).await.unwrap();
        let mut buf = Vec::new();
        let r = read_frame(&mut rx, &mut buf).await;
        let e = r.expect_err("a silent peer times out");
        assert!(e.to_string().contains("no data"), "{e}");
        assert!(
            buf.capacity() <= 64 * 1024,
            "reserved {} bytes",
            buf.capacity()
        );
    }

    #[tokio::test]
    async fn a_reader_that_does_not_take_messages_stops_reading_the_socket() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(secret_stream(a, false, KeyPair::generate(), "a".into()));
        let c = secret_stream(b, true, KeyPair::generate(), "b".into())
            .await
            .unwrap();
        let mut s = server.await.unwrap().unwrap();
        // 40 MiB offered while nobody takes anything: far beyond what may be held.
        let msg = vec![1u8; 1 << 20];
        let mut sent = 0;
        let push = async {
            for _ in 0..40 {
                c.outgoing.send(msg.clone()).await.unwrap();
                sent += 1;
            }
        };
        let all = tokio::time::timeout(Duration::from_millis(1500), push).await;
        assert!(all.is_err(), "the sender is held back, not buffered");
        assert!(sent < 40, "sent {sent}");
        // Taking the messages lets everything through, in order and whole.
        let pusher = tokio::spawn(async move {
            for _ in sent..40 {
                c.outgoing.send(vec![2u8; 1 << 20]).await.unwrap();
            }
            c
        });
        for i in 0..40 {
            let m = s.incoming.recv().await.unwrap().unwrap();
            assert_eq!(m.len(), 1 << 20, "message {i}");
        }
        drop(pusher.await.unwrap());
    }

    #[tokio::test]
    async fn a_session_ending_with_messages_queued_returns_their_budget() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(secret_stream(a, false, KeyPair::generate(), "a".into()));
        let c = secret_stream(b, true, KeyPair::generate(), "b".into())
            .await
            .unwrap();
        let s = server.await.unwrap().unwrap();
        for _ in 0..3 {
            c.outgoing.send(vec![9u8; 100_000]).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(s); // three messages never taken
        drop(c);
        // Other tests' sessions come and go; all of it must come back once they are done.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while INCOMING_ALL.available_permits() != INCOMING_TOTAL {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {INCOMING_TOTAL} bytes of budget came back",
                INCOMING_ALL.available_permits()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            secret_stream(sock, false, KeyPair::generate(), "client".into()).await
        });
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(&[5, 0, 0, 1, 2, 3, 4, 5]).await.unwrap();
        let r = server.await.unwrap();
        assert!(matches!(r, Err(Error::Crypto { .. })), "{r:?}");
    }
}
