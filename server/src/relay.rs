//! Relaying clients from a cluster node that does not lead to the node that does.
//!
//! A follower runs a client's handshake itself (TLS too, with its own certificate;
//! the key with its own `[users]`), then opens a relay to the leader over the peer
//! link, which the cluster key authenticates, saying who the client is
//! ([`RelayOpening`]), and carries the client's frames both ways ([`follow`]). The
//! leader serves a relay as it serves a direct client ([`Acceptor`]): the same
//! dialects, sessions and rules.
//!
//! What a leader change does to a relayed client:
//!
//! - **A native client** is relayed byte for byte. When the leader goes, its
//!   connection closes, and the client reconnects and resumes its session itself.
//! - **A CPython client** cannot reconnect (a proxy keeps its connection for good), so
//!   the follower keeps the client's connection and carries its session across: the
//!   session on the leader is resumable, and when the relay breaks the follower opens
//!   one to the next leader (within the heartbeat timeout, while a new leader's
//!   takeover keeps the session detached) and resumes it. The client notices nothing,
//!   unless a request was under way: whether it took effect is unknown, and the old
//!   leader may have granted it something (a lock, an item) whose answer was lost, so
//!   that request gets an error, the old session is ended (which gives back whatever it
//!   held) and the connection goes on in a new one.
//!   A one-shot control connection (`create`, `incref`, …) is not carried across: it
//!   ends with its request.
//!
//! "The leader goes" means its relay breaks, or Raft tells this node that another node
//! leads: a leader that is paused or cut off closes nothing, and its relays would wait
//! for it otherwise.
//!
//! This module owns the relay on both sides; it reaches sessions through [`Shared`]
//! and the dialects' entry points, the peer link through [`crate::cluster`], and no
//! object.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use agora_proto::frame;
use agora_proto::io::read_frame;
use agora_proto::native::Previous;
use agora_proto::{Address, ErrorCode, WireError};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Semaphore;

use crate::access::Who;
use crate::cluster::network::{PeerIo, RelayAcceptor, RelayOpening, RelayStream, RelayedSession};
use crate::cluster::{NodeId, OpenedRelay, Serving};
use crate::connection::is_python;
use crate::dialect;
use crate::listener::Transport;
use crate::server::Shared;

/// How often a relay that lost its leader asks for the next one.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// How long a client's first relay may take to open (a leader answers in
/// milliseconds; this is for one under load).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one attempt to take a session to the next leader may take: short, since a
/// node Raft still names leader may be paused, and the session waits for the relay
/// for only a heartbeat timeout.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(2);

// ---- the follower's side ----

/// Relays an authenticated client, whose `first` frame was read, to the leader, until
/// the client goes (or, for a CPython client, no leader takes its session back).
pub async fn follow<S: Transport>(
    mut client: S,
    cbuf: BytesMut,
    first: Bytes,
    peer: &str,
    who: Who,
    shared: Arc<Shared>,
    serving: Arc<Serving>,
) {
    let python = is_python(&first);
    let local = client.local_address();
    let address = local.as_ref().map(|local| shared.advertised(local).unwrap_or(local).to_string());
    let opening = RelayOpening {
        client: peer.to_owned(),
        user: who.user(&shared).map(|u| u.name.clone()),
        address,
        python,
        previous: None,
    };
    let opened = match serving.node().open_relay(&opening, OPEN_TIMEOUT).await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::info!(%peer, error = %e, "no leader to relay a client to; refusing it");
            let leading = crate::cluster::leadership::not_leading();
            let error = WireError::new(leading.code, format!("{} ({e})", leading.message));
            if python {
                dialect::python::refuse(&mut client, &error).await;
            } else {
                dialect::native::refuse(&mut client, error).await;
            }
            return;
        }
    };
    let relayed = async {
        match opened.session {
            Some(session) if python => {
                let persistent = dialect::python::opens_persistent(&first);
                let relay = PythonRelay { peer, shared: &shared, serving: &serving, opening, persistent };
                relay.run(client, cbuf, first, (opened.stream, opened.leader), session).await;
            }
            _ => relay_native(client, cbuf, first, opened, &serving, peer).await,
        }
    };
    // A node that stops closes its relays (the leader ends their sessions).
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        () = relayed => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// Carries a native client's bytes both ways until either side closes, or until the
/// leader is deposed: then the client, which knows how, reconnects and resumes.
async fn relay_native<S: Transport>(
    mut client: S,
    cbuf: BytesMut,
    first: Bytes,
    upstream: OpenedRelay,
    serving: &Serving,
    peer: &str,
) {
    let OpenedRelay { stream: RelayStream { stream: mut leader, buf: from_leader }, leader: leader_id, .. } = upstream;
    // What was read on either side and not yet passed on goes first.
    let mut to_leader = Vec::with_capacity(first.len() + cbuf.len() + 8);
    frame::encode(&first, &mut to_leader);
    to_leader.extend_from_slice(&cbuf);
    let result = async {
        leader.write_all(&to_leader).await?;
        client.write_all(&from_leader).await?;
        tokio::io::copy_bidirectional(&mut client, &mut leader).await
    };
    tokio::select! {
        result = result => if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "a relayed native connection ended");
        },
        () = serving.node().deposed(leader_id) => {
            tracing::info!(%peer, leader = leader_id, "the leader was deposed; closing a relayed native connection");
        }
    }
}

