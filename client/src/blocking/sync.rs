//! The blocking forms of the synchronization proxies — [`Lock`], [`RLock`],
//! [`Semaphore`], [`Condition`], [`Event`], [`Barrier`] — and their [`Guard`], plus
//! the [`Manager`] methods that open them. Semantics, errors and the fencing-token
//! pattern are those of the async API ([`crate::Lock`] has the details).
//!
//! ```no_run
//! use agora_client::blocking::Manager;
//!
//! fn main() -> agora_client::Result<()> {
//!     let manager = Manager::connect("127.0.0.1:50000", b"secret")?;
//!     let lock = manager.lock("counter-lock")?;
//!     let counter = manager.dict::<String, u64>("counters")?;
//!     {
//!         let _guard = lock.acquire()?; // released when dropped, or when this process dies
//!         let n = counter.get(&"hits".to_string())?.unwrap_or(0);
//!         counter.insert(&"hits".to_string(), &(n + 1))?;
//!     }
//!     Ok(())
//! }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Blocking, Manager, Runtime};
use crate::error::Result;
use crate::proto::Value;

/// What an acquire hands out, for synchronous code: the blocking form of
/// [`crate::Guard`]. Releases on drop (without waiting); [`Guard::release`] reports
/// errors.
pub struct Guard {
    inner: crate::Guard,
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.inner, f)
    }
}

impl Guard {
    fn wrap(inner: crate::Guard, rt: &Arc<Runtime>) -> Guard {
        Guard { inner, rt: rt.clone() }
    }

    /// The grant's fencing token ([`crate::Guard::token`]).
    pub fn token(&self) -> u64 {
        self.inner.token()
    }

    /// True while the guard still holds its grant as far as this client can tell
    /// ([`crate::Guard::is_valid`]).
    pub fn is_valid(&self) -> bool {
        self.inner.is_valid()
    }

    /// Releases the grant and reports the outcome. The blocking form of
    /// [`crate::Guard::release`].
    pub fn release(self) -> Result<()> {
        let Guard { inner, rt } = self;
        rt.block_on(inner.release())
    }
}

blocking_proxy! {
    /// A shared lock, for synchronous code: the blocking form of [`crate::Lock`].
    /// Cheap to clone, `Send + Sync`.
    Lock<> where [] {
        /// True while some client holds the lock (Python 3.13 `locked()`).
        fn is_locked(&self) -> Result<bool>;
        /// Releases the lock whoever holds it (Python `release()`); prefer releasing
        /// the [`Guard`].
        fn release(&self) -> Result<()>;
    }
}

impl Lock {
    /// Waits for the lock and returns its guard (Python `acquire()`). The blocking
    /// form of [`crate::Lock::acquire`].
    pub fn acquire(&self) -> Result<Guard> {
        self.rt.block_on(self.inner.acquire()).map(|g| Guard::wrap(g, &self.rt))
    }

    /// The lock if it is free now, else `None` (Python `acquire(blocking=False)`).
    /// The blocking form of [`crate::Lock::try_acquire`].
    pub fn try_acquire(&self) -> Result<Option<Guard>> {
        Ok(self.rt.block_on(self.inner.try_acquire())?.map(|g| Guard::wrap(g, &self.rt)))
    }

    /// Waits up to `timeout` for the lock (Python `acquire(timeout=...)`). The
    /// blocking form of [`crate::Lock::acquire_timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<Guard>> {
        Ok(self.rt.block_on(self.inner.acquire_timeout(timeout))?.map(|g| Guard::wrap(g, &self.rt)))
    }
}

blocking_proxy! {
    /// A shared re-entrant lock, for synchronous code: the blocking form of
    /// [`crate::RLock`], re-entrant per calling thread by default. Cheap to clone,
    /// `Send + Sync`.
    RLock<> where [] {
        /// Releases one level of the calling thread's hold (Python `release()`);
        /// prefer releasing the [`Guard`].
        fn release(&self) -> Result<()>;
    }
}

impl RLock {
    /// The same lock, acquired on behalf of `owner` instead of the calling thread.
    /// The blocking form of [`crate::RLock::owned_by`].
    pub fn owned_by(&self, owner: impl Into<String>) -> RLock {
        RLock { inner: self.inner.owned_by(owner), rt: self.rt.clone() }
    }

    /// Waits for the lock (at once if this thread holds it already) (Python
    /// `acquire()`). The blocking form of [`crate::RLock::acquire`].
    pub fn acquire(&self) -> Result<Guard> {
        self.rt.block_on(self.inner.acquire()).map(|g| Guard::wrap(g, &self.rt))
    }

