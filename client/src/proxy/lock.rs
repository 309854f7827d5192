//! [`Lock`]: a shared lock (Python `threading.Lock` through a manager), and [`Guard`],
//! the RAII grant every acquirer in agora hands out (Lock, RLock, Semaphore and
//! Condition).
//!
//! The semantics every acquirer shares (locks die with their holder, fencing tokens,
//! dropping guards) are documented on [`Lock`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora_proto::methods;
use agora_proto::native::Kind;
use agora_proto::Value;

use super::{Handle, Wait};
use crate::error::{Error, Result};
use crate::Manager;

/// CPython's `threading.TIMEOUT_MAX` on Linux: longer timeouts mean "forever".
const TIMEOUT_MAX: f64 = 9_223_372_036.0;

/// A timeout as the seconds Python expects, or `None` for one too long to matter.
pub(crate) fn seconds(timeout: Duration) -> Option<f64> {
    Some(timeout.as_secs_f64()).filter(|s| *s <= TIMEOUT_MAX)
}

/// The timeout argument: seconds, or `None` (forever).
pub(crate) fn timeout_value(timeout: Option<Duration>) -> Value {
    timeout.and_then(seconds).map_or(Value::None, Value::Float)
}

/// The owner name of the calling task (inside a Tokio task) or thread (outside one,
/// as in the blocking API): what an RLock or Condition is re-entrant for by default.
pub(crate) fn current_owner() -> String {
    match tokio::task::try_id() {
        Some(id) => format!("task-{id}"),
        None => format!("thread-{:?}", std::thread::current().id()),
    }
}

/// If a grant's reply arrives after its caller stopped waiting: give it back.
///
/// This and the other helpers here serve every acquirer (Lock, RLock, Semaphore,
/// Condition), which all declare `acquire_fenced`, `release_fenced` and `release`
/// under the same names ([`agora_proto::methods`]).
pub(crate) fn give_back_token(value: Value) -> Option<(&'static str, Vec<Value>)> {
    match value {
        Value::Int(token) => Some((methods::lock::RELEASE_FENCED.name, vec![Value::Int(token)])),
        _ => None,
    }
}

/// How a guard gives its grant back.
#[derive(Debug, Clone)]
enum ReleaseBy {
    /// `release_fenced(token)`: exactly this grant (Lock, Semaphore).
    Token,
    /// `release(owner)`: one level of the owner's hold (RLock, Condition).
    Owner(String),
}

/// What an acquire hands out: a held Lock or RLock, a Semaphore permit, or a held
/// Condition. Releases on drop; [`Guard::release`] releases and reports errors.
///
/// The guard keeps its object's handle open, so the object outlives it.
///
/// A grant belongs to the server session that obtained it. If the manager loses its
/// connection (and reconnects: a new session), the server releases what the old
/// session held: the guard reports [`Guard::is_valid`] false from then on, releasing
/// it fails with [`Error::SessionExpired`] without sending anything (the new session
/// does not own the grant, and releasing by its token or owner could release someone
/// else's), and dropping it sends nothing.
pub struct Guard {
    handle: Arc<Handle>,
    /// The grant's fencing token; 0 once the guard no longer holds anything.
    token: AtomicU64,
    release: ReleaseBy,
    /// The generation of the connection whose session holds the grant.
    generation: u64,
}

/// What a guard's grant is called in errors.
const GRANT: &str = "this guard's grant (a lock, permit or hold)";

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Guard({:?}, token {}, connection {})",
            self.handle,
            self.token.load(Ordering::Acquire),
            self.generation
        )
    }
}

impl Guard {
    /// A guard releasing its grant by token; the session of connection `generation`
    /// holds it.
    pub(crate) fn by_token(handle: Arc<Handle>, token: u64, generation: u64) -> Guard {
        Guard { handle, token: AtomicU64::new(token), release: ReleaseBy::Token, generation }
    }

    /// A guard releasing one level of `owner`'s hold.
    pub(crate) fn by_owner(handle: Arc<Handle>, token: u64, owner: String, generation: u64) -> Guard {
        Guard { handle, token: AtomicU64::new(token), release: ReleaseBy::Owner(owner), generation }
    }

    /// The grant's fencing token: larger than the token of every earlier grant of the
    /// same lock, server-wide and for the life of the server (see [`Lock`] for how to
    /// use it). Re-entrant RLock acquires share their
    /// hold's token; after a [`Condition::wait`](crate::Condition::wait) it is the
    /// token of the re-acquired lock. For a semaphore it identifies the permit. `0`
    /// once the guard no longer holds anything.
    pub fn token(&self) -> u64 {
        self.token.load(Ordering::Acquire)
    }

