//! [`Queue`] and [`JoinableQueue`]: shared FIFO queues (Python `queue.Queue` through a
//! manager), with [`Leased`] items for reliable consumption and an [`Items`] stream;
//! plus the [`Manager`] methods that open them.
//!
//! # No item is lost
//!
//! Every call that takes an item out (`get`, `get_timeout`, `try_get`, `get_leased`…)
//! is cancellation safe: if its future is dropped (a `tokio::time::timeout`, a
//! `select!`, a dropped task) before the item reached it, the server cancels the call
//! and the item goes to the next getter or stays at the head of the queue; if the
//! item was already on its way, the client puts it back at the head (`unget`), or
//! nacks a lease. A `put` whose future is dropped while it waits for room either went
//! in before the cancellation reached the server or never goes in: it is never half
//! done. An item that does not convert into `T` is put back too, and the call fails
//! with [`Error::TypeMismatch`].
//!
//! [`Queue::stream`] gives the items as a `futures_core::Stream` (the one trait every
//! stream combinator library shares, a dependency with no dependencies of its own);
//! [`Items::next`] reads it without any `StreamExt`.
//!
//! What is not covered is a consumer that dies right after a plain `get` returned:
//! the item is gone with it. For work that must survive consumers crashing, use
//! [`Queue::get_leased`]: the item stays on lease until [`Leased::ack`], and comes
//! back to the head of the queue if the lease runs out or the consumer's session ends
//! (crash, SIGKILL, heartbeat timeout).
//!
//! # Delivery counts and dead letters
//!
//! The server counts how many times each item was delivered on lease
//! ([`Leased::deliveries`]). A queue created with [`QueueOptions::dead_letter`] moves
//! an item that was delivered that many times and comes back (nacked, its lease run
//! out, its consumer gone) to the named dead letter queue instead of delivering it
//! again, so one poison item cannot stall its consumers forever; nothing is dropped.
//! [`Leased::nack_after`] gives an item back only after a delay (a retry backoff).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use agora_proto::methods;
use agora_proto::native::Kind;
use agora_proto::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, encode, Handle, Wait};
use crate::error::{Error, Result};
use crate::Manager;

/// Longer timeouts than this (CPython's `threading.TIMEOUT_MAX` on Linux) mean forever.
const TIMEOUT_MAX: f64 = 9_223_372_036.0;

/// A duration as the seconds Python expects; `None` (forever) when too long to matter.
fn seconds(duration: Duration) -> Value {
    let secs = duration.as_secs_f64();
    if secs <= TIMEOUT_MAX {
        Value::Float(secs)
    } else {
        Value::None
    }
}

/// If a plain get's item arrives after its caller stopped waiting: put it back.
fn give_back_item(item: Value) -> Option<(&'static str, Vec<Value>)> {
    Some((methods::queue::UNGET.name, vec![item]))
}

/// If a lease arrives after its caller stopped waiting: nack it.
fn give_back_lease(pair: Value) -> Option<(&'static str, Vec<Value>)> {
    match pair {
        Value::Tuple(mut pair) if pair.len() == 2 => Some((methods::queue::NACK.name, vec![pair.swap_remove(0)])),
        _ => None,
    }
}

/// A proxy for a shared FIFO queue of `T` (Python `manager.Queue()`): CPython's
/// `queue.Queue` semantics, with a `maxsize` (0 for unbounded) and `shutdown`.
///
/// Cheap to clone; clones share one handle. Any number of tasks (and processes) can
/// put and get at once; blocked getters and putters are served in arrival order.
///
/// ```no_run
/// # async fn demo() -> agora_client::Result<()> {
/// use std::time::Duration;
/// let manager = agora_client::Manager::connect("127.0.0.1:50000", b"secret").await?;
/// let jobs = manager.queue::<String>("jobs", 100).await?;
/// jobs.put(&"build".to_string()).await?; // waits while 100 items are queued
/// let job = jobs.get_timeout(Duration::from_secs(5)).await?; // Err(Error::Empty) after 5 s
///
/// // Reliable: the item comes back if this process dies before the ack.
/// let leased = jobs.get_leased(Duration::from_secs(30)).await?;
/// println!("working on {}", leased.item());
/// leased.ack().await?;
/// # Ok(()) }
/// ```
pub struct Queue<T> {
    handle: Arc<Handle>,
    _types: PhantomData<fn() -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { handle: self.handle.clone(), _types: PhantomData }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queue({:?})", self.handle)
    }
}

