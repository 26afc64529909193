//! One run of the bridge child: spawn `node bridge.js`, initialise it with our key pair and
//! bootstrap nodes, re-join every topic, then move frames until it exits.
//!
//! Control objects the child sends (`ev`):
//! - `ready {publicKey}`; `bootstrapped {host, port, firewalled}`;
//! - `connection {conn, remotePublicKey, handshakeHash, isInitiator, client, remote, topics}`
//!   (keys and hashes in hex): a new session;
//! - `topic {conn, topic}`: the remote of `conn` was found under another topic too;
//! - `closed {conn, error}`: hyperswarm closed it (a duplicate, the remote left, an error);
//! - `ack {conn, bytes}`: the connection accepted that many of our bytes;
//! - `joined {topic, nodes}`: the announce/lookup of a join (or a refresh) finished; `nodes`
//!   is how many DHT nodes the child knows, 0 when it reached none (or the refresh failed);
//! - `stats {id, …counters}`: the answer to our `stats`.
//!
//! Ours (`op`): `init {seed, bootstrap}`, `join {topic, server, client}`, `refresh {topic}`
//! (look it up again now), `leave {topic}`,
//! `joinPeer {key}`, `leavePeer {key}`, `ack {conn, bytes}`, `close {conn}`, `stats {id}`,
//! `shutdown`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use apiary_core::DiscoveryKey;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::frame::{read_frame, Frame};
use crate::session::{self, Entry, Opened};
use crate::{Shared, SwarmOptions};

/// Encodes a control object as a frame.
pub(crate) fn control_frame(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::Control(v.to_string().into_bytes()).encode_into(&mut out);
    out
}

/// How a run ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// We asked it to stop.
    Shutdown,
    /// It exited or broke the protocol.
    Failed(String),
}

/// Runs the child until it exits. Sessions it made end with it.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    script: &Path,
    opts: &SwarmOptions,
    sessions: &mpsc::UnboundedSender<session::DhtSession>,
) -> Ended {
    let mut child = match tokio::process::Command::new(&opts.node)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Ended::Failed(format!("cannot start {}: {e}", opts.node)),
    };
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Ended::Failed("the child has no pipes".into());
    };
    let pid = child.id();
    let span = tracing::info_span!("bridge", pid);
    tokio::spawn(log_stderr(stderr, pid).instrument(span.clone()));
    let (link, link_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(write_loop(stdin, link_rx).instrument(span));
    let _ = link.send(control_frame(&json!({
        "op": "init",
        "seed": hex::encode(opts.seed),
        "bootstrap": opts.bootstrap,
    })));
    shared.attach(link.clone(), pid);

    let mut reader = Reader {
        shared: shared.clone(),
        link: link.clone(),
        sessions: sessions.clone(),
        conns: HashMap::new(),
    };
    let mut stdout = BufReader::with_capacity(256 * 1024, stdout);
    let mut shutdown = shared.shutdown.subscribe();
    let ended = loop {
        tokio::select! {
            f = read_frame(&mut stdout) => match f {
                Ok(Some(frame)) => {
                    if let Err(e) = reader.on_frame(frame) {
                        break Ended::Failed(e);
                    }
                }
                Ok(None) => break Ended::Failed("it exited".into()),
                Err(e) => break Ended::Failed(e.to_string()),
            },
            _ = crate::stopped(&mut shutdown) => {
                let _ = link.send(control_frame(&json!({"op": "shutdown"})));
                // Give it a moment to leave the DHT cleanly, then make sure.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(3), child.wait()).await;
                break Ended::Shutdown;
            }
        }
    };
    shared.detach();
    let why = match &ended {
        Ended::Shutdown => "the DHT bridge shut down".to_owned(),
        Ended::Failed(e) => format!("the DHT bridge failed: {e}"),
    };
    for (_, e) in reader.conns.drain() {
        let _ = e.incoming.send(Err(apiary_core::Error::Closed {
            reason: why.clone(),
        }));
    }
    writer.abort();
    let _ = child.start_kill();
    let _ = child.wait().await;
    ended
}

struct Reader {
    shared: Arc<Shared>,
    link: mpsc::UnboundedSender<Vec<u8>>,
    sessions: mpsc::UnboundedSender<session::DhtSession>,
    conns: HashMap<u32, Entry>,
}

