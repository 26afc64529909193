//! What the connection task does with what the remote sends: protomux opens, rejects and
//! closes, and the hypercore messages of each channel.

use super::{Conn, Out, FLUSH_AT, MAX_INVALID_REQUESTS, PROTOCOL};
use crate::crypto;
use crate::error::{Error, Result};
use crate::id::DiscoveryKey;
use crate::wire::messages::{self, ChannelHandshake, Message, Request};
use crate::wire::mux::{self, MuxMessage};

impl Conn {
    /// Sends our sync (if it changed, or always when `force`) and any new contiguous range.
    pub(super) fn send_sync(&mut self, local: u64, force: bool) {
        let Some(ch) = self
            .channels
            .get_mut(&local)
            .filter(|c| c.remote_id.is_some())
        else {
            return;
        };
        let remote = *ch.remote.borrow();
        let sync = ch.replica.sync_for(&remote);
        let contiguous = ch.replica.contiguous_length();
        let send_sync = force || ch.last_sync.as_ref() != Some(&sync);
        let send_range = contiguous > ch.announced;
        ch.last_sync = Some(sync.clone());
        if send_range {
            ch.announced = contiguous;
        }
        if send_sync {
            self.send_msg(local, &Message::Sync(sync));
        }
        if send_range {
            self.send_msg(
                local,
                &Message::Range {
                    drop: false,
                    start: 0,
                    length: contiguous,
                },
            );
        }
    }

    /// Cancels our requests whose caller has given up.
    pub(super) fn cancel_abandoned(&mut self) {
        let mut cancels = Vec::new();
        for (local, ch) in self.channels.iter_mut() {
            ch.inflight.retain(|id, p| {
                let keep = !p.reply.is_closed();
                if !keep {
                    cancels.push((*local, *id));
                }
                keep
            });
        }
        for (local, id) in cancels {
            self.send_msg(local, &Message::Cancel { request: id });
        }
    }

    pub(super) async fn on_frame(&mut self, frame: &[u8]) -> Result<()> {
        for m in mux::decode_frame(frame)? {
            match m {
                MuxMessage::Open {
                    remote_id,
                    protocol,
                    id,
                    handshake,
                } => self.on_open(remote_id, &protocol, id, &handshake)?,
                MuxMessage::Reject { local_id } => {
                    if self
                        .channels
                        .get(&local_id)
                        .is_some_and(|c| c.remote_id.is_none())
                    {
                        self.remove_channel(local_id);
                    }
                }
                MuxMessage::Close { remote_id } => {
                    if let Some(local) = self.by_remote.get(&remote_id).copied() {
                        self.remove_channel(local);
                    }
                }
                MuxMessage::Message {
                    remote_id,
                    ty,
                    payload,
                } => {
                    // Messages for channels we do not know are ignored, as protomux does.
                    if let Some(local) = self.by_remote.get(&remote_id).copied() {
                        if let Some(msg) = Message::decode(ty, &payload)? {
                            self.on_message(local, msg)?;
                        }
                    }
                }
            }
            if self.out_bytes >= FLUSH_AT {
                self.flush().await?;
            }
        }
        Ok(())
    }

    fn on_open(
        &mut self,
        remote_id: u64,
        protocol: &str,
        id: Option<Vec<u8>>,
        handshake: &[u8],
    ) -> Result<()> {
        if remote_id == 0 || self.by_remote.contains_key(&remote_id) {
            return Err(Error::protocol(format!(
                "invalid channel open (id {remote_id})"
            )));
        }
        let dk = id.as_deref().and_then(|b| DiscoveryKey::from_slice(b).ok());
        let (Some(dk), true) = (dk, protocol == PROTOCOL || protocol == "hypercore") else {
            self.push(Out::Frame(mux::encode_reject(remote_id)));
            return Ok(());
        };
        let local = match self.by_dk.get(&dk).copied() {
            Some(l) if self.channels.get(&l).is_some_and(|c| c.remote_id.is_none()) => l,
            Some(_) => return Err(Error::protocol("second open for one core")),
            None => match self.registry.get(&dk) {
                Some(r) => self.open_channel(&r),
                None => {
                    self.push(Out::Frame(mux::encode_reject(remote_id)));
                    return Ok(());
                }
            },
        };
        let hs = ChannelHandshake::decode(handshake)?;
        let Some(ch) = self.channels.get_mut(&local) else {
            return Ok(());
        };
        let expected = crypto::capability(
            !self.info.is_initiator,
            ch.replica.key().as_bytes(),
            &self.info.handshake_hash,
        );
        if hs.capability != expected {
            return Err(Error::protocol(format!(
                "remote sent a wrong capability for core {}",
                ch.replica.key()
            )));
        }
        ch.remote_id = Some(remote_id);
        self.by_remote.insert(remote_id, local);
        let (replica, peer) = (ch.replica.clone(), ch.peer.clone());
        replica.add_peer(peer);
        self.send_sync(local, true);
        Ok(())
    }

    fn on_message(&mut self, local: u64, msg: Message) -> Result<()> {
        let Some(ch) = self.channels.get_mut(&local) else {
            return Ok(());
        };
        match msg {
            Message::Sync(s) => {
                ch.remote.send_modify(|r| {
                    if r.fork != s.fork {
                        r.contiguous = 0;
                    }
                    r.fork = s.fork;
                    r.length = s.length;
                    r.has_manifest = s.has_manifest;
                    r.downloading = s.downloading;
                });
                let replica = ch.replica.clone();
                replica.on_peer_update();
                self.send_sync(local, false);
            }
            Message::Request(r) => self.serve(local, r)?,
            Message::Cancel { .. } => {} // we answer at once; nothing to cancel
            Message::Data(d) => {
                if let Some(p) = ch.inflight.remove(&d.request) {
                    p.reply.send(Ok(*d));
                }
            }
            Message::NoData { request, .. } => {
                // Named by the request it answers: the error says which block that was for.
                if let Some(p) = ch.inflight.remove(&request) {
                    p.reply.send(Err(Error::NotAvailable { seq: p.seq }));
                }
            }
            Message::Range {
                drop: dropped,
                start,
                length,
            } => {
                ch.remote.send_modify(|r| {
                    if !dropped && start <= r.contiguous {
                        r.contiguous = r.contiguous.max(start.saturating_add(length));
                    } else if dropped && start < r.contiguous {
                        r.contiguous = start;
                    }
                });
                ch.replica.on_peer_update();
            }
            Message::Want { .. } => {
                // Tell the peer what we hold from the start; finer availability is not tracked.
                let contiguous = ch.replica.contiguous_length();
                if contiguous > 0 {
                    ch.announced = ch.announced.max(contiguous);
                    self.send_msg(
                        local,
                        &Message::Range {
                            drop: false,
                            start: 0,
                            length: contiguous,
                        },
                    );
                }
            }
            Message::Unwant { .. } | Message::Bitfield { .. } | Message::Extension { .. } => {}
        }
        Ok(())
    }

    /// Answers a request of the remote ([`Replica::answer`](crate::replicate::Replica::answer));
    /// too many invalid ones end the connection.
    fn serve(&mut self, local: u64, r: Request) -> Result<()> {
        let Some(ch) = self.channels.get(&local) else {
            return Ok(());
        };
        let reply = ch.replica.answer(&r)?;
        if let Message::NoData {
            reason: messages::INVALID_REQUEST,
            ..
        } = reply
        {
            self.invalid += 1;
            if self.invalid > MAX_INVALID_REQUESTS {
                return Err(Error::protocol("too many invalid requests"));
            }
        }
        self.send_msg(local, &reply);
        Ok(())
    }
}