impl<T> Queue<T>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Queue { handle, _types: PhantomData }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// Appends `item`, waiting while the queue is full (Python `put(item)`).
    /// [`Error::QueueShutDown`] once the queue is shut down, also for a put that was
    /// waiting then (its item is not inserted).
    pub async fn put(&self, item: &T) -> Result<()> {
        self.handle.call(methods::queue::PUT.name, &(item,)).await.map(drop)
    }

    /// Appends `item`, waiting at most `timeout` for room (Python `put(item,
    /// timeout=t)`); [`Error::Full`] if there was none (the item is not inserted).
    pub async fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        self.handle
            .call(methods::queue::PUT.name, &[encode(item)?, Value::Bool(true), seconds(timeout)])
            .await
            .map(drop)
    }

    /// Appends `item` if there is room now (Python `put_nowait`); [`Error::Full`] if
    /// not.
    pub async fn try_put(&self, item: &T) -> Result<()> {
        self.handle.call(methods::queue::PUT_NOWAIT.name, &(item,)).await.map(drop)
    }

    /// Removes and returns the item at the head, waiting for one (Python `get()`).
    /// [`Error::QueueShutDown`] once the queue is shut down and empty.
    pub async fn get(&self) -> Result<T> {
        self.take(methods::queue::GET.name, vec![]).await
    }

    /// Removes and returns the item at the head, waiting at most `timeout` (Python
    /// `get(timeout=t)`; the server keeps the time); [`Error::Empty`] if none came.
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.take(methods::queue::GET.name, vec![Value::Bool(true), seconds(timeout)]).await
    }

    /// Removes and returns the item at the head if there is one now (Python
    /// `get_nowait`), else `None`.
    pub async fn try_get(&self) -> Result<Option<T>> {
        match self.take(methods::queue::GET_NOWAIT.name, vec![]).await {
            Ok(item) => Ok(Some(item)),
            Err(Error::Empty) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes an item with a get-type method; gives it back if it cannot be used.
    async fn take(&self, method: &str, args: Vec<Value>) -> Result<T> {
        let wait = if method == methods::queue::GET_NOWAIT.name { None } else { Wait::of_blocking(&args) };
        let (item, generation) = self.handle.call_handing_over(method, args, give_back_item, wait).await?;
        // Keep a copy until it converts, so a wrong type does not lose the item.
        match decode(item.clone()) {
            Ok(item) => Ok(item),
            Err(e) => {
                self.handle.send_pinned(generation, methods::queue::UNGET.name, vec![item]);
                Err(put_back(e))
            }
        }
    }

    /// Takes the item at the head on a lease of `lease`, waiting for one (agora's
    /// `get_leased`; no Python equivalent). The item stays out of the queue until
    /// [`Leased::ack`]; it goes back to the head of the queue on [`Leased::nack`], when
    /// the [`Leased`] is dropped unsettled, when the lease runs out (then acking it
    /// fails), or when this client's session ends. `Duration::MAX` means no time
    /// limit (only an ack, a nack or the end of the session ends it).
    /// [`Error::QueueShutDown`] once the queue is shut down and empty.
    pub async fn get_leased(&self, lease: Duration) -> Result<Leased<T>> {
        self.take_leased(vec![Value::Bool(true), Value::None, lease_value(lease)]).await
    }

    /// [`Queue::get_leased`], waiting at most `timeout` for an item; [`Error::Empty`]
    /// if none came.
    pub async fn get_leased_timeout(&self, lease: Duration, timeout: Duration) -> Result<Leased<T>> {
        self.take_leased(vec![Value::Bool(true), seconds(timeout), lease_value(lease)]).await
    }

    /// [`Queue::get_leased`] if an item is there now, else `None`.
    pub async fn try_get_leased(&self, lease: Duration) -> Result<Option<Leased<T>>> {
        match self.take_leased(vec![Value::Bool(false), Value::None, lease_value(lease)]).await {
            Ok(leased) => Ok(Some(leased)),
            Err(Error::Empty) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn take_leased(&self, args: Vec<Value>) -> Result<Leased<T>> {
        let wait = Wait::of_blocking(&args);
        let (pair, generation) =
            self.handle.call_handing_over(methods::queue::GET_LEASED.name, args, give_back_lease, wait).await?;
        let (receipt, item) = match pair {
            Value::Tuple(pair) if pair.len() == 2 => {
                let [receipt, item] = <[Value; 2]>::try_from(pair).expect("two");
                (receipt, item)
            }
            other => return Err(Error::Protocol(format!("get_leased answered {other:?}, not (receipt, item)"))),
        };
        let Some(number) = receipt.as_index().and_then(|r| u64::try_from(r).ok()) else {
            return Err(Error::Protocol(format!("get_leased answered a receipt {receipt:?}, not an int")));
        };
        match decode(item) {
            Ok(item) => Ok(Leased { item, receipt: number, handle: Some(self.handle.clone()), generation }),
            Err(e) => {
                self.handle.send_pinned(generation, methods::queue::NACK.name, vec![receipt]);
                Err(put_back(e))
            }
        }
    }

    /// Number of items in the queue, not counting leased ones (Python `qsize()`).
    pub async fn len(&self) -> Result<usize> {
        self.handle.call_as(methods::queue::QSIZE.name, &[]).await
    }

    /// True when no item is in the queue (Python `empty()`).
    pub async fn is_empty(&self) -> Result<bool> {
        self.handle.call_as(methods::queue::EMPTY.name, &[]).await
    }

    /// True when the queue is bounded and holds `maxsize` items or more (Python
    /// `full()`).
    pub async fn is_full(&self) -> Result<bool> {
        self.handle.call_as(methods::queue::FULL.name, &[]).await
    }

    /// Number of items out on lease (agora's `leased`; no Python equivalent).
    pub async fn leased_len(&self) -> Result<usize> {
        self.handle.call_as(methods::queue::LEASED.name, &[]).await
    }

    /// Number of nacked items waiting out their delay ([`Leased::nack_after`]) before
    /// they go back to the queue (agora's `delayed`).
    pub async fn delayed_len(&self) -> Result<usize> {
        self.handle.call_as(methods::queue::DELAYED.name, &[]).await
    }

    /// Shuts the queue down (Python 3.13 `shutdown(immediate)`): puts fail with
    /// [`Error::QueueShutDown`] from now on, and so do gets once the queue is empty;
    /// blocked getters and putters get it at once. `immediate` also drops every queued
    /// item, counting each as done for [`JoinableQueue::join`].
    pub async fn shutdown(&self, immediate: bool) -> Result<()> {
        self.handle.call(methods::queue::SHUTDOWN.name, &[Value::Bool(immediate)]).await.map(drop)
    }

    /// The items as an async [`Stream`](futures_core::Stream), each taken with
    /// [`Queue::get`]; the stream ends when the queue is shut down and empty. Dropping
    /// the stream while it waits loses nothing.
    pub fn stream(&self) -> Items<T>
    where
        T: Send + 'static,
    {
        Items { queue: self.clone(), next: None, done: false }
    }
}

/// A conversion error for an item that went back to the queue.
fn put_back(e: Error) -> Error {
    match e {
        Error::TypeMismatch(m) => Error::TypeMismatch(format!("{m} (the item went back to the head of the queue)")),
        other => other,
    }
}

/// A lease length as seconds; `None` (no time limit) when too long to matter.
fn lease_value(lease: Duration) -> Value {
    seconds(lease)
}

/// A shared queue whose consumers report when they finish each item (Python
/// `manager.JoinableQueue()`): everything a [`Queue`] does (it derefs to one), plus
/// [`JoinableQueue::task_done`] and [`JoinableQueue::join`].
///
/// Every put adds an unfinished task; `task_done` (or [`Leased::ack`]) finishes one;
/// `join` waits until none is unfinished. A leased item is unfinished until acked;
/// do not call `task_done` for it as well.
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone() }
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinableQueue({:?})", self.queue.handle)
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> JoinableQueue<T>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        JoinableQueue { queue: Queue::from_handle(handle) }
    }

    /// Marks one task finished (Python `task_done()`); [`Error::InvalidValue`]
    /// (`task_done() called too many times`) if none is unfinished.
    pub async fn task_done(&self) -> Result<()> {
        self.queue.handle.call(methods::queue::TASK_DONE.name, &[]).await.map(drop)
    }

    /// Waits until every item put has been finished by `task_done` or an ack (Python
    /// `join()`). An immediate shutdown counts the items it drops as finished.
    pub async fn join(&self) -> Result<()> {
        self.queue.handle.call_waiting(methods::queue::JOIN.name, vec![], Wait::forever()).await.map(drop)
    }

    /// The plain [`Queue`] view of this queue (the same object).
    pub fn as_queue(&self) -> &Queue<T> {
        &self.queue
    }
}

