//! The control socket of a running `serve`: how the other commands reach the bees while
//! `serve` holds the data directory (sled lets one process open it). The CLI forwards the
//! parsed command; `serve` runs it with `commands::run`, the same code as a local run.
//!
//! Where: `<data_dir>/run/serve.sock`, a unix socket in a directory of mode 0700, so only the
//! owner of the data directory (who can read the secret keys anyway) can connect. `serve`
//! makes it at start, replacing a stale socket left by a killed `serve` (one that refuses
//! connections), and removes it on a clean shutdown. A CLI that finds the data directory
//! busy and no answer here fails with the "in use" error.
//!
//! Protocol: UTF-8 JSON, one object per `\n`-terminated line each way. On one connection a
//! client sends requests one at a time; each gets zero or more event lines, then exactly one
//! final line.
//!
//! ```text
//! request (at most 1 MiB; a longer line gets `too_long` and the connection is closed)
//!   {"cmd": "init",   "name": s, "compat"?: bool}
//!   {"cmd": "bees"}
//!   {"cmd": "info",   "name": s}                       final ok: {"key": hex, "compat", "created"}
//!   {"cmd": "put",    "name": s, "key": s, "json": s}  json: the value as JSON text
//!   {"cmd": "get",    "name": s, "key": s}
//!   {"cmd": "del",    "name": s, "key": s}
//!   {"cmd": "list",   "name": s, "prefix"?: s, "reverse"?: bool, "limit"?: n}
//!   {"cmd": "post",   "name": s, "text": s, "tags"?: [s]}
//!   {"cmd": "import", "name": s, "file": absolute path, "batch"?: n (default 1000)}
//!   {"cmd": "export", "name": s, "file"?: absolute path (without: the lines come as "out")}
//!   Unknown commands or fields are refused. Files are named, not sent: the client is the
//!   same user on the same machine, and `serve` opens them itself.
//! events
//!   {"out": s}                              a line the CLI prints on stdout
//!   {"err": s}                              a line the CLI prints on stderr
//!   {"progress": {"done": n, "total": n}}   import: after each written batch
//! final
//!   {"ok": true}                            (or the record, for "info")
//!   {"error": {"code": s, "message": s}}    the CLI prints "error: " + message and exits 2
//!                                           for bad_request, too_long, bad_input, not_found,
//!                                           config; 1 for busy, corrupt, io, remote,
//!                                           peer_timeout, unavailable, core, control
//! ```
//! `bad_request` is a line that is not JSON or not a request. A command that wrote is on disk
//! before its final line. A client that disconnects stops its command at the next event.
//!
//! Each client runs in its own task (at most 64 at once, idle ones dropped after 5 minutes),
//! so a slow or silent client holds up nobody else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt};

use crate::bees::Bees;
use crate::commands::{self, BeeCommand, Event, Sink};
use crate::error::{error_json, Error, Result};

/// Longest request line.
pub const MAX_REQUEST: usize = 1024 * 1024;
/// Longest reply line the CLI accepts (an `out` line carries a value of up to 4 MiB, escaped).
const MAX_REPLY: usize = 64 * 1024 * 1024;
/// Clients served at once.
const MAX_CLIENTS: usize = 64;
/// How long a connection may wait between requests.
const IDLE: Duration = Duration::from_secs(300);

/// The socket of the data directory `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("run").join("serve.sock")
}

/// One line read with a bound.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line, without its `\n` (the last one may lack it).
    Text(Vec<u8>),
    /// Longer than the bound (consumed up to the bound only).
    TooLong,
    /// The other side closed the connection.
    End,
}

/// Reads a line of at most `max` bytes without ever buffering more than that.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() {
                Line::End
            } else {
                Line::Text(line)
            });
        }
        let (take, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, i + 1, true),
            None => (buf.len(), buf.len(), false),
        };
        if line.len() + take > max {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(buf.get(..take).unwrap_or_default());
        r.consume(used);
        if done {
            return Ok(Line::Text(line));
        }
    }
}

fn event_json(e: Event) -> Value {
    match e {
        Event::Out(s) => json!({ "out": s }),
        Event::Note(s) => json!({ "err": s }),
        Event::Progress { done, total } => json!({"progress": {"done": done, "total": total}}),
    }
}

