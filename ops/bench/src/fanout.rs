//! Many live-stream subscribers in one process (`agg-client live --subscribers N`): raw
//! HTTP/1.1 connections to `/v1/stream`, each counting its entry events and the latency of
//! each (CLOCK_MONOTONIC at read minus the writer's `pubNs` in the value).
//!
//! A subscriber finds `"pubNs":` by a byte search instead of parsing each event's JSON: with
//! 10,000 subscribers and a post every 10 ms the client reads a million events a second on the
//! same two cores as the server, and a parsing client would measure itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use memchr::memmem::Finder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::sys::monotonic_ns;
use crate::BoxError;

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Latency of each entry event, µs.
    pub micros: Vec<u32>,
    /// `lagged` events (the server dropped this subscriber as too slow).
    pub lagged: u64,
    /// Whether it stopped on the idle timeout or a closed connection before `count`.
    pub cut_short: bool,
}

/// Opens `n` subscriptions to `path` on `addr` (at most 256 connecting at a time) and
/// returns once each is answered (200) or failed: the number answered, and a handle per
/// subscriber that reads until `count` entry events or `idle` without one.
pub async fn subscribe(
    addr: SocketAddr,
    path: &str,
    n: usize,
    count: usize,
    idle: Duration,
) -> (usize, Vec<tokio::task::JoinHandle<Seen>>) {
    let gate = Arc::new(Semaphore::new(256));
    let mut opening = Vec::with_capacity(n);
    for _ in 0..n {
        let gate = gate.clone();
        let path = path.to_owned();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            open(addr, &path).await.ok()
        }));
    }
    let mut readers = Vec::with_capacity(n);
    for o in opening {
        if let Ok(Some((stream, buf))) = o.await {
            readers.push(tokio::spawn(read(stream, buf, count, idle)));
        }
    }
    (readers.len(), readers)
}

/// Connects and sends the request; returns the stream and what was read past the head.
async fn open(addr: SocketAddr, path: &str) -> Result<(TcpStream, Vec<u8>), BoxError> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(4096);
    let end = Finder::new(b"\r\n\r\n");
    loop {
        let mut chunk = [0u8; 4096];
        let k = tokio::time::timeout(Duration::from_secs(60), s.read(&mut chunk)).await??;
        if k == 0 {
            return Err("closed before the response head".into());
        }
        buf.extend_from_slice(&chunk[..k]);
        if let Some(i) = end.find(&buf) {
            if !buf.starts_with(b"HTTP/1.1 200") {
                return Err(format!("not 200: {}", String::from_utf8_lossy(&buf[..i])).into());
            }
            return Ok((s, buf.split_off(i + 4)));
        }
    }
}

async fn read(mut s: TcpStream, mut buf: Vec<u8>, count: usize, idle: Duration) -> Seen {
    let pub_ns = Finder::new(b"\"pubNs\":");
    let lagged = Finder::new(b"event: lagged");
    let mut seen = Seen::default();
    let mut chunk = vec![0u8; 64 * 1024];
    // One timer per subscriber, moved on only when it fires: resetting a timer on every read
    // of 10,000 subscribers would cost the client more than the reads.
    let mut last_read = tokio::time::Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        let now = monotonic_ns();
        // Complete events only: up to the last blank line (chunk framing sits between them).
        let upto = buf
            .windows(2)
            .rposition(|w| w == b"\n\n")
            .map_or(0, |i| i + 2);
        let mut at = 0;
        while let Some(i) = pub_ns.find(&buf[at..upto]) {
            let start = at + i + 8;
            let digits: Vec<u8> = buf[start..upto]
                .iter()
                .skip_while(|b| **b == b'"' || **b == b' ')
                .take_while(|b| b.is_ascii_digit())
                .copied()
                .collect();
            if let Some(p) = std::str::from_utf8(&digits)
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
            {
                let us = now.saturating_sub(p) / 1000;
                seen.micros.push(us.min(u64::from(u32::MAX)) as u32);
            }
            at = start;
        }
        seen.lagged += lagged.find_iter(&buf[..upto]).count() as u64;
        buf.drain(..upto);
        if seen.micros.len() >= count || seen.lagged > 0 {
            seen.cut_short = seen.micros.len() < count;
            return seen;
        }
        let read = loop {
            tokio::select! {
                r = s.read(&mut chunk) => break r,
                () = &mut idle_timer => {
                    if last_read.elapsed() >= idle {
                        seen.cut_short = true;
                        return seen;
                    }
                    idle_timer.as_mut().reset(last_read + idle);
                }
            }
        };
        match read {
            Ok(k) if k > 0 => {
                last_read = tokio::time::Instant::now();
                buf.extend_from_slice(&chunk[..k]);
            }
            _ => {
                seen.cut_short = true;
                return seen;
            }
        }
    }
}
