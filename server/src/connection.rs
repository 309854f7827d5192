//! One accepted connection, from handshake to close.
//!
//! Runs the HMAC handshake under the handshake timeout (with users configured, the key
//! that answers says which user connected: [`crate::access::Who`]), enforces the connection limit
//! (after authentication, so only a peer that knows the key takes a slot or learns
//! the reason), reads the first frame and hands the connection to the dialect it
//! names: a pickle (`0x80`) is a CPython client, anything else must be a native Hello.
//! A cluster node that does not lead authenticates its clients the same way, then
//! relays them to the leader ([`Route::Relay`], module [`crate::relay`]).
//! Whatever goes wrong here closes this connection only, and is logged.
//!
//! Handshakes in progress are bounded apart ([`Handshakes`]): when `max_handshakes`
//! are under way, a newcomer pushes out the oldest, so sockets that connect and say
//! nothing cannot keep anyone else from authenticating.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use agora_proto::auth::Policy;
use agora_proto::io::{read_frame, server_handshake, server_handshake_any, HandshakeError};
use agora_proto::{ErrorCode, WireError};
use bytes::BytesMut;
use tokio::sync::{Notify, Semaphore};

use crate::access::Who;
use crate::dialect;
use crate::listener::Transport;
use crate::server::Shared;

/// The first byte of every pickle (the PROTO opcode).
const PICKLE_PROTO: u8 = 0x80;

/// The handshakes in progress, oldest first.
#[derive(Debug)]
pub struct Handshakes {
    limit: usize,
    under_way: Mutex<VecDeque<(u64, Arc<Notify>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// One handshake's place among [`Handshakes`]; leaves when dropped.
pub struct HandshakeSlot<'a> {
    handshakes: &'a Handshakes,
    id: u64,
    pushed_out: Arc<Notify>,
}

impl Handshakes {
    /// At most `limit` handshakes at once.
    pub fn new(limit: usize) -> Handshakes {
        Handshakes { limit: limit.max(1), under_way: Mutex::default(), next: Default::default() }
    }

    /// Enters a new handshake, pushing out the oldest if `limit` are under way.
    pub fn enter(&self) -> HandshakeSlot<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let pushed_out = Arc::new(Notify::new());
        let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        while under_way.len() >= self.limit {
            if let Some((_, oldest)) = under_way.pop_front() {
                oldest.notify_one();
            }
        }
        under_way.push_back((id, pushed_out.clone()));
        HandshakeSlot { handshakes: self, id, pushed_out }
    }
}

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        let mut under_way = self.handshakes.under_way.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = under_way.iter().position(|(id, _)| *id == self.id) {
            under_way.remove(at);
        }
    }
}

/// Where an authenticated connection is served.
pub enum Route {
    /// By this node.
    Here,
    /// By the cluster's leader: this node relays it.
    Relay(Arc<crate::cluster::Serving>),
}

/// Serves one connection until it closes. `slots` are the connection slots
/// (`max_connections`), taken once the peer has authenticated.
pub async fn serve<S: Transport>(
    mut stream: S,
    peer: String,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    route: Route,
) {
    let limits = &shared.config.limits;
    let policy = Policy { strict: shared.config.strict_auth };
    // Small to start: an idle connection keeps what it touched (10,000 idle connections
    // cost 16 KiB each with 16 KiB buffers, 9.6 KiB with these); it grows with its load.
    let mut buf = BytesMut::with_capacity(1024);
    let opening = async {
        // With users, which key answers the challenge says who connected.
        let who = if shared.config.users.is_empty() {
            server_handshake(&mut stream, &mut buf, &shared.config.authkey, policy).await?;
            Who::Anyone
        } else {
            let keys: Vec<&[u8]> = shared.config.users.iter().map(|u| u.key.as_slice()).collect();
            Who::User(server_handshake_any(&mut stream, &mut buf, &keys, policy).await?)
        };
        stream.before_read();
        Ok::<_, HandshakeError>((who, read_frame(&mut stream, &mut buf, limits.max_frame).await?))
    };
    let slot = shared.handshakes.enter();
    let opening = async {
        tokio::select! {
            opened = opening => Some(opened),
            _ = slot.pushed_out.notified() => None,
        }
    };
    let (who, first) = match tokio::time::timeout(limits.handshake_timeout, opening).await {
        Ok(Some(Ok(opened))) => opened,
        Ok(None) => {
            shared.counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, limit = limits.max_handshakes, "connection dropped: its handshake was the oldest unfinished one when another connection arrived");
            return;
        }
        Ok(Some(Err(e))) => {
            shared.counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, error = %e, "connection refused: handshake failed");
            return;
        }
        Err(_) => {
            shared.counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, timeout = ?limits.handshake_timeout, "connection dropped: handshake did not finish in time");
            return;
        }
    };
    drop(slot);
    let Ok(_permit) = slots.try_acquire_owned() else {
        shared.counters.connections_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, limit = limits.max_connections, "connection refused: too many connections");
        let error = WireError::new(
            ErrorCode::LimitExceeded,
            format!("too many connections (the server's limit is {})", limits.max_connections),
        );
        if is_python(&first) {
            dialect::python::refuse(&mut stream, &error).await;
        } else {
            dialect::native::refuse(&mut stream, error).await;
        }
        return;
    };
    shared.counters.connections_open.fetch_add(1, Ordering::Relaxed);
    match who.user(&shared) {
        Some(user) => tracing::debug!(%peer, user = %user.name, "connection authenticated"),
        None => tracing::debug!(%peer, "connection authenticated"),
    }
    match route {
        Route::Here => dispatch(stream, buf, first, &peer, who, shared.clone()).await,
        // Boxed: a connection's task is as large as its largest state, and a relayed
        // connection's (a link to the leader and its buffers) must not grow the others'.
        Route::Relay(serving) => {
            Box::pin(crate::relay::follow(stream, buf, first, &peer, who, shared.clone(), serving)).await
        }
    }
    shared.counters.connections_open.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(%peer, "connection closed");
}

/// True if `first`, a connection's first frame, is a CPython client's (a pickle).
pub fn is_python(first: &[u8]) -> bool {
    first.first() == Some(&PICKLE_PROTO)
}

/// Hands an authenticated connection, whose `first` frame was read, to its dialect.
async fn dispatch<S: Transport>(
    stream: S,
    buf: BytesMut,
    first: bytes::Bytes,
    peer: &str,
    who: Who,
    shared: Arc<Shared>,
) {
    if is_python(&first) {
        // A client thread's connection: a thread of its own, as CPython's manager gives it.
        let seat = match dialect::python::opens_persistent(&first) {
            true => shared.python_threads.take(),
            false => None,
        };
        let stream = match seat {
            None => stream,
            Some(seat) => match stream.detach() {
                Err(stream) => stream,
                Ok(Ok(detached)) => {
                    // Boxed: every connection's task is as large as its largest state, and
                    // this one (a runtime, a job, a fallback) must not grow the rest.
                    return Box::pin(crate::dedicated::serve_python(seat, detached, buf, first, peer, who, shared))
                        .await;
                }
                Ok(Err(e)) => {
                    return tracing::warn!(%peer, error = %e, "cannot move a CPython connection to its own thread; closing it")
                }
            },
        };
        // Boxed, like the branch above: the native dialect's connections are the many.
        Box::pin(dialect::python::serve(stream, buf, first, peer, who, shared, None)).await;
    } else {
        dialect::native::serve(stream, buf, first, peer, who, shared).await;
    }
}