/// Runs `cmd` through the `serve` that answers on the socket of `dir`, showing its events
/// with `show`. `Ok(None)`: no `serve` answers there.
#[cfg(unix)]
pub async fn call(
    dir: &Path,
    cmd: &BeeCommand,
    mut show: impl FnMut(Event),
) -> Result<Option<Value>> {
    let Ok(sock) = tokio::net::UnixStream::connect(socket_path(dir)).await else {
        return Ok(None);
    };
    let mut req = serde_json::to_vec(cmd).map_err(|e| Error::Control(e.to_string()))?;
    if req.len() > MAX_REQUEST {
        return Err(Error::BadInput(format!(
            "this command is {} bytes, more than `serve` takes ({MAX_REQUEST})",
            req.len()
        )));
    }
    req.push(b'\n');
    let (rd, mut wr) = sock.into_split();
    let lost = |e: std::io::Error| Error::Control(format!("talking to serve: {e}"));
    wr.write_all(&req).await.map_err(lost)?;
    let mut rd = tokio::io::BufReader::new(rd);
    loop {
        let line = match read_line(&mut rd, MAX_REPLY).await.map_err(lost)? {
            Line::Text(l) => l,
            Line::TooLong => return Err(Error::Control("serve sent an overlong line".into())),
            Line::End => {
                return Err(Error::Control(
                    "serve closed the connection before it answered; the command may or may \
                     not have run"
                        .into(),
                ))
            }
        };
        let v: Value = serde_json::from_slice(&line)
            .map_err(|e| Error::Control(format!("serve sent a line that is not JSON: {e}")))?;
        if let Some(ok) = v.get("ok") {
            return Ok(Some(ok.clone()));
        }
        if let Some(err) = v.get("error") {
            let field = |f: &str| err.get(f).and_then(Value::as_str).unwrap_or_default();
            return Err(Error::Relayed {
                code: field("code").to_owned(),
                message: field("message").to_owned(),
            });
        }
        let event = if let Some(s) = v.get("out").and_then(Value::as_str) {
            Event::Out(s.to_owned())
        } else if let Some(s) = v.get("err").and_then(Value::as_str) {
            Event::Note(s.to_owned())
        } else if let Some(p) = v.get("progress") {
            let n = |f: &str| p.get(f).and_then(Value::as_u64).unwrap_or(0);
            Event::Progress {
                done: n("done"),
                total: n("total"),
            }
        } else {
            return Err(Error::Control(format!("serve sent an unknown line: {v}")));
        };
        show(event);
    }
}

/// Without unix sockets there is no control channel: the data directory stays busy.
#[cfg(not(unix))]
pub async fn call(
    _dir: &Path,
    _cmd: &BeeCommand,
    _show: impl FnMut(Event),
) -> Result<Option<Value>> {
    Ok(None)
}

/// The listening control socket of a `serve`.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ControlSocket {
    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops it: clients are cut off (the accept task owns their tasks) and the file removed.
    pub fn close(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Makes `<dir>/run` (mode 0700) and listens on its socket, serving `bees`.
#[cfg(unix)]
pub async fn listen(bees: Arc<Bees>, dir: &Path) -> Result<ControlSocket> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let path = socket_path(dir);
    let run = dir.join("run");
    if !run.is_dir() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&run)
            .map_err(|e| Error::io(&run, e))?;
    }
    // An existing directory may have been made looser by hand.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(&run, e))?;
    if std::fs::symlink_metadata(&path).is_ok() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            return Err(Error::Control(format!(
                "{} answers already: another serve uses this data directory",
                path.display()
            )));
        }
        // Left by a serve that was killed: nobody answers on it.
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(|e| Error::io(&path, e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(&path, e))?;
    let span = tracing::info_span!("control");
    let task = tokio::spawn(tracing::Instrument::instrument(
        accept_loop(listener, bees),
        span,
    ));
    Ok(ControlSocket { path, task })
}

/// Without unix sockets, `serve` runs without a control channel.
#[cfg(not(unix))]
pub async fn listen(_bees: Arc<Bees>, _dir: &Path) -> Result<ControlSocket> {
    Err(Error::Control("control sockets need a unix system".into()))
}

