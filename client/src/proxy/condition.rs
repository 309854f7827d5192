//! [`Condition`]: a shared condition variable (Python `threading.Condition` through a
//! manager), with its own RLock or a shared [`Lock`](crate::Lock) or
//! [`RLock`](crate::RLock).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::methods;
use agora_proto::native::Kind;
use agora_proto::Value;

use super::lock::{acquire_fenced, current_owner, granted, timed, timeout_value, Guard};
use super::Handle;
use crate::error::{Error, Result};
use crate::{Lock, Manager, RLock};

/// A lock a [`Condition`] can be built on: [`Lock`] or [`RLock`] (and their blocking
/// forms). Sealed.
pub trait ConditionLock: sealed::Sealed {
    /// The reference the server resolves to the lock object.
    #[doc(hidden)]
    fn lock_reference(&self) -> Value;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Lock {}
    impl Sealed for crate::RLock {}
    impl Sealed for crate::blocking::Lock {}
    impl Sealed for crate::blocking::RLock {}
}

impl ConditionLock for Lock {
    fn lock_reference(&self) -> Value {
        self.reference()
    }
}

impl ConditionLock for RLock {
    fn lock_reference(&self) -> Value {
        self.reference()
    }
}

/// If a re-acquired lock's reply arrives after the waiter stopped waiting: release
/// the whole re-acquired hold.
fn give_back_wait(value: Value) -> Option<(&'static str, Vec<Value>)> {
    match value {
        Value::Tuple(pair) => match pair.as_slice() {
            [_, Value::Int(token)] => {
                Some((methods::condition::RELEASE_FENCED.name, vec![Value::Int(*token), Value::Bool(true)]))
            }
            _ => None,
        },
        _ => None,
    }
}

/// A proxy for a shared condition variable (Python `manager.Condition(lock=None)`).
/// Cheap to clone.
///
/// Hold the condition ([`Condition::acquire`] returns a [`Guard`]) to wait on it or
/// notify it. As with [`RLock`], the holder is this session plus an owner name — the
/// calling task or thread unless set with [`Condition::owned_by`] — and
/// [`notify`](Condition::notify) must come from the owner holding it (with a plain
/// [`Lock`] underneath, CPython only checks the lock is locked).
///
/// ```no_run
/// # async fn demo(manager: agora_client::Manager) -> agora_client::Result<()> {
/// let ready = manager.condition("jobs-ready").await?;
/// let jobs = manager.list::<String>("jobs").await?;
/// // Consumer: wait until there is a job.
/// let guard = ready.acquire().await?;
/// let jobs_ref = &jobs;
/// ready.wait_for(&guard, || async move { Ok(!jobs_ref.is_empty().await?) }, None).await?;
/// let job = jobs.pop().await?;
/// drop(guard);
///
/// // Producer: add a job and wake one consumer.
/// let guard = ready.acquire().await?;
/// jobs.push(&"build".to_string()).await?;
/// ready.notify(1).await?;
/// drop(guard);
/// # let _ = job; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Condition {
    handle: Arc<Handle>,
    owner: Option<String>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Condition({:?})", self.handle)
    }
}

impl Condition {
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Condition { handle, owner: None }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// The same condition, held on behalf of `owner` instead of the calling task or
    /// thread (see [`RLock::owned_by`]).
    pub fn owned_by(&self, owner: impl Into<String>) -> Condition {
        Condition { handle: self.handle.clone(), owner: Some(owner.into()) }
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

    /// Waits for the condition's lock and returns its guard (Python `acquire()`).
    pub async fn acquire(&self) -> Result<Guard> {
        granted(self.acquire_with(vec![Value::Bool(true)]).await?)
    }

    /// The lock if it can be had now, else `None` (Python `acquire(blocking=False)`).
    pub async fn try_acquire(&self) -> Result<Option<Guard>> {
        self.acquire_with(vec![Value::Bool(false)]).await
    }

    /// Waits up to `timeout` for the lock; `None` if it did not come (Python
    /// `acquire(timeout=...)`).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<Guard>> {
        self.acquire_with(timed(timeout)).await
    }

    /// Releases one level of this owner's hold on the condition's lock (Python
    /// `release()`): [`Error::Runtime`] (`cannot release un-acquired lock`, or
    /// `release unlocked lock` on a plain [`Lock`]) if it is not held. Prefer
    /// releasing the [`Guard`].
    pub async fn release(&self) -> Result<()> {
        self.handle.call(methods::condition::RELEASE.name, &[Value::Str(self.owner().into())]).await.map(drop)
    }