/// One CPython client's relay (see the module docs).
struct PythonRelay<'a> {
    peer: &'a str,
    shared: &'a Shared,
    serving: &'a Serving,
    /// What opens the next relay: its `previous` names the session to resume or end.
    opening: RelayOpening,
    /// A client thread's persistent connection (it opened with `accept_connection`),
    /// carried across leader changes; a one-shot control connection is not.
    persistent: bool,
}

impl PythonRelay<'_> {
    async fn run<S: Transport>(
        mut self,
        mut client: S,
        mut cbuf: BytesMut,
        first: Bytes,
        (upstream, mut leader_id): (RelayStream, NodeId),
        session: RelayedSession,
    ) {
        let max_frame = self.shared.config.limits.max_frame;
        let node = self.serving.node();
        let mut upstream = Some(upstream);
        self.carry(session);
        // A request read from the client and not yet sent.
        let mut request = Some(first);
        let mut out = Vec::with_capacity(4096);
        loop {
            let leader = match upstream.as_mut() {
                Some(leader) => leader,
                None if !self.persistent => return,
                None => {
                    let reconnected = tokio::select! {
                        reconnected = self.reconnect() => reconnected,
                        _ = peer_closed(&mut client, &mut cbuf) => return,
                    };
                    match reconnected {
                        Some((stream, leader)) => {
                            leader_id = leader;
                            upstream.insert(stream)
                        }
                        None => return,
                    }
                }
            };
            let body = match request.take() {
                Some(body) => body,
                None => {
                    // A leader that is paused or cut off closes nothing: its deposition
                    // is what tells.
                    let next = tokio::select! {
                        read = read_frame(&mut client, &mut cbuf, max_frame) => Some(read),
                        () = peer_closed(&mut leader.stream, &mut leader.buf) => None,
                        () = node.deposed(leader_id) => None,
                    };
                    match next {
                        Some(Ok(body)) => body,
                        // The client went (or broke the framing): the relay closes, and
                        // the leader ends the session as for a direct client.
                        Some(Err(agora_proto::io::FrameIoError::Closed)) => return,
                        Some(Err(e)) => {
                            tracing::info!(peer = %self.peer, error = %e, "a relayed CPython client's connection ended");
                            return;
                        }
                        None => {
                            tracing::info!(peer = %self.peer, "lost the leader while a CPython client was idle; taking its session to the next");
                            upstream = None;
                            continue;
                        }
                    }
                }
            };
            out.clear();
            frame::encode(&body, &mut out);
            let answered = async {
                leader.stream.write_all(&out).await.map_err(agora_proto::io::FrameIoError::from)?;
                read_frame(&mut leader.stream, &mut leader.buf, max_frame).await
            };
            let reply = tokio::select! {
                reply = answered => reply.map_err(|e| e.to_string()),
                () = node.deposed(leader_id) => Err(format!("node {leader_id} no longer leads")),
                () = peer_closed(&mut client, &mut cbuf) => return,
            };
            match reply {
                Ok(reply) => {
                    out.clear();
                    frame::encode(&reply, &mut out);
                    if client.write_all(&out).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::info!(peer = %self.peer, error = %e, "lost the leader during a CPython client's call; the call fails and its session is ended");
                    upstream = None;
                    if let Some(previous) = &mut self.opening.previous {
                        previous.resume = false;
                    }
                    if dialect::python::reply_error(&mut client, &lost_mid_call()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Notes the session the leader gave: the next relay names it.
    fn carry(&mut self, session: RelayedSession) {
        self.opening.previous = Some(Previous { session: session.session, secret: session.secret, resume: true });
    }

    /// Opens a relay to the next leader, retrying until the heartbeat timeout has
    /// passed (a new leader keeps the session that long), and takes the session back.
    async fn reconnect(&mut self) -> Option<(RelayStream, NodeId)> {
        let wanted = self.opening.previous;
        let give_up = tokio::time::Instant::now() + self.shared.config.limits.heartbeat_timeout;
        loop {
            match self.serving.node().open_relay(&self.opening, REOPEN_TIMEOUT).await {
                Ok(OpenedRelay { stream, session: Some(session), leader }) => {
                    if wanted.is_some_and(|w| w.resume) && !session.resumed {
                        tracing::warn!(peer = %self.peer, "a CPython client's session could not be resumed on the new leader (it lapsed or ended): it goes on in a new one, and what the old one held was released");
                    } else {
                        tracing::info!(peer = %self.peer, session = session.session, resumed = session.resumed, "relaying a CPython client to the new leader");
                    }
                    self.carry(session);
                    return Some((stream, leader));
                }
                Ok(OpenedRelay { session: None, .. }) => {
                    tracing::warn!(peer = %self.peer, "the leader opened no session for a relayed CPython client; closing it");
                    return None;
                }
                Err(e) if tokio::time::Instant::now() >= give_up => {
                    tracing::warn!(peer = %self.peer, error = %e, "no leader took a CPython client's session back in time; closing its connection");
                    return None;
                }
                Err(_) => tokio::time::sleep(RETRY_EVERY).await,
            }
        }
    }
}

/// The error a CPython call gets when the leader went while it was under way.
fn lost_mid_call() -> WireError {
    WireError::new(
        ErrorCode::SessionExpired,
        "the cluster's leader changed while this call was under way: whether it took effect is unknown. The \
         connection goes on with a new session; what the old one held (locks, permits, leased items) was released",
    )
}

/// Completes when the other side closes or fails; what it sends meanwhile is kept.
async fn peer_closed<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut BytesMut) {
    loop {
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

// ---- the leader's side ----

/// Serves the clients followers relay to this node.
pub struct Acceptor {
    shared: Weak<Shared>,
    slots: Arc<Semaphore>,
}

impl Acceptor {
    /// An acceptor that takes each relayed client's connection slot from `slots`.
    pub fn new(shared: &Arc<Shared>, slots: Arc<Semaphore>) -> Arc<Acceptor> {
        Arc::new(Acceptor { shared: Arc::downgrade(shared), slots })
    }
}

impl RelayAcceptor for Acceptor {
    fn serve(
        &self,
        mut stream: RelayStream,
        opening: RelayOpening,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let (shared, slots) = (self.shared.upgrade(), self.slots.clone());
        Box::pin(async move {
            match shared {
                Some(shared) => serve_relayed(stream, opening, shared, slots).await,
                None => {
                    let _ = stream.answer(&Err("this node is stopping".to_owned())).await;
                }
            }
        })
    }
}

/// Serves one relayed client (see the module docs): its session belongs to this
/// node's stint, so it ends with it.
async fn serve_relayed(mut relay: RelayStream, opening: RelayOpening, shared: Arc<Shared>, slots: Arc<Semaphore>) {
    let peer = format!("{} (via a follower)", opening.client);
    let Some(serving) = shared.parking.serving().cloned() else {
        let _ = relay.answer(&Err("this node is not a cluster node".to_owned())).await;
        return;
    };
    // Taken first: the relay lives no longer than the stint it was accepted in.
    let mut generation = serving.leadership().generation();
    let refused =
        match (serving.leadership().admits_clients(), Who::by_name(&shared.config.users, opening.user.as_deref())) {
            (false, _) => Err(crate::cluster::leadership::not_leading().message),
            (true, Err(why)) => Err(why),
            (true, Ok(who)) => Ok(who),
        };
    let who = match refused {
        Ok(who) => who,
        Err(why) => {
            tracing::info!(%peer, %why, "refused a relayed client");
            let _ = relay.answer(&Err(why)).await;
            return;
        }
    };
    let Ok(_permit) = slots.try_acquire_owned() else {
        let limit = shared.config.limits.max_connections;
        tracing::warn!(%peer, limit, "relayed connection refused: too many connections");
        let _ = relay.answer(&Err(format!("too many connections (the leader's limit is {limit})"))).await;
        return;
    };
    shared.counters.connections_open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let served = async {
        let address = opening.address.as_deref().and_then(|a| a.parse::<Address>().ok());
        if opening.python {
            let started = shared.start_session(&peer, &opening.client, opening.previous);
            let (session, mailbox, _entry, resumed) = match started {
                Ok(started) => started,
                Err(e) => {
                    let _ = relay.answer(&Err(e.message)).await;
                    return;
                }
            };
            let granted = RelayedSession { session: session.id(), secret: session.secret().unwrap_or(0), resumed };
            if relay.answer(&Ok(Some(granted))).await.is_err() {
                shared.parking.close(session, mailbox, []);
                return;
            }
            let RelayStream { stream, buf } = relay;
            let stream = Relayed { stream, address };
            dialect::python::serve_session(stream, buf, None, &peer, who, &shared, (session, mailbox), resumed).await;
        } else {
            if relay.answer(&Ok(None)).await.is_err() {
                return;
            }
            let RelayStream { stream, mut buf } = relay;
            let mut stream = Relayed { stream, address };
            let limits = &shared.config.limits;
            let Ok(Ok(first)) =
                tokio::time::timeout(limits.handshake_timeout, read_frame(&mut stream, &mut buf, limits.max_frame))
                    .await
            else {
                return;
            };
            dialect::native::serve(stream, buf, first, &peer, who, shared.clone()).await;
        }
    };
    tokio::select! {
        () = served => {}
        _ = generation.changed() => {}
    }
    shared.counters.connections_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// A relayed client's connection as the dialects see it: the follower said which
/// address it dialled.
struct Relayed {
    stream: Box<dyn PeerIo>,
    address: Option<Address>,
}

impl AsyncRead for Relayed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Relayed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Transport for Relayed {
    /// Never: the client is on the follower's machine at best, not this one. So it may
    /// not shut this node down (without --allow-remote-shutdown), and no authkey goes
    /// into the proxies it is sent, which cross the peer link.
    fn peer_is_local(&self) -> bool {
        false
    }

    fn local_address(&self) -> Option<Address> {
        self.address.clone()
    }
}