    /// The lock if it can be had now, else `None` (Python `acquire(blocking=False)`).
    /// The blocking form of [`crate::RLock::try_acquire`].
    pub fn try_acquire(&self) -> Result<Option<Guard>> {
        Ok(self.rt.block_on(self.inner.try_acquire())?.map(|g| Guard::wrap(g, &self.rt)))
    }

    /// Waits up to `timeout` for the lock (Python `acquire(timeout=...)`). The
    /// blocking form of [`crate::RLock::acquire_timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<Guard>> {
        Ok(self.rt.block_on(self.inner.acquire_timeout(timeout))?.map(|g| Guard::wrap(g, &self.rt)))
    }
}

blocking_proxy! {
    /// A shared semaphore, bounded or not, for synchronous code: the blocking form of
    /// [`crate::Semaphore`]. Cheap to clone, `Send + Sync`.
    Semaphore<> where [] {
        /// Adds `n` permits whoever took them (Python `release(n)`); prefer releasing
        /// the [`Guard`].
        fn release(&self, n: usize) -> Result<()>;
        /// The number of free permits now (agora's `get_value`).
        fn available(&self) -> Result<usize>;
    }
}

impl Semaphore {
    /// Waits for a permit (Python `acquire()`). The blocking form of
    /// [`crate::Semaphore::acquire`].
    pub fn acquire(&self) -> Result<Guard> {
        self.rt.block_on(self.inner.acquire()).map(|g| Guard::wrap(g, &self.rt))
    }

    /// A permit if one is free now, else `None` (Python `acquire(blocking=False)`).
    /// The blocking form of [`crate::Semaphore::try_acquire`].
    pub fn try_acquire(&self) -> Result<Option<Guard>> {
        Ok(self.rt.block_on(self.inner.try_acquire())?.map(|g| Guard::wrap(g, &self.rt)))
    }

    /// Waits up to `timeout` for a permit (Python `acquire(timeout=...)`). The
    /// blocking form of [`crate::Semaphore::acquire_timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<Guard>> {
        Ok(self.rt.block_on(self.inner.acquire_timeout(timeout))?.map(|g| Guard::wrap(g, &self.rt)))
    }
}

blocking_proxy! {
    /// A shared condition variable, for synchronous code: the blocking form of
    /// [`crate::Condition`], held per calling thread by default. Cheap to clone,
    /// `Send + Sync`.
    Condition<> where [] {
        /// Wakes up to `n` waiters, longest waiting first (Python `notify(n)`); the
        /// calling thread must hold the condition.
        fn notify(&self, n: usize) -> Result<()>;
        /// Wakes every waiter (Python `notify_all()`); the calling thread must hold
        /// the condition.
        fn notify_all(&self) -> Result<()>;
        /// Releases one level of the calling thread's hold (Python `release()`);
        /// prefer releasing the [`Guard`].
        fn release(&self) -> Result<()>;
    }
}

impl Condition {
    /// The same condition, held on behalf of `owner` instead of the calling thread.
    /// The blocking form of [`crate::Condition::owned_by`].
    pub fn owned_by(&self, owner: impl Into<String>) -> Condition {
        Condition { inner: self.inner.owned_by(owner), rt: self.rt.clone() }
    }

    /// Waits for the condition's lock (Python `acquire()`). The blocking form of
    /// [`crate::Condition::acquire`].
    pub fn acquire(&self) -> Result<Guard> {
        self.rt.block_on(self.inner.acquire()).map(|g| Guard::wrap(g, &self.rt))
    }

    /// The lock if it can be had now, else `None` (Python `acquire(blocking=False)`).
    /// The blocking form of [`crate::Condition::try_acquire`].
    pub fn try_acquire(&self) -> Result<Option<Guard>> {
        Ok(self.rt.block_on(self.inner.try_acquire())?.map(|g| Guard::wrap(g, &self.rt)))
    }