    /// True while the guard still holds its grant as far as this client can tell:
    /// false once released, once the connection it was granted on is gone (in
    /// particular when the server ended the session, [`Error::SessionExpired`], and
    /// after the manager reconnected: the server released everything the old session
    /// held), or after a condition wait on it was cancelled.
    pub fn is_valid(&self) -> bool {
        self.token() != 0 && self.handle.is_live(self.generation)
    }

    /// The generation of the connection whose session holds the grant.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// What a call on behalf of this guard's grant is called in errors.
    pub(crate) fn what(&self) -> &'static str {
        GRANT
    }

    /// The object this guard holds.
    pub(crate) fn handle(&self) -> &Arc<Handle> {
        &self.handle
    }

    /// The RLock owner the guard's hold belongs to.
    pub(crate) fn owner(&self) -> Option<&str> {
        match &self.release {
            ReleaseBy::Owner(owner) => Some(owner),
            ReleaseBy::Token => None,
        }
    }

    /// Marks the grant given up (a condition wait releases it); returns the token.
    pub(crate) fn suspend(&self) -> u64 {
        self.token.swap(0, Ordering::AcqRel)
    }

    /// Marks the grant held again, under `token`.
    pub(crate) fn resume(&self, token: u64) {
        self.token.store(token, Ordering::Release);
    }

    /// The release call for a grant with `token`.
    fn release_call(&self, token: u64) -> (&'static str, Vec<Value>) {
        match &self.release {
            ReleaseBy::Token => (methods::lock::RELEASE_FENCED.name, vec![Value::Int(token as i64)]),
            ReleaseBy::Owner(owner) => (methods::rlock::RELEASE.name, vec![Value::Str(owner.clone().into())]),
        }
    }

    /// Releases the grant and reports the outcome: [`Error::Runtime`] (Lock, RLock,
    /// Condition) or [`Error::InvalidValue`] (Semaphore) if it was no longer held —
    /// released meanwhile by another session, say — and [`Error::SessionExpired`] if
    /// the session that obtained it is gone (the server released the grant then;
    /// nothing is sent). On a manager that does not reconnect, a lost connection's
    /// own error.
    pub async fn release(self) -> Result<()> {
        // Nothing awaits between taking the token and sending the release, so a
        // cancelled release never leaves the grant both unsent and forgotten.
        let token = self.suspend();
        if token == 0 {
            return Err(Error::Runtime("this guard no longer holds its grant (a wait on it was cancelled)".into()));
        }
        let (method, args) = self.release_call(token);
        self.handle.call_pinned(self.generation, GRANT, method, args, None).await.map(drop)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let token = self.suspend();
        if token == 0 {
            return;
        }
        let (method, args) = self.release_call(token);
        self.handle.send_pinned(self.generation, method, args);
    }
}

/// Runs `acquire_fenced` with `args`; a token becomes a guard, `False` none.
pub(crate) async fn acquire_fenced(
    handle: &Arc<Handle>,
    args: Vec<Value>,
    owner: Option<String>,
) -> Result<Option<Guard>> {
    let wait = Wait::of_blocking(&args);
    match handle.call_handing_over(methods::lock::ACQUIRE_FENCED.name, args, give_back_token, wait).await? {
        (Value::Int(token), generation) => Ok(Some(match owner {
            Some(owner) => Guard::by_owner(handle.clone(), token as u64, owner, generation),
            None => Guard::by_token(handle.clone(), token as u64, generation),
        })),
        (Value::Bool(false), _) => Ok(None),
        (other, _) => Err(Error::Protocol(format!("acquire_fenced answered {other:?}"))),
    }
}

/// A guard from a call that waits without a timeout (so never answers `False`).
pub(crate) fn granted(guard: Option<Guard>) -> Result<Guard> {
    guard.ok_or_else(|| Error::Protocol("a blocking acquire answered False".into()))
}

/// The `(blocking, timeout)` arguments of a lock acquire that waits up to `timeout`.
pub(crate) fn timed(timeout: Duration) -> Vec<Value> {
    vec![Value::Bool(true), timeout_value(Some(timeout))]
}

