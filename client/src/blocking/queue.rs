//! The blocking forms of the queue proxies — [`Queue`], [`JoinableQueue`], [`Leased`]
//! and the [`Iter`] over a queue's items — plus the [`Manager`] methods that open
//! them. Semantics, errors and the no-item-lost guarantees are those of the async API
//! ([`crate::Queue`] has the details).
//!
//! ```no_run
//! use std::time::Duration;
//! use agora_client::blocking::Manager;
//!
//! fn main() -> agora_client::Result<()> {
//!     let manager = Manager::connect("127.0.0.1:50000", b"secret")?;
//!     let jobs = manager.joinable_queue::<u64>("jobs", 64)?;
//!     let worker = {
//!         let jobs = jobs.clone();
//!         std::thread::spawn(move || -> agora_client::Result<()> {
//!             // Ends when the queue is shut down and drained.
//!             for job in jobs.iter() {
//!                 println!("job {}", job?);
//!                 jobs.task_done()?;
//!             }
//!             Ok(())
//!         })
//!     };
//!     for job in 0..10 {
//!         jobs.put(&job)?; // waits while 64 jobs are queued
//!     }
//!     jobs.join()?; // every job done
//!     jobs.shutdown(false)?;
//!     worker.join().expect("worker panicked")?;
//!     Ok(())
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Blocking, Manager, Runtime};
use crate::error::{Error, Result};

blocking_proxy! {
    /// A shared FIFO queue of `T`, for synchronous code: the blocking form of
    /// [`crate::Queue`]. Cheap to clone, `Send + Sync`.
    Queue<T> where [T: Serialize + DeserializeOwned] {
        /// Appends `item`, waiting while the queue is full (Python `put(item)`).
        fn put(&self, item: &T) -> Result<()>;
        /// Appends `item`, waiting at most `timeout` for room (Python `put(item,
        /// timeout=t)`); [`Error::Full`] if there was none.
        fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()>;
        /// Appends `item` if there is room now (Python `put_nowait`); [`Error::Full`]
        /// if not.
        fn try_put(&self, item: &T) -> Result<()>;
        /// Removes and returns the item at the head, waiting for one (Python `get()`).
        fn get(&self) -> Result<T>;
        /// Removes and returns the item at the head, waiting at most `timeout` (Python
        /// `get(timeout=t)`); [`Error::Empty`] if none came.
        fn get_timeout(&self, timeout: Duration) -> Result<T>;
        /// Removes and returns the item at the head if there is one now (Python
        /// `get_nowait`), else `None`.
        fn try_get(&self) -> Result<Option<T>>;
        /// Number of items in the queue, not counting leased ones (Python `qsize()`).
        fn len(&self) -> Result<usize>;
        /// True when no item is in the queue (Python `empty()`).
        fn is_empty(&self) -> Result<bool>;
        /// True when the queue is bounded and full (Python `full()`).
        fn is_full(&self) -> Result<bool>;
        /// Number of items out on lease (agora's `leased`).
        fn leased_len(&self) -> Result<usize>;
        /// Shuts the queue down (Python 3.13 `shutdown(immediate)`).
        fn shutdown(&self, immediate: bool) -> Result<()>;
    }
}

impl<T> Queue<T>
where
    T: Serialize + DeserializeOwned,
{
    /// Takes the item at the head on a lease, waiting for one (agora's `get_leased`).
    ///
    /// The blocking form of [`Queue::get_leased`](crate::Queue::get_leased).
    pub fn get_leased(&self, lease: Duration) -> Result<Leased<T>> {
        self.rt.block_on(self.inner.get_leased(lease)).map(|inner| Leased { inner, rt: self.rt.clone() })
    }

    /// Takes the item at the head on a lease, waiting at most `timeout`;
    /// [`Error::Empty`] if none came.
    ///
    /// The blocking form of
    /// [`Queue::get_leased_timeout`](crate::Queue::get_leased_timeout).
    pub fn get_leased_timeout(&self, lease: Duration, timeout: Duration) -> Result<Leased<T>> {
        self.rt
            .block_on(self.inner.get_leased_timeout(lease, timeout))
            .map(|inner| Leased { inner, rt: self.rt.clone() })
    }

    /// Takes the item at the head on a lease if there is one now, else `None`.
    ///
    /// The blocking form of [`Queue::try_get_leased`](crate::Queue::try_get_leased).
    pub fn try_get_leased(&self, lease: Duration) -> Result<Option<Leased<T>>> {
        let leased = self.rt.block_on(self.inner.try_get_leased(lease))?;
        Ok(leased.map(|inner| Leased { inner, rt: self.rt.clone() }))
    }

    /// The items as an iterator of `Result<T>`, each taken with [`Queue::get`]; it
    /// ends when the queue is shut down and empty.
    ///
    /// The blocking form of [`Queue::stream`](crate::Queue::stream).
    pub fn iter(&self) -> Iter<T> {
        Iter { queue: self.clone(), done: false }
    }
}

/// The items of a blocking [`Queue`], made by [`Queue::iter`]: each `next` waits for
/// an item; the iteration ends once the queue is shut down and empty.
pub struct Iter<T> {
    queue: Queue<T>,
    done: bool,
}

impl<T> std::fmt::Debug for Iter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Iter({:?}, done: {})", self.queue, self.done)
    }
}

impl<T> Iterator for Iter<T>
where
    T: Serialize + DeserializeOwned,
{
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        match self.queue.get() {
            Err(Error::QueueShutDown) => {
                self.done = true;
                None
            }
            other => Some(other),
        }
    }
}

impl<T> std::iter::FusedIterator for Iter<T> where T: Serialize + DeserializeOwned {}

