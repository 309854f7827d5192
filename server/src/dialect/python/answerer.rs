//! A waiting CPython connection's [`Answerer`]: writes a parked call's `#RETURN` onto
//! the client's socket from the thread that delivered it (see
//! [`crate::parking::line`] for why).
//!
//! It writes only what the connection itself would have written unchanged — a reply
//! whose value holds no proxy reference to rewrite for this client — and only what
//! `send(2)` takes without waiting; anything else is left to the connection.

use std::os::fd::RawFd;

use agora_proto::Value;

use super::frame_with;
use super::reply::write_return;
use crate::engine::Completion;
use crate::parking::line::{Answerer, Written};

/// Writes onto one connection's socket while its call waits.
pub(super) struct SocketAnswerer {
    /// The waiting connection's socket. Valid while the line is armed: the connection
    /// disarms it before it can let the socket go.
    socket: RawFd,
}

impl SocketAnswerer {
    pub(super) fn new(socket: RawFd) -> SocketAnswerer {
        SocketAnswerer { socket }
    }
}

/// Replies whose value is at most this big are written from the delivering thread;
/// bigger ones are few, and their copy is better made by their own connection.
const MOST: usize = 4096;

/// True if the reply carrying `value` needs no rewriting for its client (no nested
/// proxy in it: a scalar) and is small enough to write from another thread. Decided
/// before encoding, so a big item is encoded once, by its connection.
fn is_plain_and_small(value: &Value) -> bool {
    match value {
        Value::None | Value::Bool(_) | Value::Int(_) | Value::BigInt(_) | Value::Float(_) => true,
        Value::Str(s) => s.len() <= MOST,
        Value::Bytes(b) => b.len() <= MOST,
        _ => false,
    }
}

impl Answerer for SocketAnswerer {
    fn answer(&mut self, completion: &Completion) -> Written {
        let Ok(value) = completion else { return Written::Nothing };
        if !is_plain_and_small(value) {
            return Written::Nothing;
        }
        let mut out = Vec::with_capacity(64);
        frame_with(&mut out, |body| write_return(value, body));
        let written = loop {
            // SAFETY: `socket` is open while the line is armed (see the field), and the
            // buffer lives across the call. MSG_NOSIGNAL: a closed peer is an EPIPE,
            // not a signal; MSG_DONTWAIT: never wait for room.
            let sent = unsafe {
                libc::send(self.socket, out.as_ptr().cast(), out.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            };
            if sent >= 0 {
                break sent as usize;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // Full (rare: the client has read every earlier reply) or broken: the
                // connection finds out for itself.
                return Written::Nothing;
            }
        };
        if written == out.len() {
            Written::Whole
        } else if written == 0 {
            Written::Nothing
        } else {
            Written::Part(written)
        }
    }
}
