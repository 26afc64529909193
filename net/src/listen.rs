//! A TCP listener with a backlog sized for bursts, whose accept loop survives running out of
//! file descriptors (it waits and goes on; the caps of its [`Gate`] keep that from happening
//! in the first place) and closes connections over the caps at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::gate::{Gate, Permit};

/// Pending connections the kernel may queue (Linux caps it at `net.core.somaxconn`).
pub const BACKLOG: u32 = 4096;

/// Binds `addr` with [`BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(BACKLOG)
}

/// A listener behind a gate.
#[derive(Debug)]
pub struct GatedListener {
    listener: TcpListener,
    gate: Arc<Gate>,
    last_error_log: Option<Instant>,
}

impl GatedListener {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener, gate: Arc<Gate>) -> Self {
        GatedListener {
            listener,
            gate,
            last_error_log: None,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The gate.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// The next admitted connection. Connections over a cap are closed here; accept errors
    /// (EMFILE and the like) are logged at most every 10 s and waited out.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Permit) {
        loop {
            match self.listener.accept().await {
                Ok((sock, peer)) => match self.gate.admit(peer.ip()) {
                    Ok(p) => {
                        let _ = sock.set_nodelay(true);
                        return (sock, peer, p);
                    }
                    // Closed before reading a byte: costs the attacker more than us.
                    Err(_) => drop(sock),
                },
                Err(e) => {
                    let now = Instant::now();
                    if self
                        .last_error_log
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                    {
                        self.last_error_log = Some(now);
                        tracing::warn!(listener = self.gate.name(), "accept failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