/// A shared queue whose consumers report when they finish each item, for synchronous
/// code: the blocking form of [`crate::JoinableQueue`]. Everything a blocking
/// [`Queue`] does (it derefs to one), plus [`JoinableQueue::task_done`] and
/// [`JoinableQueue::join`]. Cheap to clone, `Send + Sync`.
pub struct JoinableQueue<T> {
    queue: Queue<T>,
    inner: crate::JoinableQueue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone(), inner: self.inner.clone() }
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.inner, f)
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> Blocking for JoinableQueue<T> {
    type Async = crate::JoinableQueue<T>;
    fn new(inner: Self::Async, rt: Arc<Runtime>) -> Self {
        let queue = Queue { inner: std::ops::Deref::deref(&inner).clone(), rt };
        JoinableQueue { queue, inner }
    }
}

impl<T> JoinableQueue<T>
where
    T: Serialize + DeserializeOwned,
{
    /// Marks one task finished (Python `task_done()`); [`Error::InvalidValue`]
    /// (`task_done() called too many times`) if none is unfinished.
    ///
    /// The blocking form of [`JoinableQueue::task_done`](crate::JoinableQueue::task_done).
    pub fn task_done(&self) -> Result<()> {
        self.queue.rt.block_on(self.inner.task_done())
    }

    /// Waits until every item put has been finished by `task_done` or an ack (Python
    /// `join()`).
    ///
    /// The blocking form of [`JoinableQueue::join`](crate::JoinableQueue::join).
    pub fn join(&self) -> Result<()> {
        self.queue.rt.block_on(self.inner.join())
    }

    /// The plain [`Queue`] view of this queue (the same object).
    pub fn as_queue(&self) -> &Queue<T> {
        &self.queue
    }
}

/// An item taken on lease, for synchronous code: the blocking form of
/// [`crate::Leased`]. Dropping it unsettled nacks it (without waiting).
pub struct Leased<T> {
    inner: crate::Leased<T>,
    rt: Arc<Runtime>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Leased<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.inner, f)
    }
}

impl<T> Leased<T> {
    /// The item ([`crate::Leased::item`]).
    pub fn item(&self) -> &T {
        self.inner.item()
    }

    /// The lease's receipt ([`crate::Leased::receipt`]).
    pub fn receipt(&self) -> u64 {
        self.inner.receipt()
    }

    /// True while the lease is still held as far as this client can tell
    /// ([`crate::Leased::is_valid`]): false once the session that took it has ended.
    pub fn is_valid(&self) -> bool {
        self.inner.is_valid()
    }

    /// Finishes the item; [`Error::InvalidValue`] if the lease is no longer held,
    /// [`Error::SessionExpired`] if the session that took it has ended. The blocking
    /// form of [`crate::Leased::ack`].
    pub fn ack(self) -> Result<()> {
        let Leased { inner, rt } = self;
        rt.block_on(inner.ack())
    }

    /// Gives the item back to the head of the queue. The blocking form of
    /// [`crate::Leased::nack`].
    pub fn nack(self) -> Result<()> {
        let Leased { inner, rt } = self;
        rt.block_on(inner.nack())
    }

    /// Restarts the lease's clock. The blocking form of [`crate::Leased::renew`].
    pub fn renew(&self, lease: Duration) -> Result<()> {
        self.rt.block_on(self.inner.renew(lease))
    }

    /// Gives the item back once `delay` has passed. The blocking form of
    /// [`crate::Leased::nack_after`].
    pub fn nack_after(self, delay: Duration) -> Result<()> {
        let Leased { inner, rt } = self;
        rt.block_on(inner.nack_after(delay))
    }

    /// How many times this item has been delivered. The blocking form of
    /// [`crate::Leased::deliveries`].
    pub fn deliveries(&self) -> Result<u32> {
        self.rt.block_on(self.inner.deliveries())
    }
}

/// Opening queues.
impl Manager {
    /// The queue named `name`, created with `maxsize` (0: unbounded) if it does not
    /// exist. The blocking form of [`crate::Manager::queue`].
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: &str, maxsize: usize) -> Result<Queue<T>> {
        self.rt.block_on(self.inner.queue(name, maxsize)).map(|q| self.wrap(q))
    }

    /// The queue named `name`, created with `options` if it does not exist. The
    /// blocking form of [`crate::Manager::queue_with`].
    pub fn queue_with<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        options: &crate::QueueOptions,
    ) -> Result<Queue<T>> {
        self.rt.block_on(self.inner.queue_with(name, options)).map(|q| self.wrap(q))
    }

    /// A new anonymous queue (Python `manager.Queue(maxsize)`). The blocking form of
    /// [`crate::Manager::new_queue`].
    pub fn new_queue<T: Serialize + DeserializeOwned>(&self, maxsize: usize) -> Result<Queue<T>> {
        self.rt.block_on(self.inner.new_queue(maxsize)).map(|q| self.wrap(q))
    }

    /// The joinable queue named `name`, created with `maxsize` (0: unbounded) if it
    /// does not exist. The blocking form of [`crate::Manager::joinable_queue`].
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<JoinableQueue<T>> {
        self.rt.block_on(self.inner.joinable_queue(name, maxsize)).map(|q| self.wrap(q))
    }

    /// A new anonymous joinable queue (Python `manager.JoinableQueue(maxsize)`). The
    /// blocking form of [`crate::Manager::new_joinable_queue`].
    pub fn new_joinable_queue<T: Serialize + DeserializeOwned>(&self, maxsize: usize) -> Result<JoinableQueue<T>> {
        self.rt.block_on(self.inner.new_joinable_queue(maxsize)).map(|q| self.wrap(q))
    }
}
