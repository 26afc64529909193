//! A misbehaving replication server for adversarial tests. It speaks the real protocol
//! (Noise, secretstream, protomux, hypercore messages) for a real core written by our own
//! writer, and breaks it in one chosen way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use apiary_core::crypto::{self, KeyPair};
use apiary_core::manifest::Verifier;
use apiary_core::merkle::{generate_proof, ProofRequest};
use apiary_core::replicate::Replica;
use apiary_core::wire::messages::{ChannelHandshake, Data, Message, Sync};
use apiary_core::wire::mux::{self, MuxMessage};
use apiary_core::wire::secret_stream;
use tokio::net::TcpListener;

/// How the server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evil {
    /// Sends bytes that are not a protomux frame after the handshake.
    Garbage,
    /// Opens the channel with a capability that does not prove the core key.
    WrongCapability,
    /// Flips a byte of every block it sends.
    BadProof,
    /// Flips a byte of the signature.
    BadSignature,
    /// Signs with a key pair that is not the core's.
    ForeignSignature,
    /// Announces a new fork it cannot sign.
    UnsignedFork,
    /// Announces its length and then never answers.
    Silent,
    /// Announces a length far past the real one (a sync is only a claim) and never answers.
    Overclaim,
}

/// A running evil server.
#[derive(Debug)]
pub struct EvilServer {
    /// Its loopback address.
    pub addr: String,
    counts: Arc<Counts>,
}

/// What an evil server saw and did, over all its sessions.
#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    ignored: AtomicU64,
}

impl EvilServer {
    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Requests left unanswered on purpose so far ([`Evil::Silent`], [`Evil::Overclaim`]).
    pub fn ignored(&self) -> u64 {
        self.counts.ignored.load(Ordering::SeqCst)
    }
}

/// Serves `core` on a fresh loopback port, misbehaving as `evil`.
pub async fn serve(core: Arc<Replica>, evil: Evil) -> EvilServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (core, c) = (core.clone(), c.clone());
            tokio::spawn(async move {
                let _ = session(sock, core, evil, &c).await;
            });
        }
    });
    EvilServer { addr, counts }
}

async fn session(
    sock: tokio::net::TcpStream,
    core: Arc<Replica>,
    evil: Evil,
    counts: &Counts,
) -> Option<()> {
    let mut s = secret_stream(sock, false, KeyPair::generate(), "victim".into())
        .await
        .ok()?;
    let hash = s.info.handshake_hash;
    if evil == Evil::Garbage {
        s.outgoing.send(vec![0, 1, 0xff, 0xff, 0xff]).await.ok()?;
        s.outgoing.send(vec![0xde, 0xad, 0xbe, 0xef]).await.ok()?;
    }
    let head = core.head();
    let fork = if evil == Evil::UnsignedFork {
        head.fork + 1
    } else {
        head.fork
    };
    while let Some(Ok(frame)) = s.incoming.recv().await {
        for m in mux::decode_frame(&frame).ok()? {
            match m {
                MuxMessage::Open { remote_id, .. } => {
                    let capability = if evil == Evil::WrongCapability {
                        [7u8; 32]
                    } else {
                        crypto::capability(false, core.key().as_bytes(), &hash)
                    };
                    let hs = ChannelHandshake {
                        seeks: false,
                        capability,
                    }
                    .encode();
                    let open = mux::encode_open(
                        1,
                        "hypercore/alpha",
                        Some(core.discovery_key().as_bytes()),
                        &hs,
                    );
                    s.outgoing.send(open).await.ok()?;
                    let sync = Message::Sync(Sync {
                        can_upgrade: true,
                        uploading: true,
                        has_manifest: true,
                        fork,
                        length: if evil == Evil::Overclaim {
                            head.length + 1_000_000
                        } else {
                            head.length
                        },
                        ..Sync::default()
                    });
                    s.outgoing
                        .send(mux::encode_message(1, 0, &sync.encode()))
                        .await
                        .ok()?;
                    let _ = remote_id;
                }
                MuxMessage::Message { ty, payload, .. } => {
                    let Ok(Some(Message::Request(r))) = Message::decode(ty, &payload) else {
                        continue;
                    };
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    if matches!(evil, Evil::Silent | Evil::Overclaim) {
                        counts.ignored.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    let store = core.store();
                    let value = r
                        .block
                        .and_then(|(i, _)| store.block(i).ok().flatten())
                        .map(|v| v.to_vec());
                    let req = ProofRequest {
                        block: r.block,
                        hash: r.hash,
                        upgrade: r.upgrade,
                    };
                    let Ok(mut proof) = generate_proof(&head, &req, value, |i| store.node(i))
                    else {
                        continue;
                    };
                    match evil {
                        Evil::BadProof => {
                            if let Some(b) = proof.block.as_mut() {
                                b.value.push(b'!');
                            }
                        }
                        Evil::BadSignature => {
                            if let Some(sig) =
                                proof.upgrade.as_mut().and_then(|u| u.signature.as_mut())
                            {
                                if let Some(x) = sig.get_mut(20) {
                                    *x ^= 1;
                                }
                            }
                        }
                        Evil::ForeignSignature => {
                            // A real signature of the right tree, by a key that is not the core's.
                            if let Some(u) = proof.upgrade.as_mut() {
                                let v = Verifier::new(*core.key(), core.manifest()).unwrap();
                                let other = KeyPair::generate();
                                let sig = other.sign(&v.signable(
                                    &head.tree_hash(),
                                    head.length,
                                    head.fork,
                                ));
                                let mut w = vec![1u8, 0];
                                w.extend_from_slice(&sig);
                                w.extend_from_slice(&[0, 0]);
                                u.signature = Some(w);
                            }
                        }
                        Evil::UnsignedFork => proof.fork = fork,
                        _ => {}
                    }
                    let data = Message::Data(Box::new(Data {
                        request: r.id,
                        proof,
                        manifest: if r.manifest { core.manifest() } else { None },
                    }));
                    s.outgoing
                        .send(mux::encode_message(1, 3, &data.encode()))
                        .await
                        .ok()?;
                }
                _ => {}
            }
        }
    }
    Some(())
}