/// A proxy for a shared lock (Python `manager.Lock()`, a `threading.Lock`). Cheap to
/// clone.
///
/// A lock has no owner, as in Python: acquiring returns a [`Guard`] that releases on
/// drop, and [`Lock::release`] lets any client release it, as Python's `release()`
/// does. When the session holding it ends, the server releases it.
///
/// # Locks die with their holder
///
/// Unlike a CPython manager, whose locks stay locked forever when their holder dies,
/// agora records every grant against the holder's session: when the session ends —
/// the client closes, crashes, is killed, or stops answering heartbeats — the server
/// releases what it held and serves the next waiter. A holder that was cut off (say,
/// frozen past the heartbeat timeout) learns it: its next call fails with
/// [`Error::SessionExpired`](crate::Error::SessionExpired), and its guards report
/// [`Guard::is_valid`] false.
///
/// On a cluster, a leader change does not end the session: the new leader keeps it
/// for a heartbeat timeout, the manager reconnects and resumes it by itself, and its
/// guards are valid again (while it reconnects, [`Guard::is_valid`] is false). Only
/// a session that had an acquire or a get in flight when its connection died is
/// ended instead, so that a grant whose answer was lost goes back.
///
/// # Fencing tokens
///
/// That a lock can be taken away from a holder that is merely slow is what makes it
/// safe against crashes — and what makes it unsafe to trust blindly: a holder paused
/// at the wrong moment (GC, swap, SIGSTOP) may still act after its lock went to
/// someone else. Every grant therefore carries a *fencing token*, a number that
/// strictly increases per lock for the life of the server. Pass it along with every
/// write to the resource the lock protects, and have the resource refuse tokens older
/// than the newest it has seen:
///
/// ```
/// use std::sync::Mutex;
///
/// /// A resource that only accepts writes fenced by the newest lock grant it has seen.
/// struct Storage {
///     newest_token: Mutex<u64>,
///     data: Mutex<Vec<String>>,
/// }
///
/// impl Storage {
///     fn write(&self, token: u64, line: &str) -> Result<(), String> {
///         let mut newest = self.newest_token.lock().unwrap();
///         if token < *newest {
///             return Err(format!("stale token {token}: a newer holder ({}) wrote already", *newest));
///         }
///         *newest = token;
///         self.data.lock().unwrap().push(line.to_owned());
///         Ok(())
///     }
/// }
///
/// # async fn demo(manager: agora_client::Manager, storage: &Storage) -> agora_client::Result<()> {
/// let lock = manager.lock("storage").await?;
/// let guard = lock.acquire().await?;
/// // Should this process stall here and lose the lock meanwhile, the next holder's
/// // larger token reaches the storage first, and this late write is refused.
/// storage.write(guard.token(), "hello").map_err(agora_client::Error::Runtime)?;
/// guard.release().await?;
/// # Ok(()) }
/// # let storage = Storage { newest_token: Mutex::new(0), data: Mutex::new(vec![]) };
/// # assert!(storage.write(5, "a").is_ok());
/// # assert!(storage.write(4, "late").is_err());
/// ```
///
/// # Dropping a guard
///
/// Dropping a [`Guard`] releases what it holds: `Drop` cannot wait, so the release is
/// sent without waiting for its answer (requests from one connection take effect in
/// order, so a later call sees it done). Call [`Guard::release`] to learn whether the
/// release worked.
#[derive(Clone)]
pub struct Lock {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lock({:?})", self.handle)
    }
}

impl Lock {
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Lock { handle }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// Waits for the lock and returns its guard (Python `acquire()`; agora's
    /// `acquire_fenced`, which also answers the fencing token). Waiters are served
    /// first come, first served. Dropping the future gives up waiting without ever
    /// leaving the lock held.
    pub async fn acquire(&self) -> Result<Guard> {
        granted(acquire_fenced(&self.handle, vec![Value::Bool(true)], None).await?)
    }

    /// The lock if it is free now, else `None` (Python `acquire(blocking=False)`).
    pub async fn try_acquire(&self) -> Result<Option<Guard>> {
        acquire_fenced(&self.handle, vec![Value::Bool(false)], None).await
    }

    /// Waits up to `timeout` for the lock; `None` if it did not come (Python
    /// `acquire(timeout=...)`).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<Guard>> {
        acquire_fenced(&self.handle, timed(timeout), None).await
    }

    /// True while some client holds the lock (Python 3.13 `locked()`).
    pub async fn is_locked(&self) -> Result<bool> {
        self.handle.call_as(methods::lock::LOCKED.name, &[]).await
    }

    /// Releases the lock whoever holds it (Python `release()`: a Lock has no owner).
    /// This session's own grant goes first if it has one, else the oldest one.
    /// [`Error::Runtime`] (`release unlocked lock`) if it is not locked — unless its
    /// holder's session ended holding it, in which case the server already released
    /// it and this release is absorbed once. Prefer releasing the [`Guard`].
    pub async fn release(&self) -> Result<()> {
        self.handle.call(methods::lock::RELEASE.name, &[]).await.map(drop)
    }

    /// The `Condition(lock)` argument that refers to this lock.
    pub(crate) fn reference(&self) -> Value {
        agora_proto::reference::ObjectRef::new(self.id(), "Lock").to_value()
    }
}

impl Manager {
    /// The lock named `name`, created unlocked if it does not exist.
    pub async fn lock(&self, name: &str) -> Result<Lock> {
        Ok(Lock::from_handle(self.open(Kind::Lock, Some(name), vec![]).await?))
    }

    /// A new anonymous lock (Python `manager.Lock()`).
    pub async fn new_lock(&self) -> Result<Lock> {
        Ok(Lock::from_handle(self.open(Kind::Lock, None, vec![]).await?))
    }
}
