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
//! are under way, accepted connections wait (in the accept loop, in order) until one of
//! them ends, or until the oldest has been under way for [`PUSH_OUT_AFTER`] and is
//! pushed out. A handshake whose client has answered the server's challenge holds a
//! key: it gives its place up then ([`HandshakeSlot::proven`]), and only the handshake
//! timeout bounds the rest of it. So a burst of real clients larger than the limit all
//! get in, however slowly a busy client process goes through the rest of its side, and
//! sockets that connect and say nothing cannot keep anyone else from authenticating
//! for long.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_proto::auth::Policy;
use agora_proto::io::{read_frame, server_handshake_noting, HandshakeError};
use agora_proto::{ErrorCode, WireError};
use bytes::BytesMut;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::access::Who;
use crate::dialect;
use crate::listener::Transport;
use crate::server::Shared;

/// The first byte of every pickle (the PROTO opcode).
const PICKLE_PROTO: u8 = 0x80;

/// How long a handshake keeps its place while a newcomer waits for one: a real client
/// answers within round trips (milliseconds on a LAN, well under a second across the
/// world, TLS included); a socket that has said nothing for this long is pushed out.
pub const PUSH_OUT_AFTER: Duration = Duration::from_secs(1);

/// The handshakes in progress, oldest first, at most `limit` of them.
#[derive(Debug)]
pub struct Handshakes {
    limit: usize,
    under_way: Mutex<VecDeque<UnderWay>>,
    /// Notified when a handshake leaves (done, failed or pushed out): a newcomer
    /// waiting in [`Handshakes::admit`] looks again.
    left: Notify,
    next: std::sync::atomic::AtomicU64,
}

/// One handshake under way.
#[derive(Debug)]
struct UnderWay {
    id: u64,
    since: Instant,
    pushed_out: Arc<Notify>,
}

/// One handshake's place among [`Handshakes`]; leaves when dropped. `pushed_out` is
/// notified if a newcomer pushes it out: the connection must then close.
pub struct HandshakeSlot {
    handshakes: Arc<Handshakes>,
    id: u64,
    /// Notified when this handshake is pushed out.
    pub pushed_out: Arc<Notify>,
}

impl Handshakes {
    /// At most `limit` handshakes at once.
    pub fn new(limit: usize) -> Handshakes {
        Handshakes { limit: limit.max(1), under_way: Mutex::default(), left: Notify::new(), next: Default::default() }
    }

    /// A place for a newly accepted connection's handshake. While `limit` are under
    /// way it waits until one leaves, or until the oldest has been under way for
    /// [`PUSH_OUT_AFTER`], and then pushes that one out. Cancel-safe: dropped before
    /// it returns, it has taken no place.
    pub async fn admit(self: &Arc<Self>) -> HandshakeSlot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        loop {
            // Registered before looking, so a handshake that leaves meanwhile is seen.
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            let oldest_due = {
                let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let full = under_way.len() >= self.limit;
                match under_way.front().filter(|_| full).map(|oldest| oldest.since + PUSH_OUT_AFTER) {
                    // Full, and the oldest still has time: wait for it (or for a leaver).
                    Some(due) if due > now => due,
                    _ => {
                        if full {
                            // The oldest has had its time, and we wait: it goes.
                            if let Some(oldest) = under_way.pop_front() {
                                oldest.pushed_out.notify_one();
                            }
                        }
                        let pushed_out = Arc::new(Notify::new());
                        under_way.push_back(UnderWay { id, since: now, pushed_out: pushed_out.clone() });
                        return HandshakeSlot { handshakes: self.clone(), id, pushed_out };
                    }
                }
            };
            tokio::select! {
                _ = left => {}
                _ = tokio::time::sleep_until(oldest_due) => {}
            }
        }
    }
}

impl HandshakeSlot {
    /// Gives the place up early: the peer answered the challenge, so it holds a key and
    /// is no squatter. It can no longer be pushed out, and a newcomer may take its place.
    pub fn proven(&self) {
        self.leave();
    }

