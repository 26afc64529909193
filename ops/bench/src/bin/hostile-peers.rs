//! Hostile peers at a replication port, for ops/load/run-hostile-peers.sh (issue 10, item 4):
//!
//! - `trickle`: each connection claims a 16 MiB frame as its first Noise message, then sends
//!   one byte a second (memory must grow only with what arrives; the handshake times out);
//! - `flood`: each connection completes the handshake and sends messages of 16 MiB (valid
//!   protomux frames for a channel nobody opened) as fast as it can, never reading;
//! - `idle`: plain TCP connections that send nothing.
//!
//! It runs for `--seconds`, reopening connections the target closes, and prints one JSON
//! line: connections opened, closed by the target, refused, bytes sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary_bench::{run_main, BoxError};
use apiary_core::crypto::KeyPair;
use apiary_core::wire::{mux, secret_stream};
use clap::Parser;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Parser)]
struct Args {
    /// The replication address.
    #[arg(long)]
    target: String,
    /// trickle, flood or idle.
    #[arg(long)]
    mode: String,
    /// Connections held at once.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// How long.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Source address of the connections.
    #[arg(long, default_value = "127.0.0.3")]
    source: String,
}

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    closed: AtomicU64,
    refused: AtomicU64,
    sent: AtomicU64,
}

async fn connect(a: &Args) -> Option<TcpStream> {
    let s = TcpSocket::new_v4().ok()?;
    s.bind(format!("{}:0", a.source).parse().ok()?).ok()?;
    s.connect(a.target.parse().ok()?).await.ok()
}

/// Whether the peer closed `sock` (a read returns 0 or fails) within `d`.
async fn closed_within(sock: &mut TcpStream, d: Duration) -> bool {
    let mut b = [0u8; 4096];
    matches!(
        tokio::time::timeout(d, sock.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn one(a: Arc<Args>, c: Arc<Counts>, until: Instant) {
    while Instant::now() < until {
        let Some(mut sock) = connect(&a).await else {
            c.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        c.opened.fetch_add(1, Ordering::Relaxed);
        match a.mode.as_str() {
            "trickle" => {
                // A uint24le length of 16 MiB - 1, then a byte a second.
                if sock.write_all(&[0xff, 0xff, 0xff]).await.is_ok() {
                    c.sent.fetch_add(3, Ordering::Relaxed);
                    while Instant::now() < until {
                        if sock.write_all(&[0x42]).await.is_err()
                            || closed_within(&mut sock, Duration::from_secs(1)).await
                        {
                            break;
                        }
                        c.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            "flood" => {
                if let Ok(s) = secret_stream(sock, true, KeyPair::generate(), "target".into()).await
                {
                    let msg = mux::encode_message(999, 0, &vec![0u8; (16 << 20) - 64]);
                    while Instant::now() < until {
                        match tokio::time::timeout(
                            Duration::from_secs(5),
                            s.outgoing.send(msg.clone()),
                        )
                        .await
                        {
                            Ok(Ok(())) => {
                                c.sent.fetch_add(msg.len() as u64, Ordering::Relaxed);
                            }
                            Ok(Err(_)) => break, // the session ended
                            Err(_) => continue,  // held back: keep pushing
                        }
                    }
                }
                c.closed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            _ => {
                while Instant::now() < until {
                    if closed_within(&mut sock, Duration::from_secs(1)).await {
                        break;
                    }
                }
            }
        }
        if Instant::now() < until {
            c.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() {
    let a = Arc::new(Args::parse());
    run_main("hostile-peers", Some(2), || async move {
        let c = Arc::new(Counts::default());
        let until = Instant::now() + Duration::from_secs(a.seconds);
        let tasks: Vec<_> = (0..a.count)
            .map(|_| tokio::spawn(one(a.clone(), c.clone(), until)))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        Ok::<_, BoxError>(json!({
            "mode": a.mode,
            "count": a.count,
            "opened": c.opened.load(Ordering::Relaxed),
            "closedByTarget": c.closed.load(Ordering::Relaxed),
            "refused": c.refused.load(Ordering::Relaxed),
            "bytesSent": c.sent.load(Ordering::Relaxed),
        }))
    })
}