#[cfg(unix)]
async fn accept_loop(listener: tokio::net::UnixListener, bees: Arc<Bees>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    // Owned here, so aborting this task aborts every client task too.
    let mut clients = tokio::task::JoinSet::new();
    loop {
        let sock = tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // Reap finished clients so the set does not grow.
            Some(_) = clients.join_next(), if !clients.is_empty() => continue,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let (_, mut wr) = sock.into_split();
            let line = format!(
                "{}\n",
                error_json("busy", "too many control connections; try again")
            );
            let _ = wr.write_all(line.as_bytes()).await;
            continue;
        };
        let bees = bees.clone();
        clients.spawn(async move {
            let _slot = slot;
            if let Err(e) = client(sock, &bees).await {
                tracing::debug!("control client: {e}");
            }
        });
    }
}

/// Serves one client: requests one at a time until it closes, idles or misbehaves.
#[cfg(unix)]
async fn client(sock: tokio::net::UnixStream, bees: &Bees) -> std::io::Result<()> {
    let (rd, wr) = sock.into_split();
    let mut rd = tokio::io::BufReader::new(rd);
    let mut wr = tokio::io::BufWriter::new(wr);
    loop {
        let line = match tokio::time::timeout(IDLE, read_line(&mut rd, MAX_REQUEST)).await {
            Err(_) | Ok(Ok(Line::End)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Line::TooLong)) => {
                let msg = format!("request longer than {MAX_REQUEST} bytes");
                return send(&mut wr, &error_json("too_long", &msg)).await;
            }
            Ok(Ok(Line::Text(l))) => l,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = match serde_json::from_slice::<BeeCommand>(&line) {
            Err(e) => error_json("bad_request", &format!("not a request: {e}")),
            Ok(cmd) if cmd.file().is_some_and(Path::is_relative) => error_json(
                "bad_request",
                "file paths must be absolute: serve does not know the client's directory",
            ),
            Ok(cmd) => match execute(cmd, bees, &mut wr).await? {
                Ok(v) => json!({ "ok": v }),
                Err(e) => e.to_json(),
            },
        };
        send(&mut wr, &reply).await?;
    }
}

/// Runs one command, writing its events as they come; the outer error is the connection's.
#[cfg(unix)]
async fn execute<W: tokio::io::AsyncWrite + Unpin>(
    cmd: BeeCommand,
    bees: &Bees,
    wr: &mut tokio::io::BufWriter<W>,
) -> std::io::Result<Result<Value>> {
    let (sink, mut rx) = Sink::channel();
    let work = async move { commands::run(bees, cmd, &sink).await };
    let forward = async {
        let mut written = Ok(());
        while let Some(e) = rx.recv().await {
            written = wr
                .write_all(format!("{}\n", event_json(e)).as_bytes())
                .await;
            // Flush when the command has nothing more queued: whole batches, few syscalls.
            if written.is_ok() && rx.is_empty() {
                written = wr.flush().await;
            }
            if written.is_err() {
                break;
            }
        }
        // After a write error, the command's next event fails, which stops it.
        rx.close();
        written
    };
    let (r, w) = tokio::join!(work, forward);
    w.map(|()| r)
}

#[cfg(unix)]
async fn send<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut tokio::io::BufWriter<W>,
    v: &Value,
) -> std::io::Result<()> {
    wr.write_all(format!("{v}\n").as_bytes()).await?;
    wr.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut r: &[u8] = b"abc\n\nlonger than ten\nlast";
        assert_eq!(
            read_line(&mut r, 10).await.unwrap(),
            Line::Text(b"abc".to_vec())
        );
        assert_eq!(read_line(&mut r, 10).await.unwrap(), Line::Text(Vec::new()));
        assert_eq!(read_line(&mut r, 10).await.unwrap(), Line::TooLong);
        let mut r: &[u8] = b"last";
        assert_eq!(
            read_line(&mut r, 10).await.unwrap(),
            Line::Text(b"last".to_vec())
        );
        assert_eq!(read_line(&mut r, 10).await.unwrap(), Line::End);
    }
}
