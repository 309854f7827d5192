//! The errors both dialects report: one [`ErrorCode`] per distinct failure, plus a
//! message in CPython's words where a Python exception corresponds.
//!
//! The native dialect sends a [`WireError`] as is; the Python dialect turns the code
//! into the matching Python exception type; the client maps each code to a precise
//! variant of its `Error` enum. Add a code here, never a stringly-typed catch-all.

use serde::{Deserialize, Serialize};

/// What went wrong, precisely enough for a client to act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    // --- Python exceptions raised by an object's method (Python: `#ERROR`) ---
    /// A missing key (`KeyError`); the key is in [`WireError::detail`].
    KeyError,
    /// An index out of range (`IndexError`).
    IndexError,
    /// A bad value (`ValueError`).
    ValueError,
    /// A value of the wrong type (`TypeError`).
    TypeError,
    /// A missing attribute (`AttributeError`).
    AttributeError,
    /// A number out of range for its slot (`OverflowError`).
    OverflowError,
    /// Division by zero in an arithmetic operation (`ZeroDivisionError`).
    ZeroDivisionError,
    /// A misuse of a synchronization object (`RuntimeError`), e.g. releasing an unlocked lock.
    RuntimeError,
    /// An iterator is exhausted (`StopIteration`).
    StopIteration,
    /// `queue.Empty`: a non-blocking or timed-out get found nothing.
    Empty,
    /// `queue.Full`: a non-blocking or timed-out put found no room.
    Full,
    /// `queue.ShutDown`: the queue was shut down.
    ShutDown,
    /// `threading.BrokenBarrierError`.
    BrokenBarrier,
    /// A blocking call gave up after its timeout (for calls that report it as an error).
    Timeout,

    // --- agora errors (Python: `#TRACEBACK`) ---
    /// The object id is unknown, or the object was deleted.
    NoSuchObject,
    /// No object has this name.
    NoSuchName,
    /// The object kind has no such method.
    NoSuchMethod,
    /// A name already holds an object of another kind.
    WrongKind,
    /// A configured limit was hit (frame size, connections, in-flight requests…).
    LimitExceeded,
    /// The server ended this session (heartbeat timeout); what it held was released.
    SessionExpired,
    /// The server is shutting down.
    ShuttingDown,
    /// The server cannot make changes durable right now (its log cannot be written:
    /// a full disk, an I/O error); reads still work and nothing acknowledged is lost.
    Unavailable,
    /// The server is at its memory limit (`--max-memory`): a call that would store
    /// more was refused and changed nothing. Reads, deletes and calls that shrink
    /// objects still work (Python: `MemoryError`).
    MemoryLimit,
    /// The authenticated user has no rule that allows this call on this object (or it
    /// is another user's anonymous object); the message names the user and the rule
    /// (Python: `PermissionError`).
    PermissionDenied,
    /// Something agora deliberately does not do (with the reason in the message).
    Unsupported,
    /// The peer broke the protocol (bad frame, bad message).
    Protocol,
    /// A bug in agora; the message says what.
    Internal,
}

impl ErrorCode {
    /// The Python exception class (`module`, `name`) this code travels as in the Python
    /// dialect, or `None` for agora's own errors (which travel as `#TRACEBACK` text).
    pub fn python_exception(self) -> Option<(&'static str, &'static str)> {
        use ErrorCode::*;
        Some(match self {
            KeyError => ("builtins", "KeyError"),
            IndexError => ("builtins", "IndexError"),
            ValueError => ("builtins", "ValueError"),
            TypeError => ("builtins", "TypeError"),
            AttributeError => ("builtins", "AttributeError"),
            OverflowError => ("builtins", "OverflowError"),
            ZeroDivisionError => ("builtins", "ZeroDivisionError"),
            RuntimeError => ("builtins", "RuntimeError"),
            StopIteration => ("builtins", "StopIteration"),
            Empty => ("queue", "Empty"),
            Full => ("queue", "Full"),
            ShutDown => ("queue", "ShutDown"),
            BrokenBarrier => ("threading", "BrokenBarrierError"),
            Timeout => ("builtins", "TimeoutError"),
            // A call that ends because the server stops: a connection error to Python.
            ShuttingDown => ("builtins", "ConnectionAbortedError"),
            // What a Python program already catches when memory runs out.
            MemoryLimit => ("builtins", "MemoryError"),
            // What a Python program already catches for "not allowed".
            PermissionDenied => ("builtins", "PermissionError"),
            _ => return None,
        })
    }
}

/// An error as it travels in a native reply: a code, a human message, and for some
/// codes a value (the missing key of a `KeyError`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct WireError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// CPython's message where one corresponds, else agora's own.
    pub message: String,
    /// Extra data: the key of a `KeyError`.
    pub detail: Option<crate::Value>,
}

impl WireError {
    /// An error with a code and message and no detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError { code, message: message.into(), detail: None }
    }
    /// A `KeyError` for `key`, with CPython's message (the key's repr).
    pub fn key_error(key: crate::Value) -> Self {
        WireError { code: ErrorCode::KeyError, message: key.py_repr(), detail: Some(key) }
    }
    /// A `TypeError`.
    pub fn type_error(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TypeError, message)
    }
    /// A `ValueError`.
    pub fn value_error(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValueError, message)
    }
    /// An `IndexError`.
    pub fn index_error(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::IndexError, message)
    }
    /// An `OverflowError`.
    pub fn overflow_error(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::OverflowError, message)
    }
}