impl Reader {
    /// Handles one frame. `Err` only for what makes the whole child untrustworthy.
    fn on_frame(&mut self, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Data { conn, msg } => {
                if let Some(e) = self.conns.get(&conn) {
                    let _ = e.incoming.send(Ok(msg));
                }
                Ok(())
            }
            Frame::Oversized { conn, len } => {
                tracing::warn!(
                    conn,
                    len,
                    "the DHT bridge sent an oversized frame; ending that connection"
                );
                if let Some(c) = conn {
                    self.end(c, format!("an oversized message of {len} bytes"));
                }
                Ok(())
            }
            Frame::Control(body) => {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => self.on_control(&v),
                    Err(e) => tracing::warn!("the DHT bridge sent a malformed control object: {e}"),
                }
                Ok(())
            }
        }
    }

    /// Ends a connection on both sides, with `why` as the session's error.
    fn end(&mut self, conn: u32, why: String) {
        if let Some(e) = self.conns.remove(&conn) {
            let _ = e.incoming.send(Err(apiary_core::Error::Protocol {
                reason: format!("DHT connection: {why}"),
            }));
        }
        let _ = self
            .link
            .send(control_frame(&json!({"op": "close", "conn": conn})));
    }

    fn on_control(&mut self, v: &Value) {
        let conn = v["conn"].as_u64().and_then(|c| u32::try_from(c).ok());
        match (v["ev"].as_str().unwrap_or_default(), conn) {
            ("connection", Some(c)) => match parse_connection(v, c, self.shared.public_key) {
                Ok(opened) => {
                    let (entry, s) = session::open(opened, self.link.clone());
                    tracing::debug!(conn = c, remote = %s.session.info.remote_label, client = s.client, "DHT connection");
                    self.shared.stats.sessions.fetch_add(1, Ordering::Relaxed);
                    self.conns.insert(c, entry);
                    let _ = self.sessions.send(s);
                }
                Err(e) => {
                    tracing::warn!(conn = c, "the DHT bridge reported a bad connection: {e}");
                    self.end(c, e);
                }
            },
            ("topic", Some(c)) => {
                if let (Some(e), Some(t)) = (self.conns.get(&c), topic_of(&v["topic"])) {
                    let _ = e.topics.send(t);
                }
            }
            ("closed", Some(c)) => {
                if let Some(e) = self.conns.remove(&c) {
                    if let Some(err) = v["error"].as_str() {
                        let _ = e.incoming.send(Err(apiary_core::Error::Closed {
                            reason: format!("DHT connection closed: {err}"),
                        }));
                    }
                }
            }
            ("ack", Some(c)) => {
                if let (Some(e), Some(n)) = (self.conns.get(&c), v["bytes"].as_u64()) {
                    e.out.ack(usize::try_from(n).unwrap_or(usize::MAX));
                }
            }
            ("ready", _) => tracing::info!(public_key = %v["publicKey"], "DHT bridge ready"),
            ("bootstrapped", _) => {
                if v["nodes"].as_u64() == Some(0) {
                    tracing::warn!("no DHT node answered the bootstrap nodes: discovery waits until one does (check bootstrap and the network)");
                } else {
                    tracing::info!(host = %v["host"], port = %v["port"], firewalled = %v["firewalled"], nodes = %v["nodes"], "DHT bootstrapped");
                }
                self.shared.set_bootstrapped(v);
            }
            ("joined", _) => {
                let t = topic_of(&v["topic"]);
                if v["nodes"].as_u64() == Some(0) {
                    // Not reached: tried again in a while (hyperswarm would wait ~10 min).
                    if let Some(t) = t {
                        self.shared.set_unreached(t);
                    }
                } else if let Some(t) = t {
                    tracing::debug!(topic = %v["topic"], "DHT announce/lookup flushed");
                    self.shared.set_flushed(t);
                }
            }
            ("stats", _) => self.shared.answer_stats(v),
            (ev, _) => tracing::debug!(ev, "unknown event from the DHT bridge"),
        }
    }
}

fn topic_of(v: &Value) -> Option<DiscoveryKey> {
    let b = hex::decode(v.as_str()?).ok()?;
    DiscoveryKey::from_slice(&b).ok()
}

fn hex_array<const N: usize>(v: &Value, what: &str) -> Result<[u8; N], String> {
    let b = v
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| format!("{what} is not hex"))?;
    <[u8; N]>::try_from(b.as_slice()).map_err(|_| format!("{what} is not {N} bytes"))
}

fn parse_connection(v: &Value, conn: u32, local: [u8; 32]) -> Result<Opened, String> {
    let remote_pk = hex_array::<32>(&v["remotePublicKey"], "remotePublicKey")?;
    let hash = hex_array::<64>(&v["handshakeHash"], "handshakeHash")?;
    let is_initiator = v["isInitiator"]
        .as_bool()
        .ok_or("isInitiator is not a boolean")?;
    let mut remote: String = v["remote"]
        .as_str()
        .unwrap_or("?")
        .chars()
        .take(100)
        .collect();
    if remote.is_empty() {
        remote = "?".into();
    }
    let topics = v["topics"]
        .as_array()
        .map(|a| a.iter().filter_map(topic_of).collect())
        .unwrap_or_default();
    Ok(Opened {
        conn,
        info: session::info(local, remote_pk, hash, is_initiator, remote),
        client: v["client"].as_bool().unwrap_or(false),
        topics,
    })
}

/// Writes queued frames to the child's stdin, many per write.
async fn write_loop(
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut buf = Vec::with_capacity(256 * 1024);
    while let Some(f) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&f);
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(f) => buf.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if stdin.write_all(&buf).await.is_err() {
            return;
        }
    }
}

/// The child's stderr goes into our logs, a line an event.
async fn log_stderr(stderr: tokio::process::ChildStderr, pid: Option<u32>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line: String = line.chars().take(2000).collect();
        if line.starts_with("error") {
            tracing::warn!(target: "apiary_swarm::bridge", pid, "{line}");
        } else if line.starts_with("warn") {
            tracing::info!(target: "apiary_swarm::bridge", pid, "{line}");
        } else {
            tracing::debug!(target: "apiary_swarm::bridge", pid, "{line}");
        }
    }
}
