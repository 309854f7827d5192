//! The client's one error type. Every server error code maps to a precise variant.

use agora_proto::{ErrorCode, Value, WireError};

/// Everything that can go wrong talking to an agora server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The address tried.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// None of several addresses of one cluster could be connected to
    /// ([`Manager::connect_any`](crate::Manager::connect_any), or a reconnect that tried
    /// them all): for every address tried, in order, why it failed. A manager given a
    /// single address reports that address's own error instead.
    ///
    /// ```
    /// use agora_client::Error;
    ///
    /// let err = Error::ConnectAny {
    ///     failures: vec![
    ///         ("127.0.0.1:7001".into(), Error::Connect { address: "127.0.0.1:7001".into(), reason: "refused".into() }),
    ///         ("127.0.0.1:7002".into(), Error::AuthenticationFailed("wrong key".into())),
    ///     ],
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "cannot connect to any of 127.0.0.1:7001, 127.0.0.1:7002: 127.0.0.1:7001: refused; \
    ///      127.0.0.1:7002: authentication failed: wrong key"
    /// );
    /// ```
    #[error("cannot connect to any of {}: {}", list_addresses(.failures), list_failures(.failures))]
    ConnectAny {
        /// Each address tried (as written) and why connecting to it failed.
        failures: Vec<(String, Error)>,
    },
    /// [`Manager::from_env`](crate::Manager::from_env) found no usable server address
    /// or authkey in the environment; the message says which variable and what to do.
    #[error("{0}")]
    Environment(String),
    /// TLS to a `tls://` server failed or is not set up: no CA bundle given, a server
    /// certificate the CA bundle does not vouch for or that names another host, a
    /// client certificate the server requires and this client lacks (or one it
    /// refuses), or unreadable PEM. The message says which and what to fix. Like
    /// [`Error::AuthenticationFailed`], never retried on reconnecting.
    #[error("TLS: {0}")]
    Tls(String),
    /// The authkey does not match the server's (or strict mode refused the handshake).
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The connection broke; in-flight calls may or may not have taken effect. A
    /// manager that reconnects ([`ManagerOptions`](crate::ManagerOptions)) never sends
    /// such a call again (a repeated `add` would count twice): the call fails with this
    /// error, saying its outcome is unknown, and later calls go to the new connection.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The connection to the server was lost and could not be made again before the
    /// reconnect deadline passed ([`ManagerOptions::reconnect_deadline`]). Calls fail
    /// with it at once from then on, except that one call now and then (at most one
    /// per second) tries again, so the manager recovers when the server is back.
    ///
    /// [`ManagerOptions::reconnect_deadline`]: crate::ManagerOptions::reconnect_deadline
    #[error(
        "the server at {address} has been unreachable for {:.1} s; gave up reconnecting (last error: {last_error})",
        .down_for.as_secs_f64()
    )]
    Unreachable {
        /// The server's address.
        address: String,
        /// How long the server has been unreachable: since the first call that found
        /// the connection lost.
        down_for: std::time::Duration,
        /// Why the last attempt to connect failed ([`Error::Connect`], mostly).
        last_error: Box<Error>,
    },
    /// The server ended this session (e.g. heartbeat timeout); what it held was
    /// released. Also what releasing a lock guard or settling a queue lease fails with
    /// when the session that obtained it ended because the connection was lost: the
    /// server released the grant, and nothing is sent (the manager's new session does
    /// not own it).
    #[error("session expired: {0}")]
    SessionExpired(String),
    /// The server is shutting down.
    #[error("server shutting down: {0}")]
    ShuttingDown(String),
    /// The server cannot make changes durable right now (its log cannot be written: a
    /// full disk, an I/O error): the change was refused and not applied; reads still
    /// work, and changes are accepted again once the log can be written.
    #[error("server unavailable for changes: {0}")]
    Unavailable(String),
    /// The server is at its memory limit (`--max-memory`): the call would have stored
    /// more and was refused, changing nothing. Reads, deletes and calls that shrink
    /// objects still work; the call may succeed once memory is freed.
    #[error("server memory limit reached: {0}")]
    MemoryLimit(String),
    /// The server's access rules do not let this client's user make this call (or
    /// reach this object); the message names the user and the rule.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A key is not in the dict (Python `KeyError`).
    #[error("key not found: {}", .0.py_repr())]
    KeyNotFound(Value),
    /// An index is out of range (Python `IndexError`).
    #[error("index out of range: {0}")]
    IndexOutOfRange(String),
    /// A name holds an object of another kind.
    #[error("wrong kind: {0}")]
    WrongKind(String),
    /// A value has the wrong type: the server refused it or the call's arguments
    /// (Python `TypeError`), or a stored value does not convert into the Rust type
    /// asked for.
    #[error("type mismatch: {0}")]
    TypeMismatch(String),
    /// A value was refused (Python `ValueError`).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// A number does not fit (Python `OverflowError`).
    #[error("overflow: {0}")]
    Overflow(String),
    /// Division by zero.
    #[error("division by zero: {0}")]
    DivisionByZero(String),
    /// A missing attribute (Python `AttributeError`).
    #[error("no such attribute: {0}")]
    NoSuchAttribute(String),
    /// A synchronization object was misused (Python `RuntimeError`).
    #[error("runtime error: {0}")]
    Runtime(String),
    /// An iterator is exhausted.
    #[error("iteration finished")]
    StopIteration,
    /// A queue is empty (Python `queue.Empty`).
    #[error("queue is empty")]
    Empty,
    /// A queue is full (Python `queue.Full`).
    #[error("queue is full")]
    Full,
    /// A queue was shut down (Python `queue.ShutDown`).
    #[error("queue is shut down")]
    QueueShutDown,
    /// A barrier is broken (Python `threading.BrokenBarrierError`).
    #[error("barrier is broken")]
    BrokenBarrier,
    /// A blocking call timed out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The object does not exist (never did, was released, or was deleted), or it did
    /// not survive a restart of the server (the message says so, naming the object):
    /// after reconnecting, the manager attaches its proxies' objects again, and this is
    /// what the proxies of one the server no longer has fail with.
    #[error("no such object: {0}")]
    NoSuchObject(String),
    /// No object has this name.
    #[error("no such name: {0}")]
    NoSuchName(String),
    /// The object's kind has no such method.
    #[error("no such method: {0}")]
    NoSuchMethod(String),
    /// A server limit was hit (frame size, connections, in-flight requests).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// Something agora deliberately does not do.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A bug in agora.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Error {
        use ErrorCode as C;
        let m = e.message;
        match e.code {
            C::KeyError => Error::KeyNotFound(e.detail.unwrap_or(Value::Str(m.into()))),
            C::IndexError => Error::IndexOutOfRange(m),
            C::ValueError => Error::InvalidValue(m),
            C::TypeError => Error::TypeMismatch(m),
            C::AttributeError => Error::NoSuchAttribute(m),
            C::OverflowError => Error::Overflow(m),
            C::ZeroDivisionError => Error::DivisionByZero(m),
            C::RuntimeError => Error::Runtime(m),
            C::StopIteration => Error::StopIteration,
            C::Empty => Error::Empty,
            C::Full => Error::Full,
            C::ShutDown => Error::QueueShutDown,
            C::BrokenBarrier => Error::BrokenBarrier,
            C::Timeout => Error::Timeout(m),
            C::NoSuchObject => Error::NoSuchObject(m),
            C::NoSuchName => Error::NoSuchName(m),
            C::NoSuchMethod => Error::NoSuchMethod(m),
            C::WrongKind => Error::WrongKind(m),
            C::LimitExceeded => Error::LimitExceeded(m),
            C::SessionExpired => Error::SessionExpired(m),
            C::ShuttingDown => Error::ShuttingDown(m),
            C::Unavailable => Error::Unavailable(m),
            C::MemoryLimit => Error::MemoryLimit(m),
            C::PermissionDenied => Error::PermissionDenied(m),
            C::Unsupported => Error::Unsupported(m),
            C::Protocol => Error::Protocol(m),
            _ => Error::Internal(m),
        }
    }
}

/// The addresses of [`Error::ConnectAny`], comma separated.
fn list_addresses(failures: &[(String, Error)]) -> String {
    failures.iter().map(|(address, _)| address.as_str()).collect::<Vec<_>>().join(", ")
}

/// Each address of [`Error::ConnectAny`] and why it failed (a connect error by its
/// reason alone: it would name the address again).
fn list_failures(failures: &[(String, Error)]) -> String {
    let why = |error: &Error| match error {
        Error::Connect { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    failures.iter().map(|(address, error)| format!("{address}: {}", why(error))).collect::<Vec<_>>().join("; ")
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