    /// Waits up to `timeout` for the lock (Python `acquire(timeout=...)`). The
    /// blocking form of [`crate::Condition::acquire_timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<Guard>> {
        Ok(self.rt.block_on(self.inner.acquire_timeout(timeout))?.map(|g| Guard::wrap(g, &self.rt)))
    }

    /// Releases the lock, waits until notified, re-acquires it (Python `wait()`).
    /// The blocking form of [`crate::Condition::wait`].
    pub fn wait(&self, guard: &Guard) -> Result<()> {
        self.rt.block_on(self.inner.wait(&guard.inner))
    }

    /// Like [`Condition::wait`], giving up waiting for a notification after
    /// `timeout`; true if notified (Python `wait(timeout)`). The blocking form of
    /// [`crate::Condition::wait_timeout`].
    pub fn wait_timeout(&self, guard: &Guard, timeout: Duration) -> Result<bool> {
        self.rt.block_on(self.inner.wait_timeout(&guard.inner, timeout))
    }

    /// Waits until `predicate` answers true, re-checking it after every notification,
    /// for at most `timeout`; returns its last answer (Python `wait_for`). The
    /// predicate may call other blocking proxies. The blocking form of
    /// [`crate::Condition::wait_for`].
    pub fn wait_for(
        &self,
        guard: &Guard,
        mut predicate: impl FnMut() -> Result<bool>,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if predicate()? {
                return Ok(true);
            }
            match deadline {
                None => self.wait(guard)?,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    self.wait_timeout(guard, left)?;
                }
            }
        }
    }
}

blocking_proxy! {
    /// A shared event, for synchronous code: the blocking form of [`crate::Event`].
    /// Cheap to clone, `Send + Sync`.
    Event<> where [] {
        /// Sets the flag and wakes every waiter (Python `set()`).
        fn set(&self) -> Result<()>;
        /// Clears the flag (Python `clear()`).
        fn clear(&self) -> Result<()>;
        /// True if the flag is set (Python `is_set()`).
        fn is_set(&self) -> Result<bool>;
        /// Waits until the flag is set (Python `wait()`).
        fn wait(&self) -> Result<()>;
        /// Waits up to `timeout` for the flag; returns whether it is set (Python
        /// `wait(timeout)`).
        fn wait_timeout(&self, timeout: Duration) -> Result<bool>;
    }
}

blocking_proxy! {
    /// A shared barrier, for synchronous code: the blocking form of
    /// [`crate::Barrier`]. Cheap to clone, `Send + Sync`.
    Barrier<> where [] {
        /// Waits for the round to fill; returns this caller's arrival index (Python
        /// `wait()`).
        fn wait(&self) -> Result<usize>;
        /// Like `wait`, breaking the barrier after `timeout` (Python `wait(timeout)`).
        fn wait_timeout(&self, timeout: Duration) -> Result<usize>;
        /// Breaks the barrier (Python `abort()`).
        fn abort(&self) -> Result<()>;
        /// Makes the barrier whole and empty again (Python `reset()`).
        fn reset(&self) -> Result<()>;
        /// How many parties each round needs (Python `parties`).
        fn parties(&self) -> Result<usize>;
        /// How many parties wait in the current round (Python `n_waiting`).
        fn n_waiting(&self) -> Result<usize>;
        /// True if the barrier is broken (Python `broken`).
        fn broken(&self) -> Result<bool>;
    }
}

impl crate::ConditionLock for Lock {
    fn lock_reference(&self) -> Value {
        self.inner.lock_reference()
    }
}

impl crate::ConditionLock for RLock {
    fn lock_reference(&self) -> Value {
        self.inner.lock_reference()
    }
}

impl Manager {
    /// The lock named `name`, created unlocked if it does not exist. The blocking
    /// form of [`crate::Manager::lock`].
    pub fn lock(&self, name: &str) -> Result<Lock> {
        self.rt.block_on(self.inner.lock(name)).map(|p| self.wrap(p))
    }

    /// A new anonymous lock (Python `manager.Lock()`). The blocking form of
    /// [`crate::Manager::new_lock`].
    pub fn new_lock(&self) -> Result<Lock> {
        self.rt.block_on(self.inner.new_lock()).map(|p| self.wrap(p))
    }

    /// The re-entrant lock named `name`, created unlocked if it does not exist. The
    /// blocking form of [`crate::Manager::rlock`].
    pub fn rlock(&self, name: &str) -> Result<RLock> {
        self.rt.block_on(self.inner.rlock(name)).map(|p| self.wrap(p))
    }

    /// A new anonymous re-entrant lock (Python `manager.RLock()`). The blocking form
    /// of [`crate::Manager::new_rlock`].
    pub fn new_rlock(&self) -> Result<RLock> {
        self.rt.block_on(self.inner.new_rlock()).map(|p| self.wrap(p))
    }

    /// The semaphore named `name`, created with `value` permits if it does not
    /// exist. The blocking form of [`crate::Manager::semaphore`].
    pub fn semaphore(&self, name: &str, value: usize) -> Result<Semaphore> {
        self.rt.block_on(self.inner.semaphore(name, value)).map(|p| self.wrap(p))
    }

