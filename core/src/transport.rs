//! Carriers: where [`FramedSession`]s come from. Replication (`replicate`) runs on a session
//! and never on a socket; this module is where sockets are.
//!
//! Here: TCP. [`dial`] and [`accept`] run the Noise handshake of `wire::stream` over one
//! socket (as initiator and as responder); [`listen`] accepts on an address and hands every
//! session that completes its handshake to a callback. The DHT carrier (`apiary-swarm`) yields
//! the same sessions from hyperswarm connections; `apiary-net` accepts through a gated
//! listener and calls [`accept`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::crypto::KeyPair;
use crate::error::{Error, Result};
use crate::wire::stream::HANDSHAKE_TIMEOUT;
use crate::wire::{secret_stream, FramedSession};

/// Dials `addr` over TCP (within the handshake timeout) and runs the Noise handshake as
/// initiator with `identity`.
pub async fn dial(addr: &str, identity: &KeyPair) -> Result<FramedSession> {
    let sock = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("connecting to {addr}"),
        })??;
    let _ = sock.set_nodelay(true);
    secret_stream(sock, true, identity.clone(), addr.to_owned()).await
}

/// Runs the Noise handshake as responder with `identity` on an accepted socket; `label` names
/// the remote in logs and status (its address).
pub async fn accept(sock: TcpStream, identity: &KeyPair, label: String) -> Result<FramedSession> {
    let _ = sock.set_nodelay(true);
    secret_stream(sock, false, identity.clone(), label).await
}

/// Listens on `addr` and passes every session whose handshake (as responder) succeeds to
/// `on_session`, with no caps: for tests and tools. Returns the bound address and the accept
/// loop, which runs until the task is aborted (that closes the listening socket; sessions
/// already made go on). Handshakes run in tasks of their own, so a slow one holds up nobody.
pub async fn listen<F>(
    addr: &str,
    identity: KeyPair,
    on_session: F,
) -> Result<(SocketAddr, JoinHandle<()>)>
where
    F: Fn(FramedSession) + Send + Sync + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let on_session = Arc::new(on_session);
    let task = tokio::spawn(
        async move {
            loop {
                let (sock, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let identity = identity.clone();
                let on_session = on_session.clone();
                tokio::spawn(
                    async move {
                        match accept(sock, &identity, peer.to_string()).await {
                            Ok(session) => on_session(session),
                            Err(e) => tracing::info!(%peer, "handshake failed: {e}"),
                        }
                    }
                    .in_current_span(),
                );
            }
        }
        .instrument(tracing::info_span!("listen", addr = %local)),
    );
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dial_and_listen_make_two_ends_of_one_session() {
        let (server, client) = (KeyPair::generate(), KeyPair::generate());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (addr, task) = listen("127.0.0.1:0", server.clone(), move |s| {
            let _ = tx.send(s);
        })
        .await
        .unwrap();
        let a = dial(&addr.to_string(), &client).await.unwrap();
        let mut b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.info.handshake_hash, b.info.handshake_hash);
        assert!(a.info.is_initiator && !b.info.is_initiator);
        assert_eq!(a.info.remote_public_key, server.public_key());
        assert_eq!(b.info.remote_public_key, client.public_key());
        a.outgoing.send(b"hello".to_vec()).await.unwrap();
        assert_eq!(b.incoming.recv().await.unwrap().unwrap(), b"hello");

        // Aborting the accept loop closes the listening socket.
        task.abort();
        let _ = task.await;
        assert!(dial(&addr.to_string(), &client).await.is_err());
    }
}