    /// Leaves the handshakes under way (once; later calls find nothing).
    fn leave(&self) {
        let mut under_way = self.handshakes.under_way.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = under_way.iter().position(|h| h.id == self.id) {
            under_way.remove(at);
            self.handshakes.left.notify_waiters();
        }
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Where an authenticated connection is served.
pub enum Route {
    /// By this node.
    Here,
    /// By the cluster's leader: this node relays it.
    Relay(Arc<crate::cluster::Serving>),
}

/// Serves one connection until it closes. `handshake` is its place among the
/// handshakes under way ([`Handshakes::admit`]), given up once the peer has
/// answered the server's challenge (or leaves); `slots` are the connection slots (`max_connections`),
/// taken then.
pub async fn serve<S: Transport>(
    mut stream: S,
    peer: String,
    handshake: HandshakeSlot,
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
        // A client that answered the challenge holds a key: it is no squatter, and its
        // place goes to the next newcomer; the rest is bounded by the handshake timeout.
        let proven = || handshake.proven();
        // With users, which key answers the challenge says who connected.
        let who = if shared.config.users.is_empty() {
            let key = std::slice::from_ref(&shared.config.authkey);
            server_handshake_noting(&mut stream, &mut buf, key, policy, proven).await?;
            Who::Anyone
        } else {
            let keys: Vec<&[u8]> = shared.config.users.iter().map(|u| u.key.as_slice()).collect();
            Who::User(server_handshake_noting(&mut stream, &mut buf, &keys, policy, proven).await?)
        };
        stream.before_read();
        Ok::<_, HandshakeError>((who, read_frame(&mut stream, &mut buf, limits.max_frame).await?))
    };
    let opening = async {
        tokio::select! {
            opened = opening => Some(opened),
            _ = handshake.pushed_out.notified() => None,
        }
    };
    let (who, first) = match tokio::time::timeout(limits.handshake_timeout, opening).await {
        Ok(Some(Ok(opened))) => opened,
        Ok(None) => {
            shared.counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, limit = limits.max_handshakes, under_way_for = ?PUSH_OUT_AFTER, "connection dropped: its handshake was the oldest unfinished one, under way for longer than allowed while another connection waited");
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
    drop(handshake);
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
        Box::pin(dialect::python::serve(stream, buf, first, peer, who, shared)).await;
    } else {
        dialect::native::serve(stream, buf, first, peer, who, shared).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True if `admit` has not finished yet (it is polled once).
    async fn still_waiting(admit: &mut std::pin::Pin<Box<impl std::future::Future<Output = HandshakeSlot>>>) -> bool {
        tokio::time::timeout(Duration::ZERO, admit.as_mut()).await.is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_beyond_the_limit_waits_for_a_handshake_to_end() {
        let handshakes = Arc::new(Handshakes::new(2));
        let first = handshakes.admit().await;
        let _second = handshakes.admit().await;
        let mut third = Box::pin(handshakes.admit());
        assert!(still_waiting(&mut third).await);
        // Younger than PUSH_OUT_AFTER: nobody is pushed out, the newcomer waits on.
        tokio::time::advance(PUSH_OUT_AFTER / 2).await;
        assert!(still_waiting(&mut third).await);
        drop(first);
        let third = tokio::time::timeout(Duration::ZERO, third).await.expect("admitted once a handshake ended");
        assert_eq!(handshakes.under_way.lock().unwrap().len(), 2);
        // Nobody was pushed out: the place was given up.
        assert!(tokio::time::timeout(Duration::ZERO, third.pushed_out.notified()).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_proven_handshake_gives_its_place_up_and_is_never_pushed_out() {
        let handshakes = Arc::new(Handshakes::new(1));
        let proven = handshakes.admit().await;
        let mut newcomer = Box::pin(handshakes.admit());
        assert!(still_waiting(&mut newcomer).await);
        proven.proven();
        let newcomer = tokio::time::timeout(Duration::ZERO, newcomer).await.expect("admitted at once");
        // Long past PUSH_OUT_AFTER, with another newcomer waiting: the young one is
        // pushed out, the proven one never.
        tokio::time::advance(PUSH_OUT_AFTER * 3).await;
        let _next = handshakes.admit().await;
        assert!(tokio::time::timeout(Duration::ZERO, newcomer.pushed_out.notified()).await.is_ok());
        assert!(tokio::time::timeout(Duration::ZERO, proven.pushed_out.notified()).await.is_err());
        drop(proven);
        assert_eq!(handshakes.under_way.lock().unwrap().len(), 1, "only the last newcomer is under way");
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_is_pushed_out_once_it_has_taken_too_long_and_someone_waits() {
        let handshakes = Arc::new(Handshakes::new(2));
        let idle = handshakes.admit().await;
        tokio::time::advance(PUSH_OUT_AFTER / 2).await;
        let younger = handshakes.admit().await;
        let mut newcomer = Box::pin(handshakes.admit());
        assert!(still_waiting(&mut newcomer).await);
        // The oldest reaches PUSH_OUT_AFTER: it goes, the younger one stays.
        tokio::time::advance(PUSH_OUT_AFTER / 2).await;
        let _newcomer = newcomer.await;
        assert!(tokio::time::timeout(Duration::ZERO, idle.pushed_out.notified()).await.is_ok());
        assert!(tokio::time::timeout(Duration::ZERO, younger.pushed_out.notified()).await.is_err());
        // The pushed-out one leaving (its connection closing) frees nothing twice.
        drop(idle);
        assert_eq!(handshakes.under_way.lock().unwrap().len(), 2);
    }
}
