//! [`RLock`]: a shared re-entrant lock (Python `threading.RLock` through a manager).

use std::sync::Arc;
use std::time::Duration;

use agora_proto::methods;
use agora_proto::native::Kind;
use agora_proto::Value;

use super::lock::{acquire_fenced, current_owner, granted, timed, Guard};
use super::Handle;
use crate::error::Result;
use crate::Manager;

/// A proxy for a shared re-entrant lock (Python `manager.RLock()`, a
/// `threading.RLock`). Cheap to clone.
///
/// An RLock has an owner: this client's session together with an owner name. By
/// default the name is the calling Tokio task (inside a task) or thread (outside one,
/// as in the blocking API), so the lock is re-entrant per task or thread, like
/// Python's per thread. Futures joined inside one task share its owner; give them
/// distinct ones with [`RLock::owned_by`]. Only the owner releases (a [`Guard`] keeps
/// the owner it acquired for, wherever it is dropped), and when the session ends the
/// server releases the hold however deep.
///
/// Each hold carries a fencing token; re-entrant acquires return guards with the same
/// token (see [`crate::Lock`] for the pattern).
#[derive(Clone)]
pub struct RLock {
    handle: Arc<Handle>,
    owner: Option<String>,
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RLock({:?})", self.handle)
    }
}

impl RLock {
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        RLock { handle, owner: None }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// The same lock, acquired on behalf of `owner` instead of the calling task or
    /// thread: acquires through it are re-entrant with each other only.
    pub fn owned_by(&self, owner: impl Into<String>) -> RLock {
        RLock { handle: self.handle.clone(), owner: Some(owner.into()) }
    }

    fn owner(&self) -> String {
        self.owner.clone().unwrap_or_else(current_owner)
    }

    async fn acquire_with(&self, mut args: Vec<Value>) -> Result<Option<Guard>> {
        let owner = self.owner();
        args.resize(2, Value::None);
        args.push(Value::Str(owner.clone().into()));
        acquire_fenced(&self.handle, args, Some(owner)).await
    }

    /// Waits for the lock (at once if this owner holds it already) and returns a
    /// guard releasing one level (Python `acquire()`; agora's `acquire_fenced`).
    pub async fn acquire(&self) -> Result<Guard> {
        granted(self.acquire_with(vec![Value::Bool(true)]).await?)
    }

    /// The lock if it is free or this owner's now, else `None` (Python
    /// `acquire(blocking=False)`).
    pub async fn try_acquire(&self) -> Result<Option<Guard>> {
        self.acquire_with(vec![Value::Bool(false)]).await
    }

    /// Waits up to `timeout` for the lock; `None` if it did not come (Python
    /// `acquire(timeout=...)`).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<Guard>> {
        self.acquire_with(timed(timeout)).await
    }

    /// Releases one level of this owner's hold (Python `release()`):
    /// [`Error::Runtime`](crate::Error::Runtime) (`cannot release un-acquired lock`)
    /// if this owner does not hold it. Prefer releasing the [`Guard`]; a guard whose
    /// level was released this way still releases one when dropped.
    pub async fn release(&self) -> Result<()> {
        self.handle.call(methods::rlock::RELEASE.name, &[Value::Str(self.owner().into())]).await.map(drop)
    }

    /// The `Condition(lock)` argument that refers to this lock.
    pub(crate) fn reference(&self) -> Value {
        agora_proto::reference::ObjectRef::new(self.id(), "RLock").to_value()
    }
}

impl Manager {
    /// The re-entrant lock named `name`, created unlocked if it does not exist.
    pub async fn rlock(&self, name: &str) -> Result<RLock> {
        Ok(RLock::from_handle(self.open(Kind::RLock, Some(name), vec![]).await?))
    }

    /// A new anonymous re-entrant lock (Python `manager.RLock()`).
    pub async fn new_rlock(&self) -> Result<RLock> {
        Ok(RLock::from_handle(self.open(Kind::RLock, None, vec![]).await?))
    }
}
