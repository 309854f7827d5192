//! Typed proxies: one module per object kind, all built on [`Handle`].
//!
//! A proxy holds a handle on one server object. Cloning a proxy is cheap and shares
//! the handle; when the last clone drops, the handle is released on the server (which
//! frees an anonymous object nobody else holds). Methods are named as Rust users
//! expect; each one's rustdoc names the Python method it calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::native::{Args, CallArgs, Kind, ObjectId, Op, Reply};
use agora_proto::{from_value, to_value, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use crate::connection::GiveBack;
use crate::connection::OnOrphan;
use crate::error::{Error, Result};
use crate::link::{Link, ObjectSlot};

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
pub mod set;
pub mod value;

/// A call that waits (an acquire, a blocking get, an event's or a queue's wait): if the
/// connection it waits on is lost, it is made again on the next connection instead of
/// failing with [`Error::ConnectionLost`] (see [`Handle::call_handing_over`]). That is
/// safe because whatever the lost session was granted and never told goes back when
/// the server ends that session. A wait with a timeout is made again with the time
/// that is left.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait {
    /// The argument holding the timeout in seconds, and when that time runs out.
    timeout: Option<(usize, Instant)>,
}

impl Wait {
    /// A wait without a timeout.
    pub(crate) fn forever() -> Wait {
        Wait { timeout: None }
    }

    /// A wait of at most `timeout`, given in seconds by argument `arg`.
    pub(crate) fn up_to(arg: usize, timeout: Duration) -> Wait {
        // Too far to represent: the same as no timeout (the server says so too).
        Wait { timeout: Instant::now().checked_add(timeout).map(|deadline| (arg, deadline)) }
    }

    /// The wait of a call with Python's `(blocking=True, timeout=None, …)` arguments
    /// (an acquire, a queue's get): none if it does not block.
    pub(crate) fn of_blocking(args: &[Value]) -> Option<Wait> {
        match (args.first(), args.get(1)) {
            (Some(Value::Bool(false)), _) => None,
            (_, Some(Value::Float(secs))) => {
                Some(Duration::try_from_secs_f64(*secs).map_or(Wait::forever(), |timeout| Wait::up_to(1, timeout)))
            }
            _ => Some(Wait::forever()),
        }
    }

    /// `args` for the next attempt: the timeout is what is left (zero once it ran out,
    /// so the call answers at once, as a timed-out wait would).
    fn rewrite(&self, args: &mut [Value]) {
        if let Some((arg, deadline)) = self.timeout {
            if let Some(slot) = args.get_mut(arg) {
                *slot = Value::Float(deadline.saturating_duration_since(Instant::now()).as_secs_f64());
            }
        }
    }
}