/// An item taken on lease by [`Queue::get_leased`]: finish it with [`Leased::ack`],
/// or give it back with [`Leased::nack`]. Dropping it unsettled nacks it (without
/// waiting), so an error path never strands an item until its lease runs out.
///
/// A lease belongs to the server session that took it. If the manager loses its
/// connection (and reconnects: a new session), the server puts the item back at the
/// head of the queue, to be delivered again: [`Leased::is_valid`] is false from then
/// on, acking, nacking or renewing fails with [`Error::SessionExpired`] without
/// sending anything, and dropping it sends nothing.
pub struct Leased<T> {
    item: T,
    receipt: u64,
    /// `None` once settled.
    handle: Option<Arc<Handle>>,
    /// The generation of the connection whose session holds the lease.
    generation: u64,
}

/// What a lease is called in errors.
const LEASE: &str = "this lease";

impl<T: std::fmt::Debug> std::fmt::Debug for Leased<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leased").field("receipt", &self.receipt).field("item", &self.item).finish()
    }
}

impl<T> Leased<T> {
    /// The item.
    pub fn item(&self) -> &T {
        &self.item
    }

    /// The lease's receipt: unique per queue, never reused. An item delivered again
    /// (after a nack, an expiry or a crash) comes with a new receipt.
    pub fn receipt(&self) -> u64 {
        self.receipt
    }

