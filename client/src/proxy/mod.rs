//! Typed proxies: one module per object kind, all built on [`Handle`].
//!
//! A proxy holds a handle on one server object. Cloning a proxy is cheap and shares
//! the handle; when the last clone drops, the handle is released on the server (which
//! frees an anonymous object nobody else holds). Methods are named as Rust users
//! expect; each one's rustdoc names the Python method it calls.

use std::sync::Arc;

use agora_proto::native::{Args, Kind, ObjectId, Op, Reply};
use agora_proto::{from_value, to_value, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connection::Connection;
use crate::error::{Error, Result};

pub mod array;
pub mod barrier;
pub mod condition;
pub mod dict;
pub mod event;
pub mod list;
pub mod lock;
pub mod namespace;
pub mod object;
pub mod queue;
pub mod rlock;
pub mod semaphore;
pub mod value;

/// Names the call that returns a hand-off whose caller stopped waiting: the value in,
/// the method and its arguments out (`None`: nothing to give back).
pub(crate) type GiveBack = fn(Value) -> Option<(&'static str, Vec<Value>)>;

/// A handle on one server object, released when dropped.
pub(crate) struct Handle {
    conn: Arc<Connection>,
    id: ObjectId,
    kind: Kind,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{:x}", self.kind, self.id)
    }
}

impl Handle {
    /// Opens (get-or-create when named, create when not) an object of `kind`.
    pub(crate) async fn open(
        conn: &Arc<Connection>,
        kind: Kind,
        name: Option<&str>,
        args: Vec<Value>,
    ) -> Result<Arc<Handle>> {
        let op = Op::Open { kind, name: name.map(str::to_owned), args: Args::positional(args) };
        match conn.call(op).await? {
            Reply::Opened { object, kind, .. } => Ok(Arc::new(Handle { conn: conn.clone(), id: object, kind })),
            other => Err(unexpected(other)),
        }
    }

    /// The object's id.
    pub(crate) fn id(&self) -> ObjectId {
        self.id
    }

    /// Calls `method` with positional arguments and returns the raw result.
    pub(crate) async fn call(&self, method: &str, args: Vec<Value>) -> Result<Value> {
        let op = Op::Call { object: self.id, method: method.into(), args: Args::positional(args) };
        match self.conn.call(op).await? {
            Reply::Value(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Calls a method that hands something over (a queue item, a lock grant). If this
    /// future is dropped before the reply arrives, the server cancels the call; if the
    /// value was already on its way, `give_back(value)` names the method and arguments
    /// that return it (e.g. `("unget", [item])`), so a hand-off is never lost.
    pub(crate) async fn call_handing_over(&self, method: &str, args: Vec<Value>, give_back: GiveBack) -> Result<Value> {
        let object = self.id;
        let on_orphan: crate::connection::OnOrphan = Box::new(move |value| {
            give_back(value).map(|(method, args)| Op::Call {
                object,
                method: method.into(),
                args: Args::positional(args),
            })
        });
        let op = Op::Call { object, method: method.into(), args: Args::positional(args) };
        match self.conn.call_with_orphan(op, Some(on_orphan)).await? {
            Reply::Value(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// The manager connection this handle belongs to (for guards that must know
    /// whether the session still holds what they guard).
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// Calls `method` and converts the result into `T`.
    pub(crate) async fn call_as<T: DeserializeOwned>(&self, method: &str, args: Vec<Value>) -> Result<T> {
        decode(self.call(method, args).await?)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.conn.send_and_forget(Op::Release { object: self.id });
    }
}

/// Converts a Rust value for the wire.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    to_value(value).map_err(|e| Error::TypeMismatch(e.message))
}

/// Converts a stored value into the Rust type asked for.
pub(crate) fn decode<T: DeserializeOwned>(value: Value) -> Result<T> {
    from_value(value).map_err(|e| Error::TypeMismatch(e.message))
}

fn unexpected(reply: Reply) -> Error {
    Error::Protocol(format!("unexpected reply {reply:?}"))
}