/// A handle on one server object, released when dropped.
///
/// Calls go to the manager's current connection (reconnecting first if it was lost),
/// where the object is attached by id; a call on an object that did not survive a
/// server restart fails with [`Error::NoSuchObject`] saying so.
pub(crate) struct Handle {
    link: Arc<Link>,
    slot: Arc<ObjectSlot>,
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
        link: &Arc<Link>,
        kind: Kind,
        name: Option<&str>,
        args: Vec<Value>,
    ) -> Result<Arc<Handle>> {
        let op = Op::Open { kind, name: name.map(str::to_owned), args: Args::positional(args) };
        match link.call_in_session(op).await? {
            (Reply::Opened { object, kind, .. }, generation) => {
                let slot = link.track(object, &kind, generation);
                Ok(Arc::new(Handle { link: link.clone(), slot, id: object, kind }))
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The object's id.
    pub(crate) fn id(&self) -> ObjectId {
        self.id
    }

    /// Calls `method` with positional arguments and returns the raw result.
    pub(crate) async fn call<A: CallArgs + ?Sized>(&self, method: &str, args: &A) -> Result<Value> {
        match self.link.call_method((&self.slot, self.id), method, args, || None).await?.0 {
            Reply::Value(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Calls a method that hands something over (a queue item, a lock grant), and
    /// returns it with the generation of the connection whose session received it. If
    /// this future is dropped before the reply arrives, the server cancels the call; if
    /// the value was already on its way, `give_back(value)` names the method and
    /// arguments that return it (e.g. `("unget", [item])`), so a hand-off is never lost.
    /// With `wait`, a call that waits is made again on the next connection if its own
    /// is lost (see [`Wait`]).
    pub(crate) async fn call_handing_over(
        self: &Arc<Self>,
        method: &str,
        args: Vec<Value>,
        give_back: GiveBack,
        wait: Option<Wait>,
    ) -> Result<(Value, u64)> {
        let on_orphan = || Some(self.on_orphan(give_back));
        let reply = match wait {
            // Made once: no loop around it (one state machine fewer on a `get_nowait`).
            None => self.link.call_method((&*self.slot, self.id), method, &args[..], on_orphan).await?,
            Some(wait) => self.again(method, args, wait, on_orphan).await?,
        };
        match reply {
            (Reply::Value(v), generation) => Ok((v, generation)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Calls a method that waits and hands nothing over (an event's or a queue's
    /// wait), made again on the next connection if its own is lost (see [`Wait`]).
    pub(crate) async fn call_waiting(&self, method: &str, args: Vec<Value>, wait: Wait) -> Result<Value> {
        match self.again(method, args, wait, || None).await?.0 {
            Reply::Value(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Calls `method` (see [`Link::call_method`] for `on_orphan` and the generation
    /// returned), and again (on the connection the manager reconnects to) for as long
    /// as attempts end with the connection lost, the wait's timeout cut to what is left.
    async fn again(
        &self,
        method: &str,
        mut args: Vec<Value>,
        wait: Wait,
        on_orphan: impl Fn() -> Option<OnOrphan>,
    ) -> Result<(Reply, u64)> {
        loop {
            let object = (&*self.slot, self.id);
            match self.link.call_method(object, method, &args[..], &on_orphan).await {
                Err(lost) if self.link.waits_again(&lost) => {
                    tracing::info!(object = ?self, method, reason = %lost, "the connection was lost while a call waited; waiting again on the next one");
                    wait.rewrite(&mut args);
                }
                other => return other,
            }
        }
    }

    /// What gives a late hand-off back. It keeps this handle alive until then: were
    /// the proxy dropped meanwhile, its `Release` would otherwise reach the server
    /// before the give-back, which would then find no handle and lose the item.
    fn on_orphan(self: &Arc<Self>, give_back: GiveBack) -> OnOrphan {
        OnOrphan::new(self.id, give_back, self.clone())
    }

    /// Calls `method` on the connection of `generation` only: for what a grant (a lock
    /// guard, a lease) of that connection's session does. If that session has ended,
    /// nothing is sent and the call fails with [`Error::SessionExpired`] saying so
    /// (`what` names the grant). `give_back`, if any, as for
    /// [`Handle::call_handing_over`].
    pub(crate) async fn call_pinned(
        self: &Arc<Self>,
        generation: u64,
        what: &str,
        method: &str,
        args: Vec<Value>,
        give_back: Option<GiveBack>,
    ) -> Result<Value> {
        let on_orphan = give_back.map(|g| self.on_orphan(g));
        match self.link.call_pinned(generation, what, self.id, method, &args[..], on_orphan).await? {
            Reply::Value(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `method` without waiting, on the connection of `generation` only; nothing
    /// if that session has ended (the server gave back what it held).
    pub(crate) fn send_pinned(&self, generation: u64, method: &str, args: Vec<Value>) {
        if let Some(conn) = self.link.live(generation) {
            conn.send_and_forget(Op::Call { object: self.id, method: method.into(), args: Args::positional(args) });
        }
    }

    /// True while the connection of `generation` is the manager's current one and
    /// alive: a grant of its session is still held, as far as this client can tell.
    pub(crate) fn is_live(&self, generation: u64) -> bool {
        self.link.is_live(generation)
    }

    /// Calls `method` and converts the result into `T`.
    pub(crate) async fn call_as<T: DeserializeOwned, A: CallArgs + ?Sized>(&self, method: &str, args: &A) -> Result<T> {
        decode(self.call(method, args).await?)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.link.untrack(self.id);
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