    /// True while the lease is still held as far as this client can tell: unsettled,
    /// and the session that took it still connected. It may have run out on the
    /// server all the same (then acking it fails).
    pub fn is_valid(&self) -> bool {
        self.handle.as_ref().is_some_and(|handle| handle.is_live(self.generation))
    }

    fn settle(&mut self) -> Arc<Handle> {
        self.handle.take().expect("a Leased is settled only once, by value")
    }

    /// Finishes the item (agora's `ack`); for a [`JoinableQueue`] this counts as
    /// `task_done`. [`Error::InvalidValue`] if the lease is no longer held: it ran out
    /// (or this client's session ended) and the item went back to the queue, to be
    /// delivered again — the work done on it is not acknowledged.
    /// [`Error::SessionExpired`] if the session that took it has ended (the
    /// connection was lost): the item went back then, and nothing is sent.
    pub async fn ack(mut self) -> Result<()> {
        let handle = self.settle();
        let receipt = vec![Value::Int(self.receipt as i64)];
        handle.call_pinned(self.generation, LEASE, methods::queue::ACK.name, receipt, None).await.map(drop)
    }

    /// Gives the item back to the head of the queue (agora's `nack`).
    /// [`Error::InvalidValue`] if the lease is no longer held, [`Error::SessionExpired`]
    /// if the session that took it has ended (the item went back then).
    pub async fn nack(mut self) -> Result<()> {
        let handle = self.settle();
        let receipt = vec![Value::Int(self.receipt as i64)];
        handle.call_pinned(self.generation, LEASE, methods::queue::NACK.name, receipt, None).await.map(drop)
    }

