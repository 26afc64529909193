//! The replication port behind a gate: each admitted socket runs the Noise handshake (which
//! has its own timeout) and replicates; its place is held until the connection ends.

use apiary_core::replicate::Replicator;
use tracing::Instrument;

use crate::listen::GatedListener;

/// Accepts replication connections on `listener` until the task is aborted.
pub fn serve(mut listener: GatedListener, rep: Replicator) -> tokio::task::JoinHandle<()> {
    let span = match listener.local_addr() {
        Ok(addr) => tracing::info_span!("replication", %addr),
        Err(_) => tracing::info_span!("replication"),
    };
    tokio::spawn(
        async move {
            loop {
                let (sock, peer, permit) = listener.accept().await;
                let rep = rep.clone();
                tokio::spawn(
                    async move {
                        match rep.accept(sock, peer.to_string()).await {
                            Ok(conn) => {
                                let _ = conn.closed().await;
                            }
                            Err(e) => tracing::info!(%peer, "handshake failed: {e}"),
                        }
                        drop(permit);
                    }
                    .in_current_span(),
                );
            }
        }
        .instrument(span),
    )
}