    /// A new anonymous semaphore with `value` permits (Python
    /// `manager.Semaphore(value)`). The blocking form of
    /// [`crate::Manager::new_semaphore`].
    pub fn new_semaphore(&self, value: usize) -> Result<Semaphore> {
        self.rt.block_on(self.inner.new_semaphore(value)).map(|p| self.wrap(p))
    }

    /// The bounded semaphore named `name`, created with `value` permits if it does
    /// not exist. The blocking form of [`crate::Manager::bounded_semaphore`].
    pub fn bounded_semaphore(&self, name: &str, value: usize) -> Result<Semaphore> {
        self.rt.block_on(self.inner.bounded_semaphore(name, value)).map(|p| self.wrap(p))
    }

    /// A new anonymous bounded semaphore with `value` permits (Python
    /// `manager.BoundedSemaphore(value)`). The blocking form of
    /// [`crate::Manager::new_bounded_semaphore`].
    pub fn new_bounded_semaphore(&self, value: usize) -> Result<Semaphore> {
        self.rt.block_on(self.inner.new_bounded_semaphore(value)).map(|p| self.wrap(p))
    }

    /// The condition named `name` (with its own RLock), created if it does not exist.
    /// The blocking form of [`crate::Manager::condition`].
    pub fn condition(&self, name: &str) -> Result<Condition> {
        self.rt.block_on(self.inner.condition(name)).map(|p| self.wrap(p))
    }

    /// A new anonymous condition with its own RLock (Python `manager.Condition()`).
    /// The blocking form of [`crate::Manager::new_condition`].
    pub fn new_condition(&self) -> Result<Condition> {
        self.rt.block_on(self.inner.new_condition()).map(|p| self.wrap(p))
    }

    /// The condition named `name`, created on `lock` if it does not exist. The
    /// blocking form of [`crate::Manager::condition_with`].
    pub fn condition_with(&self, name: &str, lock: &impl crate::ConditionLock) -> Result<Condition> {
        self.rt.block_on(self.inner.condition_with(name, lock)).map(|p| self.wrap(p))
    }

    /// A new anonymous condition on a shared `lock` (Python
    /// `manager.Condition(lock)`). The blocking form of
    /// [`crate::Manager::new_condition_with`].
    pub fn new_condition_with(&self, lock: &impl crate::ConditionLock) -> Result<Condition> {
        self.rt.block_on(self.inner.new_condition_with(lock)).map(|p| self.wrap(p))
    }

    /// The event named `name`, created unset if it does not exist. The blocking form
    /// of [`crate::Manager::event`].
    pub fn event(&self, name: &str) -> Result<Event> {
        self.rt.block_on(self.inner.event(name)).map(|p| self.wrap(p))
    }

    /// A new anonymous event (Python `manager.Event()`). The blocking form of
    /// [`crate::Manager::new_event`].
    pub fn new_event(&self) -> Result<Event> {
        self.rt.block_on(self.inner.new_event()).map(|p| self.wrap(p))
    }

    /// The barrier named `name`, created for `parties` parties if it does not exist.
    /// The blocking form of [`crate::Manager::barrier`].
    pub fn barrier(&self, name: &str, parties: usize) -> Result<Barrier> {
        self.rt.block_on(self.inner.barrier(name, parties)).map(|p| self.wrap(p))
    }

    /// A new anonymous barrier for `parties` parties (Python
    /// `manager.Barrier(parties)`). The blocking form of
    /// [`crate::Manager::new_barrier`].
    pub fn new_barrier(&self, parties: usize) -> Result<Barrier> {
        self.rt.block_on(self.inner.new_barrier(parties)).map(|p| self.wrap(p))
    }

    /// Why the connection is unusable, or `None` while it is healthy: after
    /// [`crate::Error::SessionExpired`], everything the session held is gone. The
    /// blocking form of [`crate::Manager::connection_error`].
    pub fn connection_error(&self) -> Option<crate::Error> {
        self.inner.connection_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shareable<T: Send + Sync + 'static>() {}

    #[test]
    fn sync_handles_are_send_and_sync() {
        shareable::<Lock>();
        shareable::<RLock>();
        shareable::<Semaphore>();
        shareable::<Condition>();
        shareable::<Event>();
        shareable::<Barrier>();
        shareable::<Guard>();
        shareable::<crate::Guard>();
    }
}