    /// Releases the lock, waits until notified, and re-acquires it (restoring an
    /// RLock's recursion depth) before returning (Python `wait()`; agora's
    /// `wait_fenced`, which also answers the re-acquired lock's token, now
    /// [`Guard::token`]). [`Error::Runtime`] (`cannot wait on un-acquired lock`) if
    /// `guard` does not hold the lock.
    ///
    /// Dropping the future cancels the wait and leaves the lock released: the guard is
    /// then no longer valid, and dropping it does nothing.
    pub async fn wait(&self, guard: &Guard) -> Result<()> {
        self.wait_inner(guard, None).await.map(drop)
    }

    /// Like [`Condition::wait`], giving up waiting for a notification after
    /// `timeout`; true if notified. Either way the lock is held again on return
    /// (Python `wait(timeout)`).
    pub async fn wait_timeout(&self, guard: &Guard, timeout: Duration) -> Result<bool> {
        self.wait_inner(guard, Some(timeout)).await
    }

    async fn wait_inner(&self, guard: &Guard, timeout: Option<Duration>) -> Result<bool> {
        if guard.handle().id() != self.handle.id() {
            return Err(Error::InvalidValue("the guard holds another object, not this condition".into()));
        }
        let owner = guard.owner().map_or_else(|| self.owner(), str::to_owned);
        let token = guard.suspend();
        if token == 0 {
            return Err(Error::Runtime("cannot wait on un-acquired lock".into()));
        }
        let args = vec![timeout_value(timeout), Value::Str(owner.into())];
        let wait = methods::condition::WAIT_FENCED.name;
        // The wait releases and re-acquires the guard's own grant: only in its session.
        match self.handle.call_pinned(guard.generation(), guard.what(), wait, args, Some(give_back_wait)).await {
            Ok(Value::Tuple(pair)) => match pair.as_slice() {
                [Value::Bool(notified), Value::Int(token)] => {
                    guard.resume(*token as u64);
                    Ok(*notified)
                }
                _ => Err(Error::Protocol(format!("wait_fenced answered {pair:?}"))),
            },
            Ok(other) => Err(Error::Protocol(format!("wait_fenced answered {other:?}"))),
            Err(e) => {
                // The server refused before releasing anything.
                guard.resume(token);
                Err(e)
            }
        }
    }

    /// Waits until `predicate` answers true, re-checking it after every
    /// notification, for at most `timeout` (`None`: no limit); returns its last
    /// answer. The predicate runs here, in the client, with the lock held (Python
    /// `wait_for(predicate, timeout)`, which is client-side too).
    pub async fn wait_for<F, Fut>(&self, guard: &Guard, mut predicate: F, timeout: Option<Duration>) -> Result<bool>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        loop {
            if predicate().await? {
                return Ok(true);
            }
            match deadline {
                None => self.wait(guard).await?,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    self.wait_timeout(guard, left).await?;
                }
            }
        }
    }

    /// Wakes up to `n` waiters, longest waiting first (Python `notify(n)`). The caller
    /// must hold the condition: [`Error::Runtime`] (`cannot notify on un-acquired
    /// lock`) otherwise.
    pub async fn notify(&self, n: usize) -> Result<()> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.handle
            .call(methods::condition::NOTIFY.name, &[Value::Int(n), Value::Str(self.owner().into())])
            .await
            .map(drop)
    }

    /// Wakes every waiter (Python `notify_all()`). The caller must hold the condition.
    pub async fn notify_all(&self) -> Result<()> {
        self.handle.call(methods::condition::NOTIFY_ALL.name, &[Value::Str(self.owner().into())]).await.map(drop)
    }
}

impl Manager {
    /// The condition named `name` (with its own RLock), created if it does not exist.
    pub async fn condition(&self, name: &str) -> Result<Condition> {
        Ok(Condition::from_handle(self.open(Kind::Condition, Some(name), vec![]).await?))
    }

    /// A new anonymous condition with its own RLock (Python `manager.Condition()`).
    pub async fn new_condition(&self) -> Result<Condition> {
        Ok(Condition::from_handle(self.open(Kind::Condition, None, vec![]).await?))
    }

    /// The condition named `name`, created on `lock` if it does not exist (an
    /// existing one keeps its lock).
    pub async fn condition_with(&self, name: &str, lock: &impl ConditionLock) -> Result<Condition> {
        let args = vec![lock.lock_reference()];
        Ok(Condition::from_handle(self.open(Kind::Condition, Some(name), args).await?))
    }

    /// A new anonymous condition on `lock`, a shared [`Lock`] or [`RLock`] others may
    /// also use directly (Python `manager.Condition(lock)`).
    pub async fn new_condition_with(&self, lock: &impl ConditionLock) -> Result<Condition> {
        let args = vec![lock.lock_reference()];
        Ok(Condition::from_handle(self.open(Kind::Condition, None, args).await?))
    }
}
