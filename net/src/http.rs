//! Serving an axum router over a [`GatedListener`], HTTP/1.1, with the timeouts that
//! `axum::serve` lacks:
//! - the request head must arrive within `header_timeout` (hyper's header-read timer; it
//!   also runs while a keep-alive connection waits for its next request, so an idle or
//!   half-open connection is closed too);
//! - a response write that makes no progress for `write_timeout` ends the connection (a
//!   client that stops reading, e.g. a stalled `/v1/stream` subscriber, is dropped).
//!
//! Each request gets the client address as axum's `ConnectInfo<SocketAddr>`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tower::ServiceExt;
use tracing::Instrument;

use crate::listen::GatedListener;

/// Timeouts of an HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// For the request head (and for an idle keep-alive connection).
    pub header: Duration,
    /// For a stalled response write.
    pub write: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            header: Duration::from_secs(10),
            write: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until the task is aborted.
pub fn serve(
    mut listener: GatedListener,
    router: Router,
    timeouts: HttpTimeouts,
) -> tokio::task::JoinHandle<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true);
    let span = match listener.local_addr() {
        Ok(addr) => tracing::info_span!("http", %addr),
        Err(_) => tracing::info_span!("http"),
    };
    tokio::spawn(
        async move {
            loop {
                let (sock, peer, permit) = listener.accept().await;
                let svc = router.clone().map_request(
                    move |mut r: axum::http::Request<hyper::body::Incoming>| {
                        r.extensions_mut().insert(ConnectInfo(peer));
                        r
                    },
                );
                let conn = builder.serve_connection(
                    TokioIo::new(WriteStall::new(sock, timeouts.write)),
                    TowerToHyperService::new(svc),
                );
                tokio::spawn(
                    async move {
                        let _permit = permit; // the connection's place, until it ends
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, "http connection ended: {e}");
                        }
                    }
                    .in_current_span(),
                );
            }
        }
        .instrument(span),
    )
}

/// A socket whose writes fail once they have made no progress for a while.
struct WriteStall {
    io: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteStall {
    fn new(io: TcpStream, limit: Duration) -> Self {
        WriteStall {
            io,
            limit,
            stalled: None,
        }
    }

    /// On `Pending`, arms (or checks) the stall timer; on progress, disarms it.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.stalled = None;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for WriteStall {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteStall {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
