//! One accepted connection, from handshake to close.
//!
//! Runs the HMAC handshake under the handshake timeout, enforces the connection limit
//! (after authentication, so only a peer that knows the key learns the reason), reads
//! the first frame and hands the connection to the dialect it names: a pickle
//! (`0x80`) is a CPython client, anything else must be a native Hello. Whatever goes
//! wrong here closes this connection only, and is logged.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use agora_proto::auth::Policy;
use agora_proto::io::{read_frame, server_handshake, HandshakeError};
use agora_proto::{ErrorCode, WireError};
use bytes::BytesMut;
use tokio::sync::OwnedSemaphorePermit;

use crate::dialect;
use crate::listener::Transport;
use crate::server::Shared;

/// The first byte of every pickle (the PROTO opcode).
const PICKLE_PROTO: u8 = 0x80;

/// Serves one connection until it closes.
pub async fn serve<S: Transport>(
    mut stream: S,
    peer: String,
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
) {
    let limits = &shared.config.limits;
    let policy = Policy { strict: shared.config.strict_auth };
    // Small to start: an idle connection keeps what it touched (10,000 idle connections
    // cost 16 KiB each with 16 KiB buffers, 9.6 KiB with these); it grows with its load.
    let mut buf = BytesMut::with_capacity(1024);
    let opening = async {
        server_handshake(&mut stream, &mut buf, &shared.config.authkey, policy).await?;
        stream.before_read();
        Ok::<_, HandshakeError>(read_frame(&mut stream, &mut buf, limits.max_frame).await?)
    };
    let first = match tokio::time::timeout(limits.handshake_timeout, opening).await {
        Ok(Ok(first)) => first,
        Ok(Err(e)) => {
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
    let Some(_permit) = permit else {
        shared.counters.connections_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, limit = limits.max_connections, "connection refused: too many connections");
        let error = WireError::new(
            ErrorCode::LimitExceeded,
            format!("too many connections (the server's limit is {})", limits.max_connections),
        );
        if first.first() == Some(&PICKLE_PROTO) {
            dialect::python::refuse(&mut stream, &error).await;
        } else {
            dialect::native::refuse(&mut stream, error).await;
        }
        return;
    };
    shared.counters.connections_open.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, "connection authenticated");
    if first.first() == Some(&PICKLE_PROTO) {
        dialect::python::serve(stream, buf, first, &peer, shared.clone()).await;
    } else {
        dialect::native::serve(stream, buf, first, &peer, shared.clone()).await;
    }
    shared.counters.connections_open.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(%peer, "connection closed");
}