    /// Gives the item back to the head of the queue once `delay` has passed (agora's
    /// `nack(receipt, delay)`): meanwhile it is neither in the queue nor on lease, but
    /// still unfinished for [`JoinableQueue::join`]. An item that has reached its
    /// queue's `max_deliveries` goes to the dead letter queue at once instead. Errors
    /// as [`Leased::nack`].
    pub async fn nack_after(mut self, delay: Duration) -> Result<()> {
        let handle = self.settle();
        let args = vec![Value::Int(self.receipt as i64), Value::Float(delay.as_secs_f64())];
        handle.call_pinned(self.generation, LEASE, methods::queue::NACK.name, args, None).await.map(drop)
    }

    /// How many times this item has been delivered, this delivery included (agora's
    /// `deliveries`): 1 the first time, one more after each nack, expired lease or
    /// crashed consumer. Errors as [`Leased::renew`].
    pub async fn deliveries(&self) -> Result<u32> {
        let handle = self.handle.as_ref().expect("unsettled");
        let args = vec![Value::Int(self.receipt as i64)];
        let value = handle.call_pinned(self.generation, LEASE, methods::queue::DELIVERIES.name, args, None).await?;
        super::decode(value)
    }

    /// Restarts the lease's clock: it now runs out `lease` from now (agora's `renew`;
    /// `Duration::MAX`: never). [`Error::InvalidValue`] if it is no longer held,
    /// [`Error::SessionExpired`] if the session that took it has ended.
    pub async fn renew(&self, lease: Duration) -> Result<()> {
        let handle = self.handle.as_ref().expect("unsettled");
        let args = vec![Value::Int(self.receipt as i64), lease_value(lease)];
        handle.call_pinned(self.generation, LEASE, methods::queue::RENEW.name, args, None).await.map(drop)
    }
}

impl<T> Drop for Leased<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.send_pinned(self.generation, methods::queue::NACK.name, vec![Value::Int(self.receipt as i64)]);
        }
    }
}

/// The items of a [`Queue`] as a [`Stream`](futures_core::Stream) of `Result<T>`, made
/// by [`Queue::stream`]. It ends (yields `None`) once the queue is shut down and
/// empty; other errors are yielded as they come.
///
/// Use it with any `StreamExt` (`futures`, `tokio-stream`), or without one through
/// [`Items::next`]. Dropping it while a get is pending loses no item.
pub struct Items<T> {
    queue: Queue<T>,
    next: Option<Pin<Box<dyn Future<Output = Result<T>> + Send>>>,
    done: bool,
}

impl<T> std::fmt::Debug for Items<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Items({:?}, done: {})", self.queue.handle, self.done)
    }
}

impl<T> Items<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// The next item, or `None` once the queue is shut down and empty.
    pub async fn next(&mut self) -> Option<Result<T>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let queue = &self.queue;
        let next = self.next.get_or_insert_with(|| {
            let queue = queue.clone();
            Box::pin(async move { queue.get().await })
        });
        let result = std::task::ready!(next.as_mut().poll(cx));
        self.next = None;
        match result {
            Err(Error::QueueShutDown) => {
                self.done = true;
                Poll::Ready(None)
            }
            other => Poll::Ready(Some(other)),
        }
    }
}

impl<T> futures_core::Stream for Items<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        self.get_mut().poll_item(cx)
    }
}

impl<T> futures_core::FusedStream for Items<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn is_terminated(&self) -> bool {
        self.done
    }
}

/// Opening queues.
impl Manager {
    /// The queue named `name`, created with `maxsize` (0: unbounded) if it does not
    /// exist (an existing queue keeps its own maxsize). [`Error::WrongKind`] if the
    /// name holds something else, a [`JoinableQueue`] included.
    pub async fn queue<T: Serialize + DeserializeOwned>(&self, name: &str, maxsize: usize) -> Result<Queue<T>> {
        Ok(Queue::from_handle(self.open(Kind::Queue, Some(name), maxsize_args(maxsize)).await?))
    }

    /// A new anonymous queue (Python `manager.Queue(maxsize)`; 0: unbounded).
    pub async fn new_queue<T: Serialize + DeserializeOwned>(&self, maxsize: usize) -> Result<Queue<T>> {
        Ok(Queue::from_handle(self.open(Kind::Queue, None, maxsize_args(maxsize)).await?))
    }

    /// The joinable queue named `name`, created with `maxsize` (0: unbounded) if it
    /// does not exist. [`Error::WrongKind`] if the name holds something else, a plain
    /// [`Queue`] included.
    pub async fn joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue::from_handle(self.open(Kind::JoinableQueue, Some(name), maxsize_args(maxsize)).await?))
    }

    /// The queue named `name`, created with `options` if it does not exist (an
    /// existing queue keeps its own settings).
    pub async fn queue_with<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        options: &QueueOptions,
    ) -> Result<Queue<T>> {
        Ok(Queue::from_handle(self.open(Kind::Queue, Some(name), options.args()).await?))
    }

    /// A new anonymous queue created with `options`.
    pub async fn new_queue_with<T: Serialize + DeserializeOwned>(&self, options: &QueueOptions) -> Result<Queue<T>> {
        Ok(Queue::from_handle(self.open(Kind::Queue, None, options.args()).await?))
    }

    /// The joinable queue named `name`, created with `options` if it does not exist.
    pub async fn joinable_queue_with<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        options: &QueueOptions,
    ) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue::from_handle(self.open(Kind::JoinableQueue, Some(name), options.args()).await?))
    }

    /// A new anonymous joinable queue (Python `manager.JoinableQueue(maxsize)`; 0:
    /// unbounded).
    pub async fn new_joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue::from_handle(self.open(Kind::JoinableQueue, None, maxsize_args(maxsize)).await?))
    }
}

fn maxsize_args(maxsize: usize) -> Vec<Value> {
    vec![Value::Int(i64::try_from(maxsize).unwrap_or(0))]
}

/// How a queue is created ([`Manager::queue_with`]): its `maxsize` and where items that
/// keep failing go.
///
/// ```no_run
/// # async fn demo() -> agora_client::Result<()> {
/// use agora_client::QueueOptions;
/// let manager = agora_client::Manager::connect("127.0.0.1:50000", b"secret").await?;
/// // An item delivered 5 times that comes back again moves to "jobs.dead".
/// let options = QueueOptions::new().maxsize(1000).dead_letter(5, "jobs.dead");
/// let jobs = manager.queue_with::<String>("jobs", &options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOptions {
    maxsize: usize,
    dead_letter: Option<(u32, String)>,
}

impl QueueOptions {
    /// Unbounded, no dead letter queue.
    pub fn new() -> QueueOptions {
        QueueOptions::default()
    }

    /// At most `maxsize` items (0: unbounded).
    pub fn maxsize(mut self, maxsize: usize) -> QueueOptions {
        self.maxsize = maxsize;
        self
    }

    /// After `max_deliveries` deliveries (at least 1), an item that comes back moves
    /// to the queue named `queue` (created as a plain queue if there is none) instead
    /// of being delivered again (Python: `max_deliveries=…, dead_letter=…`).
    pub fn dead_letter(mut self, max_deliveries: u32, queue: &str) -> QueueOptions {
        self.dead_letter = Some((max_deliveries, queue.to_owned()));
        self
    }

    fn args(&self) -> Vec<Value> {
        let mut args = maxsize_args(self.maxsize);
        if let Some((max, queue)) = &self.dead_letter {
            args.push(Value::Int(i64::from(*max)));
            args.push(Value::Str(queue.as_str().into()));
        }
        args
    }
}
